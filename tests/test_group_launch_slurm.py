"""``hydra.launcher.cells_per_task=group`` on a real SLURM cluster (tests/slurm_cluster.py): one
array task per group of cells, and a group task requeued at its time limit keeps the cells it
finished and resumes the interrupted one from its shards.

The real SmolLM2 answers one question per batch (generate, 8 tokens), so a cell is still
predicting when the signal comes. W&B is off: the W&B run of a requeued cell is tested in
test_slurm_sweep.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.test_slurm_sweep import array_job_ids, records, submit

pytestmark = pytest.mark.cluster


def _job(sweep_dir: Path, number: int) -> Path | None:
    return next(iter(sweep_dir.glob(f"{number}_*")), None)


def _status(job: Path | None) -> str | None:
    path = job / "status.json" if job is not None else None
    return json.loads(path.read_text())["status"] if path is not None and path.is_file() else None


def test_one_array_task_per_group_and_a_requeued_group_resumes(slurm_cluster, tmp_path):  # noqa: F811
    """Two groups (8 and 10 questions) of two cells (OutRo and its baseline): an array of two
    tasks. Task 0 gets SIGUSR2 (SLURM's time-limit signal) once its baseline is done and its
    OutRo cell has two shards; submitit checkpoints the group task and requeues it."""
    sweep_dir = tmp_path / "sweep"
    args = ["hydra.launcher.cells_per_task=group", "outro.alpha=1.0", "benchmark.limit=8,10", "predict.batch_size=1",
            "benchmark.max_new_tokens=8", "logger.mode=disabled", "trainer.enable_progress_bar=false"]
    process = submit(slurm_cluster, args, tmp_path, sweep_dir, wait=False)
    try:
        def second_cell_started() -> Path | None:
            shards = _job(sweep_dir, 1) and _job(sweep_dir, 1) / "cell" / "shards"
            ready = (_status(_job(sweep_dir, 0)) == "succeeded" and shards and shards.is_dir()
                     and len(list(shards.glob("*.jsonl"))) >= 2)
            return shards.parent if ready else None

        cell = slurm_cluster.wait_until(second_cell_started, timeout=600, interval=0.2,
                                        what="the first group's baseline done and its OutRo cell two batches in")
        assert not (cell / "DONE").exists(), "the cell finished before it could be requeued"
        (array,) = array_job_ids(sweep_dir)
        slurm_cluster.run("scancel", "--signal=USR2", f"{array}_0")
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert "sweep: 4 succeeded, 0 skipped (already done), 0 failed, of 4 cells" in stdout
    states = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(array)) and set(s.values()) == {"COMPLETED"} and s,
        timeout=60, what=f"sacct to show array {array} COMPLETED")
    assert sorted(states) == ["0", "1"]  # two groups, two array tasks, for four cells
    assert "REQUEUED" in slurm_cluster.run("sacct", "-j", f"{array}_0", "-D", "-n", "-P", "-X", "-o", "State").stdout
    jobs = [_job(sweep_dir, n) for n in range(4)]
    assert [_status(job) for job in jobs] == ["succeeded"] * 4  # the baseline was not run again
    assert ["benchmark.limit=8" in job.name for job in jobs] == [True, True, False, False]
    baseline_log = next(jobs[0].glob("*.log")).read_text()
    assert baseline_log.count("predictions: ") == 1  # predicted once: the requeued task kept its result
    assert [r["index"] for r in records(cell)] == list(range(8))  # each sample exactly once
    resumed = [line for line in next(jobs[1].glob("*.log")).read_text().splitlines() if "resumed +" in line]
    assert any(not line.split("predictions: ")[1].startswith("0 resumed") for line in resumed), resumed
