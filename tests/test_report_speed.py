"""The report's accuracy-vs-speed figures: a real sweep (the real SmolLM2-135M, OutRo alpha
0.1 and 0.3 plus the baseline the sweeper adds, ``scoring=generate`` so every cell decodes),
then the report; every number of ``speed.csv`` (what the figures draw) is recomputed here from
the cells' metrics.json, the Pareto front by a plain double loop.

The skip-rate panel reads ``diagnostics.sinkrouter.skip_rate``. Those cells come from the
SinkRouter intervention; here, copies of the OutRo cells are given a skip rate in their
metrics.json (and a DONE marker naming the changed file), standing in for SinkRouter cells:
the panel only reads metrics.json, whatever wrote it.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml
from PIL import Image

from outro_sweep.cell.store import CellStore
from outro_sweep.report.build import write_report
from outro_sweep.report.speed import pareto
from tests.cell_runs import run_cli

SWEEP = ["-m", "benchmark.limit=4", "benchmark.scoring=generate", "benchmark.max_new_tokens=6",
         "predict.batch_size=2", "outro.alpha=0.1,0.3", "logger.mode=disabled", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("speed_sweep")
    result = run_cli(SWEEP, tmp / "out", tmp / "sweep")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return {"out": tmp / "out", "sweep": tmp / "sweep", "tmp": tmp}


def _table(report) -> list[dict]:
    with open(report / "speed.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _metrics(cell) -> dict:
    return json.loads((cell / "metrics.json").read_text())


def _check_recomputed(table: list[dict], cells_dir, with_skip: bool) -> None:
    """Every row's numbers from its cell's metrics.json; the front recomputed. ``table``: the
    rows of one group (one model x benchmark configuration, one baseline)."""
    metrics = {row["identity"]: _metrics(cells_dir / row["identity"]) for row in table}
    baselines = {yaml.safe_load((cells_dir / i / "config.yaml").read_text())["baseline_identity"] for i in metrics}
    assert len(baselines) == 1 and len({row["group"] for row in table}) == 1
    for row in table:
        m = metrics[row["identity"]]
        assert float(row["accuracy"]) == pytest.approx(m["accuracy"])
        speed = m["speed"]
        assert float(row["ci_low"]) == pytest.approx(m["ci_low"])
        assert float(row["ci_high"]) == pytest.approx(m["ci_high"])
        assert float(row["decode_tokens_per_s"]) == pytest.approx(speed["decode_tokens_per_s"])
        assert float(row["decode_tokens_per_s"]) == pytest.approx(speed["decode_tokens"] / speed["decode_seconds"])
        assert float(row["prefill_tokens_per_s"]) == pytest.approx(m["speed"]["prefill_tokens_per_s"])
        assert (row["device"], int(row["torch_threads"]), int(row["batch_size"])) == (
            m["speed"]["device"], m["speed"]["torch_threads"], m["speed"]["batch_size"])
        assert (row["baseline"] == "True") == (row["identity"] in baselines)
        skip = (m["diagnostics"].get("sinkrouter") or {}).get("skip_rate")
        assert (row["skip_rate"] == "") == (skip is None)
        if skip is not None:
            assert float(row["skip_rate"]) == pytest.approx(skip)
    speeds = [(metrics[r["identity"]]["speed"]["decode_tokens_per_s"], metrics[r["identity"]]["accuracy"])
              for r in table]
    expected = [not any(o[0] >= s[0] and o[1] >= s[1] and o != s for o in speeds) for s in speeds]
    assert [r["pareto_speed"] == "True" for r in table] == expected
    if with_skip:
        skips = [((metrics[r["identity"]]["diagnostics"].get("sinkrouter") or {}).get("skip_rate", 0.0),
                  metrics[r["identity"]]["accuracy"]) for r in table]
        expected = [not any(o[0] >= s[0] and o[1] >= s[1] and o != s for o in skips) for s in skips]
        assert [r["pareto_skip"] == "True" for r in table] == expected
    else:
        assert all(r["pareto_skip"] == "" for r in table)


@pytest.mark.slow
def test_the_sweeps_speed_figure_draws_the_cells_metrics(sweep):
    report = write_report([sweep["sweep"]], wandb_mode="disabled")
    table = _table(report)
    assert len(table) == 3 and sum(r["baseline"] == "True" for r in table) == 1
    _check_recomputed(table, sweep["out"] / "cells", with_skip=False)
    (figure,) = report.glob("speed_*.png")
    assert {r["figure"] for r in table} == {figure.name}
    width, height = Image.open(figure).size
    assert width < 1.5 * height  # one panel: no cell recorded a skip rate
    assert figure.name in (report / "speed.md").read_text()
    assert "speed.md (1 figure)" in (report / "table.md").read_text()


@pytest.mark.slow
def test_a_skip_rate_adds_the_skip_panel_and_its_front(sweep, tmp_path):
    cells = tmp_path / "out" / "cells"
    skip_rates = iter([0.4, 0.1])
    for source in sorted((sweep["out"] / "cells").iterdir()):
        cell = shutil.copytree(source, cells / source.name, ignore=shutil.ignore_patterns("LOCK"))
        metrics = _metrics(cell)
        if yaml.safe_load((cell / "config.yaml").read_text())["outro"]["enabled"]:
            metrics["diagnostics"]["sinkrouter"] = {"skip_rate": next(skip_rates), "skip_rate_per_layer": []}
            (cell / "metrics.json").write_text(json.dumps(metrics))
            CellStore(tmp_path / "out", cell.name).mark_done(metrics)
    report = write_report([], tmp_path / "report", wandb_mode="disabled", cells=sorted(cells.iterdir()))
    table = _table(report)
    assert len(table) == 3
    _check_recomputed(table, cells, with_skip=True)
    (figure,) = report.glob("speed_*.png")
    width, height = Image.open(figure).size
    assert width > 2 * height  # two panels side by side: speed and skip rate


def test_the_pareto_front_keeps_the_cells_nothing_beats():
    # (speed, accuracy): the fastest, the most accurate, and one beaten by the first in both.
    assert pareto([(30.0, 0.5), (10.0, 0.9), (20.0, 0.4), (30.0, 0.5)]) == [True, True, False, True]
    assert pareto([(1.0, 0.5), (1.0, 0.6)]) == [False, True]  # as fast, less accurate


@pytest.mark.slow
def test_a_sinkrouter_sweep_over_two_thresholds_draws_speed_and_skip_rate_per_context_length(tmp_path):
    """The user's form: passkey at two context lengths x two thresholds, plus one baseline per
    length; one figure per length, each with its own baseline and front."""
    args = ["-m", "outro=off", "sinkrouter=default", "sinkrouter.threshold=0.3,0.7", "benchmark=passkey",
            "benchmark.context_tokens=160,256", "benchmark.depths=[0.5]", "benchmark.num_questions=2",
            "predict.batch_size=2", "logger.mode=disabled", "trainer.enable_progress_bar=false"]
    result = run_cli(args, tmp_path / "out", tmp_path / "sweep")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 6 succeeded" in result.stdout  # 2 lengths x 2 thresholds + 2 baselines
    report = tmp_path / "sweep" / "report"
    table = _table(report)
    groups = sorted({row["group"] for row in table})
    assert len(groups) == 2 and all(any(f"context_tokens={n}" in g for g in groups) for n in (160, 256))
    for group in groups:
        rows = [row for row in table if row["group"] == group]
        assert sum(r["baseline"] == "True" for r in rows) == 1
        assert sorted(r["cell"] for r in rows if r["baseline"] == "False") == ["sinkrouter.threshold=0.3",
                                                                               "sinkrouter.threshold=0.7"]
        _check_recomputed(rows, tmp_path / "out" / "cells", with_skip=True)
    figures = sorted(report.glob("speed_*.png"))
    assert len(figures) == 2
    for figure in figures:
        width, height = Image.open(figure).size
        assert width > 2 * height  # the skip-rate panel beside the speed panel


@pytest.mark.slow
def test_outro_and_sinkrouter_stacked_run_end_to_end_with_their_report(tmp_path):
    args = ["-m", "outro.alpha=0.3", "sinkrouter=default", "sinkrouter.threshold=0.5", "benchmark.limit=4",
            "benchmark.scoring=generate", "benchmark.max_new_tokens=6", "predict.batch_size=2",
            "logger.mode=disabled", "trainer.enable_progress_bar=false"]
    result = run_cli(args, tmp_path / "out", tmp_path / "sweep")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 2 succeeded" in result.stdout  # the stacked cell and its stock baseline
    report = tmp_path / "sweep" / "report"
    table = _table(report)
    (stacked,) = [r for r in table if r["baseline"] == "False"]
    assert stacked["cell"] == "outro+sinkrouter"
    config = yaml.safe_load((tmp_path / "out" / "cells" / stacked["identity"] / "config.yaml").read_text())
    assert config["outro"]["enabled"] and config["sinkrouter"]["enabled"]
    _check_recomputed(table, tmp_path / "out" / "cells", with_skip=True)
    assert stacked["identity"] in (report / "table.md").read_text()
