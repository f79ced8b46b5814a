"""``python -m outro_sweep.report`` on REAL sweeps (``python -m outro_sweep -m ...`` in a
subprocess: the 2x2 sweep on the embedded SmolLM2-135M, a partial sweep on the tiny random
Llama of tests/conftest.py), checked against numbers recomputed here from each cell's
predictions.jsonl.

No network: the cells and the report log to W&B offline, and the report reads local files
only (the W&B API cross-check runs only with --wandb-mode online, never here).

The baseline (outro=off) is looked up by key in <output_dir>/cells: the sweeper may add it to
the sweep itself; if it did not, it is run once as a separate invocation in the same output
folder, which is where the report finds it too.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from outro_sweep.cell.identity import identity_config
from outro_sweep.cell.store import CellStore
from outro_sweep.report.paired import newcombe_interval
from tests.wandb_offline import find_runs, read_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
LIMIT = 12


def run_sweep(args: list[str], output_dir: Path, sweep_dir: Path | None = None) -> subprocess.CompletedProcess:
    extra = [f"hydra.sweep.dir={sweep_dir}"] if sweep_dir is not None else []
    return subprocess.run([sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={output_dir}", *extra],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900, check=False)


def run_report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outro_sweep.report", *map(str, args)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, check=False)


def base_args(tiny_model_dir: Path | None) -> list[str]:
    """The embedded SmolLM2 (``None``) or the tiny random Llama, on the built-in benchmark."""
    model = [] if tiny_model_dir is None else ["model=hf_causal_lm", f"model.path={tiny_model_dir}"]
    return [*model, f"benchmark.limit={LIMIT}", "benchmark.scoring=logits", "sink=first_k"]


def load_config(cell: Path) -> dict:
    return yaml.safe_load((cell / "config.yaml").read_text())


def pairing_key(config: dict) -> str:
    """Independently of the report: the identity config without OutRo, sink and bookkeeping."""
    kept = identity_config(config)
    for key in ("outro", "sink", "identity", "baseline_identity", "judge_identity"):
        kept.pop(key, None)
    return json.dumps(kept, sort_keys=True, default=str)


def done_cells(output_dir: Path) -> list[Path]:
    return sorted(c for c in (output_dir / "cells").iterdir() if (c / "DONE").is_file())


def read_predictions(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines() if line.strip()]


def mcnemar_closed_form(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def read_table(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 400 <= width <= 4000 and 250 <= height <= 4000, (path.name, image.size)


# ----------------------------------------------------------------------------- a full sweep


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report_full")
    sweep_dir = out / "multirun" / "2026-01-01" / "10-00-00"  # Hydra's layout: output_dir = parents[2]
    swept = run_sweep(["-m", *base_args(None), "outro.layer=1,2", "outro.alpha=0.5,3",
                       "logger.mode=offline"], out, sweep_dir)
    assert swept.returncode == 0, swept.stdout[-2000:] + swept.stderr[-3000:]
    outro_cells = [c for c in done_cells(out) if load_config(c)["outro"]["enabled"]]
    assert len(outro_cells) == 4
    key = pairing_key(load_config(outro_cells[0]))
    baselines = [c for c in done_cells(out) if not load_config(c)["outro"]["enabled"]
                 and pairing_key(load_config(c)) == key]
    if not baselines:  # the sweep did not include its baseline: run it once, same output folder
        single = run_sweep([*base_args(None), "outro=off", "logger.mode=disabled",
                            f"hydra.run.dir={out / 'baseline_job'}"], out)
        assert single.returncode == 0, single.stderr[-3000:]
        baselines = [c for c in done_cells(out) if not load_config(c)["outro"]["enabled"]]
    assert len(baselines) >= 1
    report = run_report(sweep_dir)
    return {"out": out, "sweep": sweep_dir, "report": report, "dir": sweep_dir / "report",
            "outro_cells": outro_cells, "baselines": baselines, "swept": swept}


def test_the_sweep_prints_its_report_line_once(full_report):
    """The sweep's own output: one verdict line per compared cell, and one line naming the report."""
    swept, folder = full_report["swept"], full_report["dir"]
    lines = (swept.stdout + swept.stderr).splitlines()
    (line,) = [line for line in lines if str(folder) in line]
    assert re.fullmatch(rf"report: 5 cells \(5 done\); 4 compared with a baseline, \d significant \(p < 0\.05\) -> "
                        rf"{re.escape(str(folder))}", line), line
    assert len([line for line in lines if " vs stock: " in line]) == 4


def test_report_runs_and_writes_every_file(full_report):
    report = full_report["report"]
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    folder = full_report["dir"]
    assert f"-> {folder}" in report.stdout
    assert "4 compared with a baseline" in report.stdout
    for name in ("table.md", "table.csv", "categories.md", "categories.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 100, name
    heatmaps = sorted(folder.glob("heatmap_*.png"))
    categories = sorted(folder.glob("categories_*.png"))
    sinks = sorted(folder.glob("sinks_*.png"))
    assert len(heatmaps) == 1 and len(categories) == 1
    assert sorted(p.stem.removeprefix("sinks_") for p in sinks) == sorted(c.name for c in full_report["outro_cells"])
    for path in heatmaps + categories + sinks:
        assert_png(path)
    markdown = (folder / "table.md").read_text()
    assert heatmaps[0].name in markdown and "McNemar" in markdown and "Wilson" in markdown and "Newcombe" in markdown
    assert "failed:" not in markdown.split("## Cells")[0]  # no figure, table or W&B step degraded to a note


def test_table_numbers_match_an_independent_recomputation(full_report):
    table = {row["identity"]: row for row in read_table(full_report["dir"] / "table.csv")}
    for cell in full_report["outro_cells"]:
        row = table[cell.name]
        assert row["state"] == "done" and row["interventions"] == "outro"
        config = load_config(cell)
        assert row["grid_row"] == str(config["outro"]["layer"])
        assert float(row["grid_column"]) == float(config["outro"]["alpha"])
        assert row["baseline"] == config["baseline_identity"]
        assert row["sink"] == "first_k" and row["model"] == "smollm2_135m" and row["benchmark"] == "builtin_mc"
        # accuracy and Wilson interval: the cell's own metrics.json, written by the pipeline
        metrics = json.loads((cell / "metrics.json").read_text())
        assert int(row["n"]) == metrics["n"] == LIMIT
        assert float(row["accuracy"]) == pytest.approx(metrics["accuracy"])
        assert float(row["accuracy_ci_low"]) == pytest.approx(metrics["ci_low"])
        assert float(row["accuracy_ci_high"]) == pytest.approx(metrics["ci_high"])
        # the baseline: same key; paired by id here, counted, tested with the closed form
        baseline = Path(full_report["out"]) / "cells" / row["baseline"]
        assert baseline in full_report["baselines"]
        assert pairing_key(load_config(baseline)) == pairing_key(config)
        base = {r["id"]: r for r in read_predictions(baseline)}
        mine = {r["id"]: r for r in read_predictions(cell)}
        shared = [i for i in mine if i in base and base[i]["prompt_hash"] == mine[i]["prompt_hash"]]
        assert len(shared) == LIMIT
        b = sum(1 for i in shared if base[i]["correct"] and not mine[i]["correct"])
        c = sum(1 for i in shared if mine[i]["correct"] and not base[i]["correct"])
        assert int(row["paired_n"]) == len(shared)
        assert (int(row["b_baseline_only"]), int(row["c_intervention_only"])) == (b, c)
        assert float(row["diff"]) == pytest.approx((c - b) / len(shared))
        assert float(row["baseline_accuracy"]) == pytest.approx(sum(base[i]["correct"] for i in shared) / len(shared))
        assert float(row["p_mcnemar"]) == pytest.approx(mcnemar_closed_form(b, c))
        low, high = float(row["diff_ci_low"]), float(row["diff_ci_high"])
        assert low < float(row["diff"]) < high
        both = sum(1 for i in shared if base[i]["correct"] and mine[i]["correct"])
        assert (low, high) == pytest.approx(newcombe_interval(b, c, both, len(shared) - both - b - c))
        assert row["significant"] == str(float(row["p_mcnemar"]) < 0.05).lower()
        assert row["p_holm"] == ""  # no --holm
    baseline_rows = [r for r in table.values() if r["interventions"] == "off"]
    assert baseline_rows and all(r["diff"] == "" and r["state"] == "done" for r in baseline_rows)


def test_categories_match_the_predictions(full_report):
    rows = read_table(full_report["dir"] / "categories.csv")
    cell = full_report["outro_cells"][0]
    records = read_predictions(cell)
    mine = [r for r in rows if r["identity"] == cell.name]
    assert {r["value"] for r in mine} == {r["category"] for r in records}
    for row in mine:
        group = [r for r in records if r["category"] == row["value"]]
        assert int(row["n"]) == len(group)
        assert float(row["accuracy"]) == pytest.approx(sum(r["correct"] for r in group) / len(group))
        assert row["diff"] != ""


def test_report_is_a_wandb_run_of_the_sweep_group(full_report):
    # Two report runs: the one the multirun wrote when it ended, and the explicit command's.
    run_files = find_runs(full_report["dir"])
    assert len(run_files) == 2
    for run_file in run_files:
        run = read_run(run_file)
        assert run.job_type == "report" and run.exit_code == 0
        assert run.group == "sweep-2026-01-01_10-00-00"
        logged = {k: v for entry in run.history for k, v in entry.items()}
        assert logged.get("table/_type") == "table-file"
        assert logged.get("table/nrows") == len(read_table(full_report["dir"] / "table.csv"))
        assert any(k.startswith("heatmap/") and k.endswith("/_type") and v == "image-file" for k, v in logged.items())
        table_file = run_file.parent / "files" / logged["table/path"]
        logged_table = json.loads(table_file.read_text())
        assert "p_mcnemar" in logged_table["columns"] and len(logged_table["data"]) == logged["table/nrows"]
        assert int(run.summary["compared"]) == 4


def test_holm_option_fills_the_adjusted_column(full_report, tmp_path):
    result = run_report(full_report["sweep"], "--holm", "--wandb-mode", "disabled", "--out", tmp_path / "holm")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in read_table(tmp_path / "holm" / "table.csv") if r["interventions"] == "outro"]
    raw = sorted(float(r["p_mcnemar"]) for r in rows)
    for row in rows:
        assert float(row["p_mcnemar"]) <= float(row["p_holm"]) <= 1.0
    assert min(float(r["p_holm"]) for r in rows) == pytest.approx(min(1.0, len(raw) * raw[0]))
    assert not find_runs(tmp_path / "holm")  # --wandb-mode disabled: no run


# ----------------------------------------------------------------------------- a partial sweep


@pytest.fixture(scope="module")
def partial_report(tiny_model_dir, tmp_path_factory) -> dict:
    """One cell done, one cut to its shards (partial), one failed (its results replaced by the
    FAILED marker of an error after the model loaded; bad input never gets a cell folder), one
    whose job folder is gone (missing); no baseline anywhere."""
    out = tmp_path_factory.mktemp("report_partial")
    sweep_dir = out / "multirun" / "2026-01-02" / "11-00-00"
    swept = run_sweep(["-m", *base_args(tiny_model_dir), "outro.layer=1", "outro.alpha=0.5,1,2,3",
                       "logger.mode=disabled"], out, sweep_dir)
    assert swept.returncode == 0, swept.stdout[-2000:] + swept.stderr[-3000:]
    added = {e["identity"] for e in json.loads((sweep_dir / "plan.json").read_text()) if e["baseline"]}
    for cell in (out / "cells").iterdir():  # the baseline the sweeper added is taken away
        if cell.name in added:
            shutil.rmtree(cell)
    jobs = {p.name: p for p in sweep_dir.iterdir()  # the grid's own jobs, not the added baseline's
            if p.is_dir() and "outro.alpha=" in p.name and os.readlink(p / "cell").rsplit("/", 1)[-1] not in added}
    by_alpha = {name.split("outro.alpha=")[1].split(",")[0]: job for name, job in jobs.items()}
    partial = (by_alpha["1"] / "cell").resolve()
    for name in ("DONE", "metrics.json", "predictions.jsonl"):
        (partial / name).unlink()
    assert list((partial / "shards").glob("*.jsonl"))
    shutil.rmtree(by_alpha["2"])
    failed = (by_alpha["3"] / "cell").resolve()
    for name in ("DONE", "metrics.json", "predictions.jsonl"):
        (failed / name).unlink()
    CellStore(out, failed.name).mark_failed(RuntimeError("outro.alpha=3 ran out of memory"), None)
    report = run_report(sweep_dir)
    return {"out": out, "report": report, "dir": sweep_dir / "report", "partial": partial.name,
            "done": (by_alpha["0.5"] / "cell").resolve().name, "failed": failed.name}


def test_partial_sweep_lists_every_cell_with_its_state(partial_report):
    report = partial_report["report"]
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    rows = [r for r in read_table(partial_report["dir"] / "table.csv") if r["interventions"] != "off"]
    states = {r["identity"] or "?": r["state"] for r in rows}
    assert states[partial_report["done"]] == "done"
    assert states[partial_report["partial"]] == "partial"
    assert states[partial_report["failed"]] == "failed"
    missing = [r for r in rows if r["state"] == "missing"]
    assert len(missing) == 1 and "outro.alpha=2" in missing[0]["other_settings"] and "outro.alpha=2" in missing[0]["note"]
    failed = next(r for r in rows if r["state"] == "failed")
    assert "alpha" in failed["note"] and failed["accuracy"] == ""
    for row in rows:
        if row["state"] != "done":
            assert row["accuracy"] == row["n"] == row["diff"] == ""
    done = next(r for r in rows if r["state"] == "done")
    assert int(done["n"]) == LIMIT and done["accuracy"] != ""
    markdown = (partial_report["dir"] / "table.md").read_text()
    assert "failed:" not in markdown.split("## Cells")[0]
    for state in ("done", "partial", "failed", "missing"):
        assert f"| {state} |" in markdown
    (run_file,) = find_runs(partial_report["dir"])
    assert read_run(run_file).exit_code == 0


def test_sweep_without_a_baseline_says_so(partial_report):
    folder = partial_report["dir"]
    markdown = (folder / "table.md").read_text()
    assert "no baseline for model hf_causal_lm on benchmark builtin_mc" in markdown
    done = next(r for r in read_table(folder / "table.csv") if r["identity"] == partial_report["done"])
    assert done["baseline"] == "" and done["diff"] == "" and done["p_mcnemar"] == ""
    assert "no baseline" in done["note"]
    (heatmap,) = folder.glob("heatmap_*.png")  # plain accuracy, titled as such
    assert_png(heatmap)
    stdout = partial_report["report"].stdout
    assert "partial" in stdout and "0 compared with a baseline" in stdout


# ----------------------------------------------------------------------------- hand-made cells


def make_cell(output_dir: Path, identity: str, enabled: bool, correct: list[bool], hashes: dict | None = None,
              alpha: float = 3.0) -> Path:
    cell = output_dir / "cells" / identity
    cell.mkdir(parents=True)
    config = {"model": {"name": "m", "path": "/models/m"}, "benchmark": {"_target_": "b.Bench", "limit": None},
              "sink": {"_target_": "s.Rule"}, "seed": 0, "predict": {"batch_size": 8},
              "outro": {"_target_": "outro_sweep.interventions.outro.OutRoIntervention", "enabled": enabled,
                        "alpha": alpha, "temperature": 0.1, "layer": [2, 4]},
              "choices": {"model": "m", "benchmark": "bench", "sink": "rule"}, "identity": identity}
    (cell / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"index": i, "id": f"q{i}", "prompt_hash": (hashes or {}).get(i, f"h{i}"), "correct": c,
                "category": "even" if i % 2 == 0 else "odd"} for i, c in enumerate(correct)]
    (cell / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (cell / "metrics.json").write_text(json.dumps({"diagnostics": {}}))
    CellStore(output_dir, identity).mark_done({})
    return cell


def test_write_report_pairs_what_it_can_and_never_raises(tmp_path):
    """In-process, no model: the baseline only in the cell store, a cell whose question set
    differs (one id with another prompt_hash, one question missing), a cell with corrupt
    predictions, a job folder with a corrupt status.json, no multirun.yaml."""
    from outro_sweep.report.build import write_report

    out = tmp_path / "outputs"
    sweep = out / "multirun" / "2026-03-03" / "09-00-00"
    sweep.mkdir(parents=True)
    make_cell(out, "base00000000", False, [i % 3 == 0 for i in range(20)])
    treat = [i % 3 == 0 or i in (1, 2, 4) for i in range(18)] + [True]  # q18 has another prompt
    paired = make_cell(out, "paired000000", True, treat, hashes={18: "other"})
    broken = make_cell(out, "broken000000", True, [True] * 20, alpha=1.0)
    (broken / "predictions.jsonl").write_text("{not json\n")
    CellStore(out, broken.name).mark_done({})  # a DONE that holds over unparseable predictions
    for number, cell in enumerate((paired, broken)):
        job = sweep / f"{number}_outro.alpha={number}"
        job.mkdir()
        (job / "cell").symlink_to(os.path.relpath(cell, job))
        (job / "status.json").write_text(json.dumps({"identity": cell.name, "status": "succeeded", "cell": str(cell)}))
    (sweep / "2_outro.alpha=9").mkdir()
    (sweep / "2_outro.alpha=9" / "status.json").write_text("{corrupt")

    folder = write_report([sweep], wandb_mode="disabled", holm=True)
    rows = {r["identity"] or r["jobs"]: r for r in read_table(folder / "table.csv")}
    base = rows["base00000000"]
    assert base["state"] == "done" and "from the cell store" in base["note"]
    row = rows["paired000000"]
    assert row["baseline"] == "base00000000" and int(row["paired_n"]) == 18 and int(row["n"]) == 19
    assert (int(row["b_baseline_only"]), int(row["c_intervention_only"])) == (0, 3)
    assert float(row["p_mcnemar"]) == pytest.approx(mcnemar_closed_form(0, 3)) == pytest.approx(0.25)
    assert float(row["p_holm"]) == pytest.approx(0.25)  # the only comparison
    assert "question sets differ" in row["note"] and "q18" in row["note"]
    assert rows["broken000000"]["diff"] == "" and "predictions unreadable" in rows["broken000000"]["note"]
    assert rows["2_outro.alpha=9"]["state"] == "failed"
    markdown = (folder / "table.md").read_text()
    assert "no multirun.yaml" in markdown and "| p (Holm) |" in markdown
    assert list(folder.glob("heatmap_*.png")) and not list(folder.glob("wandb"))
