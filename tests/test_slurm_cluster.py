"""The single-node SLURM cluster of launchers/slurm_up.sh works: scheduling, srun, job
arrays, accounting (sacct), requeue, and submitit job arrays on it.

Each test takes seconds; the first use on a fresh machine installs the Debian packages
(see tests/slurm_cluster.py). Skipped, with the reason, where the cluster cannot run.
"""

from __future__ import annotations

import pytest

from tests.slurm_cluster import parse_sacct_states, slurm_cluster  # noqa: F401


def test_parse_sacct_states():
    text = "12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4%2]|PENDING\n13|RUNNING\n13.batch|RUNNING\n"
    assert parse_sacct_states(text) == {
        "0": "COMPLETED",
        "1": "CANCELLED",
        "2": "PENDING",
        "3": "PENDING",
        "4": "PENDING",
        "13": "RUNNING",
    }


@pytest.mark.cluster
def test_node_idle_in_sinfo(slurm_cluster):
    state = slurm_cluster.wait_until(lambda: slurm_cluster.node_state() == "idle", timeout=60, what="node idle")
    assert state
    out = slurm_cluster.run("sinfo", "-h", "-o", "%P %a %D %t %N").stdout.split()
    assert out == ["debug*", "up", "1", "idle", "localhost"]


@pytest.mark.cluster
def test_sbatch_wait_srun_completes(slurm_cluster, tmp_path):
    out = tmp_path / "job-%j.out"
    job = slurm_cluster.sbatch("--wait", "-o", str(out), "--wrap", "srun hostname", cwd=tmp_path, timeout=120)
    assert (tmp_path / f"job-{job}.out").read_text().strip()  # srun ran hostname
    states = slurm_cluster.wait_until(
        lambda: (s := slurm_cluster.sacct_states(job)) == {job: "COMPLETED"} and s, timeout=30, what="sacct COMPLETED"
    )
    assert states == {job: "COMPLETED"}


@pytest.mark.cluster
def test_array_of_three_completes(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch(
        "--wait", "--array=0-2", "-o", str(tmp_path / "%A_%a.out"), "--wrap", "echo task=$SLURM_ARRAY_TASK_ID",
        cwd=tmp_path, timeout=120,
    )
    want = {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    slurm_cluster.wait_until(lambda: slurm_cluster.sacct_states(job) == want, timeout=30, what="3 COMPLETED tasks")
    for i in range(3):
        assert (tmp_path / f"{job}_{i}.out").read_text().strip() == f"task={i}"


@pytest.mark.cluster
def test_requeue_runs_the_job_again(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("--requeue", "-o", str(tmp_path / "%j.out"), "--wrap", "sleep 30", cwd=tmp_path)
    try:
        slurm_cluster.wait_until(
            lambda: slurm_cluster.job_fields(job).get("JobState") == "RUNNING", timeout=30, what="job running"
        )
        slurm_cluster.run("scontrol", "requeue", job)
        # back to PENDING (BeginTime = cred_expire + 1 s), then RUNNING again as attempt 2
        fields = slurm_cluster.wait_until(
            lambda: (f := slurm_cluster.job_fields(job)).get("JobState") == "RUNNING" and f.get("Restarts") == "1" and f,
            timeout=60,
            what="the requeued job running again with Restarts=1",
        )
        assert fields["Restarts"] == "1"
        # sacct -D keeps both attempts: the first REQUEUED, the second RUNNING
        def attempts():
            return slurm_cluster.run("sacct", "-j", job, "-D", "-X", "-n", "-P", "-o", "JobID,State").stdout.split()

        want = [f"{job}|REQUEUED", f"{job}|RUNNING"]
        slurm_cluster.wait_until(lambda: attempts() == want, timeout=30, what=f"sacct -D showing {want}")
    finally:
        slurm_cluster.run("scancel", job, check=False)
    slurm_cluster.wait_until(
        lambda: slurm_cluster.sacct_states(job).get(job) == "CANCELLED", timeout=30, what="job cancelled"
    )


@pytest.mark.cluster
def test_submitit_map_array(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")

    def square_plus(x, y):  # a local function: cloudpickle ships it by value
        return x * x + y

    with slurm_cluster.environ():
        executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
        executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, slurm_array_parallelism=3)
        jobs = executor.map_array(square_plus, [1, 2, 3], [10, 20, 30])
        assert len(jobs) == 3 and len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array job
        results = [job.result() for job in jobs]
        assert results == [11, 24, 39]

        def all_completed():  # submitit reads the states with sacct
            states = [j.get_info(mode="force").get("State") for j in jobs]
            return states if states == ["COMPLETED"] * 3 else None

        states = slurm_cluster.wait_until(all_completed, timeout=30, what="submitit states COMPLETED")
    assert states == ["COMPLETED"] * 3
    assert all(j.state == "COMPLETED" for j in jobs)
    array_id = jobs[0].job_id.split("_")[0]
    assert slurm_cluster.sacct_states(array_id) == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
