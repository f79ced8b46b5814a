"""The user's sweep on a real SLURM cluster, through hydra/launcher=slurm (submitit).

The cluster is started by the test set-up (tests/slurm_cluster.py runs launchers/slurm_up.sh:
munge, slurmctld, slurmd, slurmdbd with MariaDB, so sacct reports job states) and stopped at
the end. Cells use a tiny random Llama with SmolLM2's tokenizer (fast) or the real SmolLM2
(slow enough to requeue mid-cell). W&B runs offline; the run files are decoded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster
# One CPU per cell on the 2-core test node; the node's memory is not a consumed resource.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=30"]


def submit(cluster, args: list[str], output_dir: Path, sweep_dir: Path, wait: bool = True):
    """``python -m outro_sweep -m hydra/launcher=slurm ...`` as the user types it (it waits for the array)."""
    env = {**cluster.env, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "outro_sweep", "-m", *SLURM, *args, f"paths.output_dir={output_dir}",
           f"hydra.sweep.dir={sweep_dir}"]
    if wait:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def array_job_ids(sweep_dir: Path) -> set[str]:
    """SLURM job ids of the arrays submitit submitted (its folders are named <job>_<task>)."""
    folder = sweep_dir / ".submitit"
    # (submitit first writes into a folder literally named "%j"; only numeric names are jobs)
    return {p.name.split("_")[0] for p in folder.iterdir() if p.name[:1].isdigit()} if folder.is_dir() else set()


def cells(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "cells").iterdir()) if (output_dir / "cells").is_dir() else []


def records(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]


def tiny_args(tiny_model_dir: Path) -> list[str]:
    return ["model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark.limit=3", "benchmark.scoring=logits",
            "outro.layer=1,2", "outro.alpha=0.1,0.3", "logger.mode=offline",
            "baseline=false"]  # the user's 2x2 form exactly (the baseline cell is tested elsewhere)


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, tiny_model_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("slurm_sweep")
    started = time.monotonic()
    first = submit(slurm_cluster, tiny_args(tiny_model_dir), out, out / "sweep1")
    seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    second = submit(slurm_cluster, tiny_args(tiny_model_dir), out, out / "sweep2")
    return {"out": out, "first": first, "second": second, "seconds": seconds}


def test_2x2_sweep_is_one_job_array_of_4_completed_tasks(slurm_sweep, slurm_cluster):  # noqa: F811
    sweep_dir = slurm_sweep["out"] / "sweep1"
    (job_id,) = array_job_ids(sweep_dir)
    states = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(job_id)) and len(s) == 4 and set(s.values()) == {"COMPLETED"} and s,
        timeout=60, what=f"sacct to show 4 COMPLETED tasks of job {job_id}")
    assert sorted(states) == ["0", "1", "2", "3"]
    assert "sweep: 4 succeeded, 0 skipped (already done), 0 failed, of 4 cells" in slurm_sweep["first"].stdout
    print(f"2x2 SLURM sweep: {slurm_sweep['seconds']:.1f} s from submit to summary")


def test_4_complete_cells_and_4_wandb_runs(slurm_sweep):
    found = cells(slurm_sweep["out"])
    assert len(found) == 4
    grid = set()
    run_ids = set()
    for cell in found:
        assert (cell / "DONE").is_file() and not (cell / "FAILED").exists()
        assert [r["index"] for r in records(cell)] == [0, 1, 2]
        config = (cell / "config.yaml").read_text()
        grid.add(next(line for line in config.splitlines() if line.startswith("  alpha:")))
        (run_file,) = find_runs(cell)
        run = read_run(run_file)
        assert run.exit_code == 0 and run.run_id == cell.name
        run_ids.add(run.run_id)
    assert len(run_ids) == 4 and len(grid) == 2


def test_rerun_of_a_finished_sweep_submits_nothing(slurm_sweep):
    second = slurm_sweep["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "sweep: 0 succeeded, 4 skipped (already done), 0 failed, of 4 cells" in second.stdout
    assert array_job_ids(slurm_sweep["out"] / "sweep2") == set()  # no job array at all
    for cell in cells(slurm_sweep["out"]):
        assert len(find_runs(cell)) == 1


def test_a_failing_cell_on_slurm_leaves_the_others_complete(slurm_cluster, tiny_model_dir, broken_model_dir,
                                                           tmp_path):  # noqa: F811
    broken = broken_model_dir
    result = submit(slurm_cluster, ["model=hf_causal_lm", f"model.path={tiny_model_dir},{broken}", "benchmark.limit=2",
                                    "benchmark.scoring=logits", "outro.layer=1", "logger.mode=offline",
                                    "baseline=false"],
                    tmp_path, tmp_path / "sweep")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 1 succeeded, 0 skipped (already done), 1 failed, of 2 cells" in result.stdout
    states = {cell.name: ((cell / "DONE").exists(), (cell / "FAILED").exists()) for cell in cells(tmp_path)}
    assert sorted(states.values()) == [(False, True), (True, False)]
    failed = next(cell for cell in cells(tmp_path) if (cell / "FAILED").exists())
    marker = json.loads((failed / "FAILED").read_text())
    assert marker["log"] and Path(marker["log"]).is_file()
    (run_file,) = find_runs(failed)
    assert read_run(run_file).exit_code == 1


@pytest.mark.parametrize("interrupt", ["scontrol_requeue", "time_limit_signal"])
def test_requeued_task_resumes_and_counts_every_sample_once(slurm_cluster, tmp_path, interrupt):  # noqa: F811
    """The real SmolLM2 answers 16 questions one per batch; once two batches are in, the task is
    interrupted (far from its end, so it cannot finish during SLURM's kill wait):

    * ``scontrol_requeue``: an operator (or a preempting job) requeues it;
    * ``time_limit_signal``: it gets SIGUSR2, the signal SLURM sends ``signal_delay_s`` before the
      time limit; submitit then checkpoints (hydra-submitit-launcher's ``checkpoint``) and
      requeues the task itself, the path a real timeout takes.

    It restarts, resumes from its shards and completes."""
    args = ["outro.alpha=1.0", "baseline=false", "benchmark.limit=16", "predict.batch_size=1",
            "benchmark.max_new_tokens=8",
            "logger.mode=offline"]
    process = submit(slurm_cluster, args, tmp_path, tmp_path / "sweep", wait=False)
    try:
        shard_dir = slurm_cluster.wait_until(
            lambda: next(iter(tmp_path.glob("cells/*/shards")), None), timeout=300, what="the cell to start")
        slurm_cluster.wait_until(lambda: len(list(shard_dir.glob("*.jsonl"))) >= 2, timeout=300,
                                 what="two finished batches")
        assert not (shard_dir.parent / "DONE").exists(), "the cell finished before it could be requeued"
        (job_id,) = array_job_ids(tmp_path / "sweep")
        if interrupt == "scontrol_requeue":  # (a one-cell sweep is a plain job, not an array)
            slurm_cluster.run("scontrol", "requeue", job_id)
        else:  # to the job's processes, not the batch shell: submitit's handler runs in python
            slurm_cluster.run("scancel", "--signal=USR2", job_id)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    if process.returncode != 0:  # say everything that explains it: the task logs and every attempt's state
        task_logs = "".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                            for p in sorted((tmp_path / "sweep" / ".submitit").rglob("*.*")) if p.suffix in (".out", ".err"))
        attempts = slurm_cluster.run("sacct", "-j", job_id, "-D", "-n", "-P", "-o", "JobID,State,Start,End",
                                     check=False).stdout
        pytest.fail(f"sweep exited {process.returncode}\n{stdout[-2000:]}\n{stderr[-3000:]}\n{attempts}\n{task_logs}")
    assert "sweep: 1 succeeded" in stdout
    (cell,) = cells(tmp_path)
    assert (cell / "DONE").is_file()
    assert [r["index"] for r in records(cell)] == list(range(16))  # each sample exactly once
    slurm_cluster.wait_until(lambda: set(slurm_cluster.sacct_states(job_id).values()) == {"COMPLETED"}, timeout=60,
                             what=f"sacct to show job {job_id} COMPLETED")  # sacct trails the job by a second or two
    assert "REQUEUED" in slurm_cluster.run("sacct", "-j", job_id, "-D", "-n", "-P", "-X", "-o", "State").stdout
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "sweep").rglob("*.log"))
    logs += "".join(p.read_text(errors="replace") for p in (tmp_path / "sweep" / ".submitit").rglob("*.out"))
    resumed = [line for line in logs.splitlines() if "resumed +" in line]
    assert any(not line.split("predictions: ")[1].startswith("0 resumed") for line in resumed), resumed
    runs = [read_run(path) for path in find_runs(cell)]
    # Each attempt writes its own offline file under the same run id (wandb sync merges them into
    # one run); the requeued attempt's file can be cut off before its first record, so only the
    # ids that were written are compared.
    assert {run.run_id for run in runs if run.run_id} == {cell.name}
    assert any(run.run_id == cell.name and run.exit_code == 0 for run in runs)
