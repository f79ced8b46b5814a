"""outro_sweep: ablation sweeps of attention-sink interventions on language and video LLMs."""

# The version of what a cell predicts, part of every cell identity (outro_sweep.cell.identity).
# Bump it in the same commit as any change that can change a cell's predictions or metrics
# (prompt text, decoding, scoring, an intervention's arithmetic, a loader's preprocessing), so
# finished cells are recomputed instead of reused. tests/test_identity.py guards it with a
# golden prediction digest on the embedded SmolLM2 model.
RESULTS_VERSION = 1
