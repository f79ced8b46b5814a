"""Cell identity, DONE/FAILED markers, skipping finished cells, force, dry runs and the sweep
summary, through ``python -m outro_sweep`` in subprocesses (local launcher).

The model is a tiny random Llama with SmolLM2's tokenizer (tests/conftest.py), so a cell takes
about a second; a model that cannot load stands in for a cell that crashes mid-run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from outro_sweep.cell.identity import cell_identity, identity_config
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], output_dir: Path, sweep_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    extra = [f"hydra.sweep.dir={sweep_dir}"] if sweep_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={output_dir}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------- identity


BASE = {"model": {"name": "m", "path": "/x", "cache_dir": "/home/a/.cache"},
        "outro": {"_target_": "outro_sweep.interventions.outro.OutRoIntervention", "enabled": True, "alpha": 1.0,
                  "layer": 2},
        "sink": {"_target_": "first_k", "k": 1}, "seed": 0,
        "predict": {"batch_size": 8, "num_workers": 0}, "paths": {"output_dir": "a"},
        "logger": {"mode": "offline"}, "choices": {"model": "m"}, "force": False}


def variant(**changes) -> dict:
    config = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def test_identity_does_not_depend_on_the_environment(monkeypatch):
    """Secrets are masked in what is written, never in what is hashed: a credential whose value
    appears in the config (here the model path) must not change the identity."""
    reference = cell_identity(BASE)
    monkeypatch.setenv("SOME_API_KEY", "/x")
    monkeypatch.setenv("HOME", "/elsewhere")
    assert cell_identity(BASE) == reference


def test_identity_is_stable_and_ignores_what_cannot_change_results():
    reference = cell_identity(BASE)
    assert len(reference) == 12 and int(reference, 16) >= 0
    reordered = dict(reversed(list(BASE.items())))
    assert cell_identity(reordered) == reference
    for ignored in ({"paths__output_dir": "elsewhere"}, {"logger__mode": "disabled"},
                    {"predict__num_workers": 4}, {"force": True}, {"choices__model": "renamed"},
                    {"model__cache_dir": "/other/home/.cache"}):  # the cache folder comes from $HOME
        assert cell_identity(variant(**ignored)) == reference, ignored
    for relevant in ({"outro__alpha": 3.0}, {"outro__layer": 4}, {"model__path": "/y"}, {"seed": 1},
                     {"predict__batch_size": 4}, {"sink__k": 4}):
        assert cell_identity(variant(**relevant)) != reference, relevant
    assert "paths" not in identity_config(BASE) and BASE["paths"] == {"output_dir": "a"}  # input untouched


def test_a_stock_model_cell_ignores_outro_settings_and_sink_rule():
    """With OutRo off, alpha/layer/temperature and the sink rule cannot change a prediction: every
    such variant is the one baseline cell."""
    off = variant(outro__alpha=1.0)
    off["outro"]["enabled"] = False
    off["sink"] = {"_target_": "first_k", "k": 1}
    reference = cell_identity(off)
    other = json.loads(json.dumps(off))
    other["outro"].update(alpha=3.0, layer="auto")
    other["sink"] = {"_target_": "massive_activation"}
    assert cell_identity(other) == reference
    on = json.loads(json.dumps(other))
    on["outro"]["enabled"] = True
    assert cell_identity(on) != reference
    other["model"]["path"] = "/elsewhere"  # a different model is a different baseline
    assert cell_identity(other) != reference


# ---------------------------------------------------------------------------- sweeps


def cell_args(tiny_model_dir: Path) -> list[str]:
    return ["model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark.limit=3", "benchmark.scoring=logits",
            "outro.layer=1"]


@pytest.fixture(scope="module")
def finished_sweep(tiny_model_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("resume")
    args = ["-m", *cell_args(tiny_model_dir), "outro.alpha=0.1,0.3", "logger.mode=offline"]
    first = run_cli(args, out, out / "sweep1")
    assert first.returncode == 0, first.stderr[-3000:]
    cells = sorted((out / "cells").iterdir())
    stamps = {c.name: ((c / "DONE").stat().st_mtime_ns, (c / "predictions.jsonl").read_bytes()) for c in cells}
    second = run_cli(args, out, out / "sweep2")
    return {"out": out, "args": args, "first": first, "second": second, "cells": cells, "stamps": stamps}


@pytest.mark.slow
def test_first_sweep_completes_every_cell(finished_sweep):
    first, cells = finished_sweep["first"], finished_sweep["cells"]
    assert last_line(first) == "sweep: 3 succeeded, 0 skipped (already done), 0 failed, of 3 cells"
    assert len(cells) == 3  # the two OutRo cells and their one stock-model baseline
    for cell in cells:
        done = json.loads((cell / "DONE").read_text())
        metrics = json.loads((cell / "metrics.json").read_text())
        assert done["identity"] == cell.name and done["n"] == metrics["n"] == 3
        assert not (cell / "FAILED").exists()
        config = (cell / "config.yaml").read_text()
        assert f"identity: {cell.name}" in config
        (run_file,) = find_runs(cell)
        assert read_run(run_file).run_id == cell.name  # the W&B run id is the cell identity
    links = sorted(os.readlink(p) for p in (finished_sweep["out"] / "sweep1").glob("*/cell"))
    assert [Path(link).name for link in links] == sorted(c.name for c in cells)
    # The baseline was added by the sweep itself, once, as outro=off with the grid's other settings.
    configs = [yaml.safe_load((c / "config.yaml").read_text()) for c in cells]
    baselines = [c for c in configs if not c["outro"]["enabled"]]
    assert len(baselines) == 1 and baselines[0]["outro"]["enabled"] is False
    assert {c["baseline_identity"] for c in configs} == {baselines[0]["identity"]}
    # The identity the submitting process planned is the identity each job computed.
    planned = json.loads((finished_sweep["out"] / "sweep1" / "plan.json").read_text())
    jobs = [json.loads(p.read_text()) for p in (finished_sweep["out"] / "sweep1").glob("*/status.json")]
    assert sorted(e["identity"] for e in planned) == sorted(j["identity"] for j in jobs) == sorted(c.name for c in cells)
    assert {c["outro"]["alpha"] for c in configs if c["outro"]["enabled"]} == {0.1, 0.3}


@pytest.mark.slow
def test_second_sweep_skips_every_cell_and_runs_nothing(finished_sweep):
    second = finished_sweep["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert last_line(second) == "sweep: 0 succeeded, 3 skipped (already done), 0 failed, of 3 cells"
    for cell in finished_sweep["cells"]:
        assert f"skip {cell.name}: done" in second.stdout
        mtime, predictions = finished_sweep["stamps"][cell.name]
        assert (cell / "DONE").stat().st_mtime_ns == mtime and (cell / "predictions.jsonl").read_bytes() == predictions
        assert len(find_runs(cell)) == 1  # no second W&B run
    assert not any(line.startswith("accuracy ") for line in second.stdout.splitlines())  # no cell predicted
    # The sweeper left both cells out of the launch: no job ran at all.
    assert not list((finished_sweep["out"] / "sweep2").glob("*/status.json"))
    skipped = json.loads((finished_sweep["out"] / "sweep2" / "skipped.json").read_text())
    assert sorted(s["identity"] for s in skipped) == sorted(c.name for c in finished_sweep["cells"])


@pytest.mark.slow
def test_dry_run_lists_cells_with_identity_and_state(finished_sweep, tiny_model_dir):
    out = finished_sweep["out"]
    args = ["-m", *cell_args(tiny_model_dir), "outro.alpha=0.1,0.3,0.5", "logger.mode=offline", "+dry_run=true",
            "hydra/launcher=local"]  # the launcher is replaced: a dry run never submits jobs
    result = run_cli(args, out, out / "dry")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("cell ")]
    assert len(lines) == 4  # three OutRo cells and the baseline
    done = {c.name for c in finished_sweep["cells"]}
    assert sum(line.split()[1] in done and "[done (accuracy" in line for line in lines) == 3
    assert sum("[new]" in line for line in lines) == 1
    assert last_line(result) == "dry run: 4 cells (3 done, 1 new); nothing was run"
    assert len(list((out / "cells").iterdir())) == 3  # nothing created


@pytest.mark.slow
def test_force_recomputes_a_done_cell(finished_sweep, tiny_model_dir, tmp_path):
    out = finished_sweep["out"]
    result = run_cli([*cell_args(tiny_model_dir), "outro.alpha=0.1", "logger.mode=disabled", "force=true",
                      f"hydra.run.dir={tmp_path / 'job'}"], out)
    assert result.returncode == 0, result.stderr[-3000:]
    cell = (tmp_path / "job" / "cell").resolve()
    assert cell in finished_sweep["cells"]  # the same identity: force is not part of it
    mtime, predictions = finished_sweep["stamps"][cell.name]
    assert (cell / "DONE").stat().st_mtime_ns != mtime
    assert (cell / "predictions.jsonl").read_bytes() == predictions  # recomputed, same answers


@pytest.mark.slow
def test_a_failing_cell_does_not_stop_the_sweep(tiny_model_dir, tmp_path):
    """One cell's model folder has a config but corrupt weights: it fails after its W&B run
    started; the other cell completes; the summary and the exit code say so."""
    broken = tmp_path / "broken_model"
    broken.mkdir()
    for name in os.listdir(tiny_model_dir):
        target = broken / name
        if name.endswith(".safetensors"):
            target.write_bytes(b"not a safetensors file")
        else:
            target.write_bytes((tiny_model_dir / name).read_bytes())
    args = ["-m", "model=hf_causal_lm", f"model.path={tiny_model_dir},{broken}", "benchmark.limit=3",
            "benchmark.scoring=logits", "outro.layer=1", "logger.mode=offline", "baseline=false"]
    result = run_cli(args, tmp_path, tmp_path / "sweep")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "sweep: 1 succeeded, 0 skipped (already done), 1 failed, of 2 cells" in result.stdout
    cells = list((tmp_path / "cells").iterdir())
    failed = [c for c in cells if (c / "FAILED").exists()]
    done = [c for c in cells if (c / "DONE").exists()]
    assert len(failed) == 1 and len(done) == 1 and failed != done
    marker = json.loads((failed[0] / "FAILED").read_text())
    assert marker["error"] and marker["log"] and Path(marker["log"]).is_file()
    assert not (failed[0] / "metrics.json").exists()
    assert "failed: " in result.stdout and marker["identity"] in result.stdout
    (run_file,) = find_runs(failed[0])
    assert read_run(run_file).exit_code == 1  # marked failed in W&B, not finished
    (run_file,) = find_runs(done[0])
    assert read_run(run_file).exit_code == 0
