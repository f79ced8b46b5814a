"""A layer sweep of gate training is one SLURM job array (``python -m outro_sweep.fit -m
hydra/launcher=slurm lsg.layer=0,1``), on the real cluster the test set-up starts
(tests/slurm_cluster.py). The model is a tiny random Qwen2.5-VL behind the real processor;
the training questions are real NExT-QA rows over generated clips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from outro_sweep.fit.store import load_gate

from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.test_lsg_fit_cli import ENV, setup  # noqa: F401
from tests.test_slurm_sweep import SLURM, array_job_ids

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster


def fit_sweep(cluster, setup, out: Path, sweep_dir: Path) -> subprocess.CompletedProcess:  # noqa: F811
    cmd = [sys.executable, "-m", "outro_sweep.fit", "-m", *SLURM, *setup["args"], "lsg.layer=0,1", "fit.epochs=2",
           f"paths.output_dir={out}", f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=REPO, env={**ENV, **cluster.env}, capture_output=True, text=True, timeout=900)


def test_a_layer_sweep_of_fits_is_one_job_array(slurm_cluster, setup, tmp_path):  # noqa: F811
    first = fit_sweep(slurm_cluster, setup, tmp_path / "out", tmp_path / "sweep1")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1] == "fit: 2 trained, 0 already trained, 0 failed, of 2 gates"
    (job_id,) = array_job_ids(tmp_path / "sweep1")
    states = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(job_id)) and len(s) == 2 and set(s.values()) == {"COMPLETED"} and s,
        timeout=60, what=f"sacct to show 2 COMPLETED tasks of job {job_id}")
    assert sorted(states) == ["0", "1"]
    gates = sorted((tmp_path / "out" / "gates").iterdir())
    layers = sorted(load_gate(g / "gate.pt")[1]["layer"] for g in gates)
    assert layers == [0, 1]
    # the same sweep again trains nothing: each gate is found by its identity
    again = fit_sweep(slurm_cluster, setup, tmp_path / "out", tmp_path / "sweep2")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1] == "fit: 0 trained, 2 already trained, 0 failed, of 2 gates"
