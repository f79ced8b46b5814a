"""Sweep report: "is the gain real?" — paired significance of every cell with an intervention on
against its baseline, heatmaps over each intervention's sweep axes (outro.layer x outro.alpha
for OutRo), per-category and sink diagnostics, the verdict lines, and a W&B report run.

    python -m outro_sweep.report outputs/multirun/<date>/<time> [more sweeps] [--holm]
    python -m outro_sweep.report --cells outputs/cells/<id> ... --out <folder>

Modules, one job each: ``collect`` (find cells and their state), ``settings`` (labels, grid
axes, baseline identity), ``baselines`` (match each cell to its baseline), ``paired``
(statistics), ``analysis`` (the numbers per cell), ``tables`` / ``categories`` (markdown and
CSV), ``plots`` (PNG figures), ``verdict`` (one line per comparison), ``wandb_report`` (the
W&B run), ``build`` (``write_report``).
"""
