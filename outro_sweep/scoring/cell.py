"""Scoring a finished cell: raw prediction records in, scored predictions.jsonl and
metrics.json out. The one step both a cell (after its last batch) and ``outro_sweep.rescore``
(later, without the cell's model) run, so a cell's numbers always come from one scorer over
all its records, whatever attempts and processes produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from outro_sweep.files.atomic import write_json_atomic, write_lines_atomic
from outro_sweep.files.masking import mask
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.predict.shards import ShardSet, diagnostic_sums, dumps, generate_timing, timing
from outro_sweep.predict.speed import speed_metrics
from outro_sweep.scoring.answers import Scorer
from outro_sweep.scoring.circular import circular_summary, is_circular, plain_records
from outro_sweep.scoring.judge import judge_summary
from outro_sweep.scoring.metrics import summarise


def score_cell(shard_set: ShardSet, config: Mapping, cell_dir: Path, judge=None,
               facts: Mapping | None = None) -> tuple[dict, list[dict]]:
    """Score every record of ``shard_set`` (one per prompt asked, complete), summarise, and write
    ``<cell_dir>/predictions.jsonl`` then ``<cell_dir>/metrics.json`` (each atomically);
    returns (metrics, scored records).

    ``config``: the cell's resolved config (its ``benchmark`` node decides the scorer, its
    intervention nodes the diagnostics summary). ``judge``: an ``LLMJudge`` that grades the
    open answers (loads its own model), or None. ``facts``: what the records cannot tell,
    e.g. ``skipped_missing``, copied into the metrics.
    """
    scorer = Scorer.for_benchmark(config["benchmark"])
    records = [{**record, **scorer.fields(record)} for record in shard_set.records]
    if judge is not None:
        records = judge.judge(records)
    seconds, timed = timing(shard_set.shards)
    stack = InterventionStack.from_config(config)
    diagnostics = stack.summarise([r.get("diagnostics") for r in records], diagnostic_sums(shard_set.shards))
    # Plain numbers over each question as the benchmark orders its options (rotation 0); a
    # circular cell (benchmark.circular=true) adds its circular block over every rotation.
    metrics = {**summarise(plain_records(records), seconds, timed, diagnostics), **(facts or {})}
    speed = speed_metrics(*generate_timing(shard_set.shards))
    if speed is not None:  # scoring=generate: decode and prefill tokens/s, summed over every shard
        metrics["speed"] = speed
    if is_circular(records):
        metrics["circular"] = circular_summary(records)
    if judge is not None:
        metrics.update(judge_summary(records), judge=judge.identity())
    cell_dir = Path(cell_dir)
    write_lines_atomic(cell_dir / "predictions.jsonl", [dumps(mask(record)) for record in records])
    write_json_atomic(cell_dir / "metrics.json", metrics)  # written only once every sample is in
    return metrics, records
