"""``benchmark.circular=true`` end to end: the real SmolLM2-135M through ``python -m outro_sweep``
(4 built-in questions x 4 rotations, scored by logits), one OutRo cell and its baseline, the
sweep's own report; then the OutRo cell cut back to some of its shards, as a killed cell leaves
it, and resumed.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.cell_runs import run_cli

pytestmark = pytest.mark.slow
CELL = ["benchmark.circular=true", "benchmark.limit=4", "benchmark.scoring=logits", "predict.batch_size=2",
        "trainer.enable_progress_bar=false", "outro.alpha=0.3"]
KEYS = ("index", "id", "rotation", "question_id", "prompt_hash", "target", "prediction", "correct")


def predictions(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("circular")
    result = run_cli(["-m", *CELL, "logger.mode=offline"], out, out / "sweep")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    cells = {}
    for cell in (out / "cells").iterdir():
        enabled = "enabled: true" in (cell / "config.yaml").read_text()
        cells["outro" if enabled else "baseline"] = cell
    assert len(cells) == 2
    return out, cells, result


def test_every_question_is_asked_once_per_rotation_and_paired(sweep):
    _, cells, result = sweep
    by_cell = {name: predictions(cell) for name, cell in cells.items()}
    for name, records in by_cell.items():
        assert [r["index"] for r in records] == list(range(16)), name
        assert Counter(r["question_id"] for r in records) == Counter({qid: 4 for qid in {r["question_id"] for r in records}})
        assert [r["rotation"] for r in records] == [0, 1, 2, 3] * 4 and len({r["id"] for r in records}) == 16
        metrics = json.loads((cells[name] / "metrics.json").read_text())
        plain = [r for r in records if r["rotation"] == 0]
        outcome = {q: all(r["correct"] for r in records if r["question_id"] == q) for q in {r["question_id"] for r in plain}}
        assert metrics["n"] == 4 and metrics["correct"] == sum(r["correct"] for r in plain)
        assert metrics["circular"]["n"] == 4 and metrics["circular"]["rotations"] == 16
        assert metrics["circular"]["correct"] == sum(outcome.values())
    # Both cells asked the very same prompts: each record pairs with the baseline's on id and hash.
    assert [(r["id"], r["prompt_hash"]) for r in by_cell["outro"]] == [(r["id"], r["prompt_hash"]) for r in by_cell["baseline"]]
    assert "circular accuracy" in result.stdout


def test_the_report_shows_both_accuracies_and_the_paired_circular_difference(sweep):
    out, cells, _ = sweep
    report = out / "sweep" / "report"
    table = (report / "table.md").read_text()
    assert "circular % [95% CI]" in table and "circular Δ pp [95% CI]" in table
    with open(report / "table.csv", newline="") as handle:
        rows = {row["identity"]: row for row in csv.DictReader(handle)}
    outro, baseline = rows[cells["outro"].name], rows[cells["baseline"].name]
    base_records, outro_records = predictions(cells["baseline"]), predictions(cells["outro"])

    def circular(records):
        return {q: all(r["correct"] for r in records if r["question_id"] == q) for q in {r["question_id"] for r in records}}

    base_c, outro_c = circular(base_records), circular(outro_records)
    assert float(outro["circular_accuracy"]) == sum(outro_c.values()) / 4
    assert float(baseline["circular_accuracy"]) == sum(base_c.values()) / 4
    assert int(outro["circular_paired_n"]) == 4 and int(outro["paired_n"]) == 4
    b = sum(base_c[q] and not outro_c[q] for q in base_c)
    c = sum(outro_c[q] and not base_c[q] for q in base_c)
    assert (int(outro["circular_b_baseline_only"]), int(outro["circular_c_intervention_only"])) == (b, c)
    assert float(outro["circular_diff"]) == pytest.approx((c - b) / 4)
    assert float(outro["accuracy"]) == sum(r["correct"] for r in outro_records if r["rotation"] == 0) / 4
    line = next(line for line in table.splitlines() if cells["outro"].name in line)
    assert f"{(c - b) * 25:+.1f} [" in line  # the circular Δ in percentage points, in the cell's row


def test_a_killed_circular_cell_resumes_without_duplicating_or_dropping(sweep, tmp_path):
    _, cells, _ = sweep
    source = cells["outro"]
    target = tmp_path / "cells" / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("LOCK", "DONE", "predictions.jsonl", "metrics.json"))
    shards = sorted(p for p in (target / "shards").iterdir() if not p.name.startswith("."))
    assert len(shards) == 8  # 16 prompts, 2 per batch
    for shard in shards[5:]:
        shard.unlink()
    kept = sum('"_shard"' not in line for p in shards[:5] for line in p.read_text().splitlines())  # records, not headers
    result = run_cli(CELL, tmp_path, tmp_path / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"{kept} of 16 questions resumed" in result.stdout + result.stderr
    again, before = predictions(target), predictions(source)
    assert [r["index"] for r in again] == list(range(16))  # none twice, none missing
    assert [{k: r.get(k) for k in KEYS} for r in again] == [{k: r.get(k) for k in KEYS} for r in before]
    assert json.loads((target / "metrics.json").read_text())["circular"] == \
        json.loads((source / "metrics.json").read_text())["circular"]


def test_rescore_checks_a_circular_cell_against_its_rotations(sweep, tmp_path):
    """A circular cell's shards hold one record per rotation (16), not per question (n=4)."""
    import subprocess
    import sys

    from tests.cell_runs import REPO, cli_env

    copy = Path(shutil.copytree(sweep[1]["outro"], tmp_path / "cells" / sweep[1]["outro"].name))
    before = (copy / "metrics.json").read_text()
    result = subprocess.run([sys.executable, "-m", "outro_sweep.rescore", str(copy)], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads((copy / "metrics.json").read_text()) == json.loads(before)
