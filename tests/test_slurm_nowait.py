"""SLURM without a watcher (``hydra.launcher.wait=false``) and sweeps larger than MaxArraySize,
on the real single-node cluster of tests/slurm_cluster.py (its MaxArraySize is
``TEST_MAX_ARRAY_SIZE``, so a sweep of MaxArraySize + 1 cells needs two arrays).

Cells use the tiny random Llama with SmolLM2's tokenizer, 2 questions each; W&B runs offline.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from outro_sweep.sweep.slurm_launcher import array_chunks
from tests.slurm_cluster import slurm_cluster  # noqa: F401
from tests.test_slurm_sweep import array_job_ids, cells, records, submit


def test_array_chunks_keep_every_index_below_max_array_size():
    assert array_chunks(5, 4) == [range(0, 4), range(4, 5)]
    assert array_chunks(8, 4) == [range(0, 4), range(4, 8)]
    assert array_chunks(3, None) == [range(0, 3)]  # no scontrol: one array, as submitit does it
    assert array_chunks(2, 0) == [range(0, 1), range(1, 2)]  # arrays disabled: one plain job per cell


def cluster_max_array_size(cluster) -> int:
    config = cluster.run("scontrol", "show", "config").stdout
    return int(next(line.split("=")[1] for line in config.splitlines() if line.startswith("MaxArraySize")))


def split_sweep_args(tiny_model_dir, cluster, alphas_from: int) -> tuple[list[str], int]:
    """A sweep of MaxArraySize + 1 tiny cells (one more than one array may hold)."""
    size = cluster_max_array_size(cluster)
    if size > 8:
        pytest.skip(f"the running cluster's MaxArraySize is {size}: a sweep larger than that is too slow here")
    alphas = ",".join(str(alphas_from + i) for i in range(size + 1))
    return (["model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark.limit=2", "benchmark.scoring=logits",
             "outro.layer=1", f"outro.alpha={alphas}", "logger.mode=offline", "baseline=false"], size + 1)


def sacct_rows(cluster, job_ids) -> list[dict]:
    """One row per task attempt (-D) of the given jobs: JobID, State, Start, End."""
    out = cluster.run("sacct", "-j", ",".join(job_ids), "-X", "-D", "-n", "-P", "-o", "JobID,State,Start,End").stdout
    return [dict(zip(("JobID", "State", "Start", "End"), line.split("|"))) for line in out.splitlines() if line]


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def assert_each_cell_ran_once(cluster, output_dir, sweep_dir, n_cells: int, max_array_size: int) -> list[dict]:
    arrays = sorted(array_job_ids(sweep_dir), key=int)  # the cells' jobs (the summary job has its own folder)
    assert len(arrays) == 2, arrays  # MaxArraySize cells, then the one left over
    rows = cluster.wait_until(
        lambda: (r := sacct_rows(cluster, arrays)) and len(r) == n_cells and all(x["State"] == "COMPLETED" for x in r)
        and r, timeout=120, what=f"sacct to show {n_cells} COMPLETED tasks of jobs {arrays}")
    # one attempt per task, and each array's indices below MaxArraySize
    assert len({row["JobID"] for row in rows}) == n_cells
    indices = [int(row["JobID"].split("_")[1]) for row in rows if "_" in row["JobID"]]
    assert indices and max(indices) < max_array_size
    found = cells(output_dir)
    assert len(found) == n_cells
    for cell in found:
        assert (cell / "DONE").is_file() and not (cell / "FAILED").exists()
        assert [r["index"] for r in records(cell)] == [0, 1]  # each question exactly once
    statuses = [json.loads(p.read_text()) for p in sweep_dir.glob("*/status.json")]
    assert sorted(s["status"] for s in statuses) == ["succeeded"] * n_cells
    return rows


@pytest.mark.cluster
def test_wait_false_returns_at_once_and_a_dependent_job_summarises(slurm_cluster, tiny_model_dir, tmp_path):  # noqa: F811
    args, n_cells = split_sweep_args(tiny_model_dir, slurm_cluster, alphas_from=1)
    sweep_dir = tmp_path / "sweep"
    started = time.monotonic()
    result = submit(slurm_cluster, [*args, "hydra.launcher.wait=false"], tmp_path, sweep_dir)
    command_s = time.monotonic() - started
    try:
        check_unwatched_sweep(slurm_cluster, args, result, command_s, tmp_path, sweep_dir, n_cells)
    finally:  # jobs left behind by a failure would go on writing into tmp_path
        submitted = sorted(array_job_ids(sweep_dir) | {p.name for p in (sweep_dir / ".submitit" / "summary").glob("[0-9]*")})
        if submitted:
            slurm_cluster.run("scancel", *submitted, check=False)


def check_unwatched_sweep(slurm_cluster, args, result, command_s, tmp_path, sweep_dir, n_cells):  # noqa: F811
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # the cells are queued or running, not finished, when the command has returned
    done_at_return = sum((cell / "DONE").exists() for cell in cells(tmp_path))
    assert done_at_return < n_cells
    line = next(x for x in result.stdout.splitlines() if x.startswith("submitted "))
    arrays = sorted(array_job_ids(sweep_dir), key=int)
    assert line.startswith(f"submitted {n_cells} cells as arrays {', '.join(arrays)}; summary and report by job ")
    report_job = line.split(" by job ")[1].split()[0]
    assert "sweep:" not in result.stdout  # no summary from the submitting process

    final = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(report_job).get(report_job)) in ("COMPLETED", "FAILED", "CANCELLED")
        and s, timeout=900, interval=2, what=f"the summary job {report_job} to end")
    assert final == "COMPLETED"
    rows = assert_each_cell_ran_once(slurm_cluster, tmp_path, sweep_dir, n_cells, cluster_max_array_size(slurm_cluster))

    summary = (sweep_dir / "summary.txt").read_text()
    assert summary.splitlines()[-1] == f"sweep: {n_cells} succeeded, 0 skipped (already done), 0 failed, of {n_cells} cells"
    report = sweep_dir / "report"
    assert (report / "table.csv").is_file(), sorted(p.name for p in report.iterdir())
    log = next((sweep_dir / ".submitit" / "summary" / report_job).glob("*_log.out")).read_text()
    report_lines = [line for line in log.splitlines() if line.endswith(str(report))]  # printed once
    assert len(report_lines) == 1 and report_lines[0].startswith("report: "), report_lines

    # the summary job started only after every task of both arrays had ended
    (job_row,) = sacct_rows(slurm_cluster, [report_job])
    last_task_end = max(when(row["End"]) for row in rows)
    assert when(job_row["Start"]) >= last_task_end
    array_s = (last_task_end - min(when(row["Start"]) for row in rows)).total_seconds()
    assert command_s < array_s, (command_s, array_s)
    print(f"wait=false: command returned in {command_s:.1f} s; the {n_cells} cells ran {array_s:.0f} s "
          f"({job_row['Start']} summary job start, last task end {last_task_end.isoformat()})")

    # a rerun has nothing to queue: no job at all, and the summary comes from the command itself
    again = submit(slurm_cluster, [*args, "hydra.launcher.wait=false"], tmp_path, tmp_path / "sweep2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[-1] == (f"sweep: 0 succeeded, {n_cells} skipped (already done), 0 failed, "
                                             f"of {n_cells} cells")
    assert not (tmp_path / "sweep2" / ".submitit").exists()


@pytest.mark.cluster
def test_wait_true_splits_a_sweep_larger_than_max_array_size(slurm_cluster, tiny_model_dir, tmp_path):  # noqa: F811
    args, n_cells = split_sweep_args(tiny_model_dir, slurm_cluster, alphas_from=11)
    sweep_dir = tmp_path / "sweep"
    result = submit(slurm_cluster, args, tmp_path, sweep_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == (f"sweep: {n_cells} succeeded, 0 skipped (already done), 0 failed, "
                                              f"of {n_cells} cells")
    assert (sweep_dir / "summary.txt").read_text().splitlines()[-1] == result.stdout.splitlines()[-1]
    assert_each_cell_ran_once(slurm_cluster, tmp_path, sweep_dir, n_cells, cluster_max_array_size(slurm_cluster))


@pytest.mark.cluster
def test_wait_false_summary_job_fails_and_names_a_failed_cell(slurm_cluster, tiny_model_dir, broken_model_dir,
                                                           tmp_path):  # noqa: F811
    broken = broken_model_dir
    sweep_dir = tmp_path / "sweep"
    result = submit(slurm_cluster, ["model=hf_causal_lm", f"model.path={tiny_model_dir},{broken}", "benchmark.limit=2",
                                    "benchmark.scoring=logits", "outro.layer=1", "logger.mode=offline", "baseline=false",
                                    "hydra.launcher.wait=false"], tmp_path, sweep_dir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]  # queued is not failed
    report_job = result.stdout.split(" by job ")[1].split()[0]
    final = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(report_job).get(report_job)) in ("COMPLETED", "FAILED", "CANCELLED")
        and s, timeout=600, interval=2, what=f"the summary job {report_job} to end")
    assert final == "FAILED"  # as the waiting command would have exited 1
    lines = (sweep_dir / "summary.txt").read_text().splitlines()
    assert lines[-1] == "sweep: 1 succeeded, 0 skipped (already done), 1 failed, of 2 cells"
    (failed,) = [line for line in lines if line.startswith("failed: ")]
    assert "broken_model" in failed
