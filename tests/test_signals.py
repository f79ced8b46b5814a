"""Signals stop a cell within seconds and keep its shards; a local sweep leaves no orphan and
survives a killed cell; leaked launcher variables give one line.

Real CLI subprocesses on the real SmolLM2 (offline W&B, the default). ``scoring=generate``
with ``predict.batch_size=1`` makes every question its own batch and shard, so a run is
still predicting when the signal comes, and the rerun shows how many questions it resumed.
Each stop prints its latency: seconds from the signal to the exit of the signalled process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# One question per batch (one shard each); 2 generated tokens keep the rerun short.
LONG = ["benchmark.scoring=generate", "predict.batch_size=1", "benchmark.max_new_tokens=2",
        "trainer.enable_progress_bar=false"]
STOP_WITHIN_S = 10.0
# One process per cell (the local launcher's default runs a group's cells in one process):
# these tests stop and kill cell processes one by one.
PER_CELL = ["hydra.launcher.cells_per_task=cell"]
# Variables a launcher sets: the tests' own environment must not leak them into the runs.
_LAUNCHER_VARS = re.compile(r"^(SLURM_|SBATCH_|SRUN_|SUBMITIT_|TORCHELASTIC_|WORLD_SIZE$|RANK$|LOCAL_RANK$|"
                            r"LOCAL_WORLD_SIZE$|GROUP_RANK$|MASTER_ADDR$|MASTER_PORT$)")


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not _LAUNCHER_VARS.match(k)}
    return {**env, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO), **(extra or {})}


def _command(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={out}"]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    """In its own session, as a terminal's foreground job is: its process group is the one a
    Ctrl-C reaches."""
    return subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"no {what} after {timeout:.0f} s")


def _shards(out: Path) -> list[Path]:
    return [p for p in out.glob("cells/*/shards/*") if not p.name.startswith(".")]


def _failed_markers(out: Path) -> list[Path]:
    return list(out.glob("cells/*/FAILED"))


def _stop(process: subprocess.Popen, signum: int, group: bool = False) -> float:
    """Send ``signum`` (to the whole process group with ``group``); seconds until it exits."""
    sent = time.monotonic()
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    process.wait(timeout=120)
    return time.monotonic() - sent


def _cell_tasks(parent: subprocess.Popen) -> list[psutil.Process]:
    """The cell processes of a local sweep (submitit tasks under their job controllers)."""
    try:
        below = psutil.Process(parent.pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in below if "submitit.core._submit" in " ".join(_cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _alive(processes) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


def _using(out: Path) -> list[psutil.Process]:
    """Every live process on the machine started for this output folder (orphans included)."""
    return _alive(p for p in psutil.process_iter() if any(str(out) in arg for arg in _cmdline(p)))


def test_timeout_30_stops_a_long_single_run(tmp_path):
    """``timeout 30`` (SIGTERM) on a run of all 300 questions: it stops within seconds, keeps
    its shards, writes no FAILED marker and says how far it got. (On a loaded machine the
    model may not have finished a question by then; the tests below signal once shards exist,
    and rerun.)"""
    out, log = tmp_path / "out", tmp_path / "run.log"
    started = time.monotonic()
    process = _start(["timeout", "30", *_command(out, LONG)], log)
    process.wait(timeout=120)
    latency = time.monotonic() - started - 30
    text = log.read_text()
    print(f"timeout 30, single run: stopped {latency:.1f} s after SIGTERM")
    assert process.returncode == 124, text[-3000:]  # timeout's own code: the command was stopped by it
    assert latency < STOP_WITHIN_S, text[-3000:]
    line = re.search(r"interrupted by SIGTERM: (\d+) of 300 questions are in shards", text)
    assert line, text[-3000:]
    assert int(line.group(1)) == len(_shards(out))
    assert (out / "cells").is_dir() and len(list(out.glob("cells/*/shards"))) == 1
    assert not _failed_markers(out) and not list(out.glob("cells/*/DONE"))
    assert "Traceback" not in text


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_single_run_and_the_rerun_resumes(tmp_path, signum, code):
    out, log = tmp_path / "out", tmp_path / "run.log"
    args = [*LONG, "benchmark.limit=8"]
    process = _start(_command(out, args), log)
    _wait_until(lambda: _shards(out) or process.poll() is not None, 600, "shard")
    assert process.poll() is None, "the run ended before it could be interrupted: " + log.read_text()[-2000:]
    latency = _stop(process, signum)
    text = log.read_text()
    print(f"{signum.name}, single run: stopped {latency:.1f} s after the signal")
    assert process.returncode == code, text[-3000:]
    assert latency < STOP_WITHIN_S
    kept = len(_shards(out))
    assert f"interrupted by {signum.name}: {kept} of 8 questions are in shards" in text, text[-3000:]
    assert kept >= 1 and not _failed_markers(out)
    assert "Traceback" not in text

    rerun = subprocess.run(_command(out, args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert f"{kept} of 8 questions resumed" in output  # resumed, not predicted again
    (cell,) = out.glob("cells/*/DONE")
    assert len((cell.parent / "predictions.jsonl").read_text().splitlines()) == 8


def test_sigterm_stops_a_basic_multirun(tmp_path):
    out, log = tmp_path / "out", tmp_path / "run.log"
    process = _start(_command(out, ["-m", "outro.alpha=0.1,0.3", "baseline=false", *LONG, "benchmark.limit=8"]), log)
    _wait_until(lambda: _shards(out) or process.poll() is not None, 600, "shard")
    assert process.poll() is None, log.read_text()[-2000:]
    latency = _stop(process, signal.SIGTERM)
    text = log.read_text()
    print(f"SIGTERM, basic multirun: stopped {latency:.1f} s after the signal")
    assert process.returncode == 143, text[-3000:]
    assert latency < STOP_WITHIN_S
    assert "interrupted by SIGTERM: " in text and "rerun to resume" in text
    assert _shards(out) and not _failed_markers(out)
    assert "Traceback" not in text and "sweep: " not in text  # stopped, not summarised as finished


def _local_sweep(out: Path, log: Path, limit: int) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A two-cell local-launcher sweep, returned once both cells run and one has a shard."""
    process = _start(_command(out, ["-m", "hydra/launcher=local", *PER_CELL, "outro.alpha=0.1,0.3", "baseline=false",
                                    *LONG, f"benchmark.limit={limit}"]), log)
    tasks = _wait_until(lambda: (len(_cell_tasks(process)) == 2 and _shards(out) and _cell_tasks(process))
                        or process.poll() is not None, 600, "two running cells with a shard")
    assert process.poll() is None, log.read_text()[-2000:]
    return process, tasks


@pytest.mark.parametrize("group", [True, False], ids=["terminal-ctrl-c", "sigint-to-parent"])
def test_ctrl_c_on_a_local_sweep_leaves_no_child(tmp_path, group):
    out, log = tmp_path / "out", tmp_path / "run.log"
    process, _ = _local_sweep(out, log, limit=8)
    below = psutil.Process(process.pid).children(recursive=True)
    latency = _stop(process, signal.SIGINT, group=group)
    text = log.read_text()
    print(f"Ctrl-C ({'process group' if group else 'submitting process'}), local sweep: "
          f"stopped {latency:.1f} s after SIGINT")
    assert process.returncode == 130, text[-3000:]
    assert not _alive(below), [_cmdline(p) for p in _alive(below)]
    assert not _using(out)
    assert "interrupted by SIGINT: stopped 2 running cell processes" in text
    assert "Traceback" not in text
    assert _shards(out) and not _failed_markers(out)
    if group:  # once is enough: the rerun resumes the stopped cells
        rerun = subprocess.run(_command(out, ["-m", "hydra/launcher=local", *PER_CELL, "outro.alpha=0.1,0.3",
                                              "baseline=false", *LONG, "benchmark.limit=8"]),
                               cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
        assert len(list(out.glob("cells/*/DONE"))) == 2


def test_a_killed_local_cell_is_reported_and_the_others_finish(tmp_path):
    """SIGKILL of one cell process, as the OOM killer would: the submitting process waits for
    the other cell, names the killed one, writes the report and exits 1."""
    out, log = tmp_path / "out", tmp_path / "run.log"
    process, tasks = _local_sweep(out, log, limit=4)
    tasks[0].kill()
    process.wait(timeout=900)
    text = log.read_text()
    assert process.returncode == 1, text[-3000:]
    assert re.search(r"failed: 0_\S+: died without a status|failed: 1_\S+: died without a status", text), text[-3000:]
    assert "sweep: 1 succeeded, 0 skipped (already done), 1 failed, of 2 cells" in text
    assert re.search(r"^report: .* -> (\S+)$", text, re.M) and Path(re.search(r"^report: .* -> (\S+)$", text, re.M)[1]).is_dir()
    assert len(list(out.glob("cells/*/DONE"))) == 1
    assert "Traceback" not in text
    assert not _using(out)


@pytest.mark.parametrize("leaked", [
    {"WORLD_SIZE": "2", "RANK": "1"},  # left in the shell from a torchrun session
    {"SLURM_NTASKS": "2"},
    # What an sbatch script's batch step has (read on tests/slurm_cluster.py's cluster with
    # `#SBATCH -n 2`): srun would add SLURM_STEP_ID and set SLURM_NTASKS to the step's tasks.
    {"SLURM_NTASKS": "2", "SLURM_NPROCS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
     "SLURM_JOB_ID": "116", "SLURM_NNODES": "1", "SLURM_TASKS_PER_NODE": "2"},
], ids=["world-size", "slurm-ntasks", "sbatch-without-srun"])
def test_leaked_launcher_variables_give_one_line(tmp_path, leaked):
    out = tmp_path / "out"
    started = time.monotonic()
    result = subprocess.run(_command(out, ["benchmark.limit=4"]), cwd=REPO, env=_env(leaked), capture_output=True,
                            text=True, timeout=120)
    took = time.monotonic() - started
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    name = "WORLD_SIZE" if "WORLD_SIZE" in leaked else "SLURM_NTASKS"
    assert errors[0].startswith(f"error: {name}=2 is set but ") and "valid values are" in errors[0]
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stdout + result.stderr
    assert not (out / "cells").exists()
    print(f"leaked {' '.join(leaked)}: refused in {took:.1f} s")
