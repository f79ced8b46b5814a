"""Where a sweep's files go: job folder names that keep the swept values past the length cut,
status.json naming the cell folder absolutely, and W&B's own files under the output folder.

Real sweeps and cells through ``python -m outro_sweep`` in subprocesses (the embedded SmolLM2,
two built-in questions scored by logits). W&B runs offline: its server cannot exist here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outro_sweep.cell.job_names import HARD_LIMIT, ITEM_LIMIT, NAME_LIMIT, cell_dirname, swept_keys
from outro_sweep.cell.tracking import keep_wandb_files_under
from outro_sweep.report.collect import collect_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = ["benchmark.limit=2", "benchmark.scoring=logits", "predict.batch_size=2", "trainer.enable_progress_bar=false"]
# Constant overrides that define the cell and sort before outro.alpha: together over 150 characters.
LONG_CONSTANTS = ["+origin=/data/shared/experiments/attention_sinks/very/long/folder/names/for/the/study/2024-06",
                  "+note=a_long_constant_note_that_is_the_same_for_every_cell_of_this_sweep_and_says_so"]
MODEL_CACHE = os.environ.get("OUTRO_SWEEP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "outro_sweep"))


def run_cli(args: list[str], cwd: Path, env: dict | None = None, base_env: dict | None = None):
    env = {**(os.environ if base_env is None else base_env), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "OUTRO_SWEEP_CACHE": MODEL_CACHE, **(env or {})}
    return subprocess.run([sys.executable, "-m", "outro_sweep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


# ----------------------------------------------------------------------------- folder names


def test_names_within_the_limit_are_unchanged():
    assert cell_dirname(["outro.alpha=3", "outro.layer=[1,2]", "paths.output_dir=/x"], ["outro.alpha"]) == \
        "outro.alpha=3,outro.layer=_1,2_"
    assert cell_dirname([]) == "defaults"


def test_swept_keys_are_those_that_vary():
    jobs = [["outro.alpha=1", "+note=x", "benchmark.limit=2"], ["outro.alpha=3", "+note=x", "benchmark.limit=2"],
            ["outro.alpha=1", "+note=x", "benchmark.limit=2", "outro.enabled=false"]]
    assert swept_keys(jobs) == ["outro.alpha", "outro.enabled"]


def test_past_the_limit_swept_values_stay_and_constants_shrink():
    plan = [[*LONG_CONSTANTS, f"outro.alpha={alpha}", f"outro.layer={layer}"] for alpha in (0.5, 3) for layer in (1, 2)]
    names = [cell_dirname(job, swept_keys(plan)) for job in plan]
    assert len(set(names)) == 4
    for job, name in zip(plan, names):
        assert len(",".join(sorted(job))) > NAME_LIMIT  # the whole name would be cut
        assert len(name) <= NAME_LIMIT
        assert job[2] in name.split(",") and job[3] in name.split(",")  # the swept values, whole
        assert name.split(",")[-1].startswith("const-")  # the dropped constants, as one hash
    # Without the swept keys (the constant overrides only), the values are still kept apart by the hash.
    assert len({cell_dirname(job) for job in plan}) == 4


def test_a_swept_value_longer_than_the_limit_keeps_its_end_and_a_hash():
    root = "/data/shared/models/" + "a_very_long_folder_name_" * 8
    plan = [[*LONG_CONSTANTS, f"model.path={root}{which}"] for which in ("model_one", "model_two")]
    names = [cell_dirname(job, swept_keys(plan)) for job in plan]
    assert names[0] != names[1] and ("model_one" in names[0]) and ("model_two" in names[1])
    for name in names:
        (item,) = [part for part in name.split(",") if part.startswith("model.path=")]
        # The end tells the two paths apart (their long parents are the same).
        assert item.startswith("model.path=..") and len(item) <= ITEM_LIMIT
        assert item.rsplit("-", 1)[0].endswith(("model_one", "model_two"))
        assert len(name) <= NAME_LIMIT
    many = [[f"+key{i:02d}=value_{j}_{'x' * 20}" for i in range(12)] for j in range(2)]  # 12 swept keys
    assert all(len(cell_dirname(job, swept_keys(many))) <= HARD_LIMIT for job in many)


@pytest.mark.slow
def test_a_sweep_keeps_its_swept_values_in_its_folder_names(tmp_path):
    """The bar: a real sweep whose swept value falls past the old 150-character cut."""
    out, sweep_dir = tmp_path / "out", tmp_path / "out" / "multirun" / "2026-01-01" / "10-00-00"
    result = run_cli(["-m", *TINY, "outro.alpha=1,3", "baseline=false", "logger.mode=disabled", *LONG_CONSTANTS,
                      f"paths.output_dir={out}", f"hydra.sweep.dir={sweep_dir}"], REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    full = ",".join(sorted([*LONG_CONSTANTS, "outro.alpha=1"]))
    assert full.index("outro.alpha") > NAME_LIMIT  # the old cut would have lost it
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    assert [job.name.split("_", 1)[1].split(",")[1] for job in jobs] == ["outro.alpha=1", "outro.alpha=3"], jobs
    for job in jobs:
        status = json.loads((job / "status.json").read_text())
        assert status["status"] == "succeeded"
        assert Path(status["cell"]).is_absolute() and Path(status["cell"]) == (job / "cell").resolve()
    cells, _ = collect_sweep(sweep_dir)  # the report maps every folder back to its overrides
    assert sorted((c.state, [o for o in c.overrides if o.startswith("outro.alpha")][0]) for c in cells) == [
        ("done", "outro.alpha=1"), ("done", "outro.alpha=3")]


@pytest.mark.slow
def test_status_names_the_cell_by_an_absolute_path_when_output_dir_is_relative(tmp_path):
    """``paths.output_dir`` relative to the working directory: status.json still names the cell
    folder so that it is found from anywhere (the report, another shell)."""
    result = run_cli(["-m", *TINY, "+dry_run=true", "baseline=false", "paths.output_dir=rel_out", "hydra.sweep.dir=sweep"], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (status_file,) = (tmp_path / "sweep").glob("*/status.json")
    cell = Path(json.loads(status_file.read_text())["cell"])
    assert cell.is_absolute() and cell.parent == tmp_path / "rel_out" / "cells"


# ----------------------------------------------------------------------------- W&B's own files


def test_wandb_folders_keep_what_the_user_set(tmp_path, monkeypatch):
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_DATA_DIR", "/users/own/wandb_data")
    keep_wandb_files_under(tmp_path / "first")
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "first" / "wandb" / "cache")
    assert os.environ["WANDB_ARTIFACT_DIR"] == str(tmp_path / "first" / "wandb" / "artifacts")
    assert os.environ["WANDB_DATA_DIR"] == "/users/own/wandb_data"
    # A later run of the same process keeps the first folders: its W&B service read them once, and
    # a change would only make W&B warn that it ignores it.
    keep_wandb_files_under(tmp_path / "second")
    assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "first" / "wandb" / "cache")
    assert os.environ["WANDB_DATA_DIR"] == "/users/own/wandb_data"


@pytest.mark.slow
def test_wandb_writes_nothing_under_home_or_the_working_directory(tmp_path):
    """A cell with an offline W&B run, HOME and the working directory empty temporary folders,
    no WANDB_* or XDG_* variable set (W&B's defaults are what is tested): everything W&B writes
    is under the output folder."""
    home, cwd, out = tmp_path / "home", tmp_path / "cwd", tmp_path / "out"
    home.mkdir(), cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_"))}
    # matplotlib's font cache (not W&B's) would go to HOME: MPLCONFIGDIR is matplotlib's own setting.
    result = run_cli([*TINY, "logger.mode=offline", f"paths.output_dir={out}", f"hydra.run.dir={out / 'job'}"],
                     cwd, base_env=env, env={"HOME": str(home), "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")) == []
    assert len(list(out.glob("cells/*/wandb/offline-run-*/run-*.wandb"))) == 1
    assert list((out / "wandb" / "cache").rglob("core-debug-*.log"))  # wandb-core's own log
