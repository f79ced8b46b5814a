"""The user's sweep command, end to end, in a subprocess: cell folders and W&B runs.

W&B runs offline (its server needs Docker, which these machines lack); the offline
``.wandb`` files are decoded and checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test reads one subprocess sweep
SECRETS = {"WANDB_API_KEY": "wandb-secret-0123456789abcdef", "HF_TOKEN": "hf_secretTOKEN98765"}


def run_cli(args: list[str], tmp_path: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "multirun"
    result = run_cli(
        ["-m", "outro.layer=1,2", "outro.alpha=0.1,0.3", "baseline=false", "benchmark.limit=3", "benchmark.max_new_tokens=3",
         "predict.batch_size=2", f"hydra.sweep.dir={sweep_dir}",
         # A credential inside a resolved config value: config.yaml and the W&B run must mask it.
         "+note=token ${oc.env:HF_TOKEN}"],
        tmp, extra_env=SECRETS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, sweep_dir, result


def cells(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders; each links to its cell's results as ``cell``."""
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir())


def test_four_cells_each_complete(sweep):
    _, sweep_dir, result = sweep
    folders = cells(sweep_dir)
    assert len(folders) == 4
    grid = set()
    for folder in folders:
        records = [json.loads(line) for line in (folder / "cell" / "predictions.jsonl").read_text().splitlines()]
        assert [r["index"] for r in records] == [0, 1, 2]
        assert all(len(r["prompt_hash"]) == 16 and r["diagnostics"]["outro"]["sink_positions"] for r in records)
        metrics = json.loads((folder / "cell" / "metrics.json").read_text())
        assert metrics["n"] == 3
        assert metrics["accuracy"] == sum(r["correct"] for r in records) / 3
        config = yaml.safe_load((folder / "cell" / "config.yaml").read_text())
        grid.add((config["outro"]["layer"], config["outro"]["alpha"]))
        assert (folder / ".hydra" / "overrides.yaml").exists()
    assert grid == {(1, 0.1), (1, 0.3), (2, 0.1), (2, 0.3)}
    assert result.stdout.count("accuracy ") == 4


def test_one_wandb_run_per_cell(sweep):
    _, sweep_dir, _ = sweep
    runs = {}
    for folder in cells(sweep_dir):
        found = find_runs(folder / "cell")
        assert len(found) == 1, f"{folder}: {found}"
        runs[folder] = read_run(found[0])
    groups = {run.group for run in runs.values()}
    assert len(groups) == 1 and groups.pop().startswith("sweep-")
    assert len({run.run_id for run in runs.values()}) == 4
    for folder, run in runs.items():
        metrics = json.loads((folder / "cell" / "metrics.json").read_text())
        config = yaml.safe_load((folder / "cell" / "config.yaml").read_text())
        assert run.exit_code == 0
        assert run.job_type == "cell"
        assert run.config["outro"] == config["outro"]
        assert run.config["choices"]["model"] == "smollm2_135m"
        assert f"outro.alpha={config['outro']['alpha']}" in run.name
        assert f"outro.layer={config['outro']['layer']}" in run.name
        assert run.summary["accuracy"] == pytest.approx(metrics["accuracy"])
        assert run.summary["n"] == metrics["n"]


def test_secrets_never_written(sweep):
    tmp, sweep_dir, result = sweep
    needles = [value.encode() for value in SECRETS.values()]
    for folder in cells(sweep_dir):  # the secret reached the config, masked
        assert yaml.safe_load((folder / "cell" / "config.yaml").read_text())["note"] == "token ***"
    files = [p for p in tmp.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a credential leaked into {path}"
    for needle in needles:
        assert needle.decode() not in result.stdout + result.stderr
