"""Local submitit sweeps (``hydra/launcher=local``) that end cleanly, one process per group of
cells or per cell.

``hydra.launcher.cells_per_task`` (conf/hydra/launcher/local.yaml): ``group`` (the default) runs
the cells of each group (``outro_sweep.group.key``) one after another in one task process
(``outro_sweep.sweep.group_task.GroupTask``), so the process loads the model once for them;
``cell`` runs every cell in its own process. Either way each cell is its own Hydra job.

hydra-submitit-launcher's ``LocalLauncher.launch`` submits the cells, then waits with
``[j.results()[0] for j in jobs]``. Two failures follow from that wait:

- a cell process that dies without a result (killed, as by the OOM killer) raises there at
  once: the submitting process crashes with no summary or report, and the other cells run on,
  orphaned;
- Ctrl-C raises KeyboardInterrupt there: a traceback, and every cell orphaned.

``launch_local`` submits with the plugin's executor and parameters, then waits itself:

- every job is waited for; a cell without a result (its task process died before the cell
  reported its status, or its job broke outside the cell) is recorded in
  ``<sweep dir>/lost.json`` (the sweep summary names it) and the others go on;
- SIGINT or SIGTERM stops every task process: SIGTERM (a cell stops at once and keeps its
  shards, ``outro_sweep.predict.interruption``), then SIGKILL for whatever still lives after
  ``GRACE_S``; then one line, and exit 130 or 143.

Each job is a controller process (``python -m submitit.local._local``; the job id is its pid)
that starts the job's task processes and forwards SIGTERM to them. The controllers
are started with SIGINT ignored (an inherited disposition): a terminal's Ctrl-C reaches the
whole foreground process group, and a controller would answer it with a traceback and kill its
tasks after one second; the submitting process stops them instead, as above.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as SubmititLocalLauncher

from outro_sweep.cell.sweep_records import record_lost
from outro_sweep.predict.interruption import Interrupted
from outro_sweep.sweep.group_task import (CellLost, CellsPerTask, cell_params, cell_results, lost_cell, per_task,
                                          submit_tasks, task_slices)
from outro_sweep.sweep.plugins import PLUGIN_MODULE, register_plugin_class

log = logging.getLogger(__name__)
# How long stopped cells get to exit after SIGTERM, seconds: a cell stops within a few seconds,
# W&B's closing of its run included, but several at once on a loaded machine take longer.
GRACE_S = 20.0
_POLL_S = 0.5
PLUGIN_NAME = f"{PLUGIN_MODULE}.LocalLauncher"  # hydra.launcher._target_ (see register_local_launcher)


@dataclass
class LocalConf(LocalQueueConf):
    _target_: str = PLUGIN_NAME
    # group: one process runs a group's cells one after another; cell: one process per cell
    cells_per_task: CellsPerTask = CellsPerTask.group


# conf/hydra/launcher/local.yaml extends this node. Stored on import, so also in each task: a
# task unpickles the launcher (importing this module) before it composes its config again.
ConfigStore.instance().store(group="hydra/launcher", name="outro_local", node=LocalConf(), provider="outro_sweep")


class LocalLauncher(SubmititLocalLauncher):
    """The plugin's local launcher plus ``cells_per_task``; a sweep of cells is launched by
    ``launch_local`` (the sweeper calls it), anything else (a sweep of fits) by the plugin."""

    def __init__(self, cells_per_task: Any = CellsPerTask.group, **params: Any) -> None:
        super().__init__(**params)  # every other key becomes a submitit parameter
        self.cells_per_task = per_task(cells_per_task)


def register_local_launcher() -> None:
    """Make ``hydra/launcher=local`` instantiable (see slurm_launcher.register_launcher)."""
    register_plugin_class(LocalLauncher)


def launch_local(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                 keys: Sequence[str] | None = None) -> list:
    """Submit ``job_overrides`` with hydra-submitit-launcher's ``launcher`` and wait for every
    job; returns the results of the cells that produced one (Hydra's ``JobReturn``). ``keys``:
    each job's group key (the sweeper orders a group's jobs consecutively); one task per run of
    equal keys under ``cells_per_task=group``, one task per job without keys."""
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    setting = per_task(getattr(launcher, "cells_per_task", CellsPerTask.cell))
    slices = task_slices(keys if keys is not None else range(len(job_overrides)), setting)  # no keys: all distinct
    params = cell_params(job_overrides, initial_job_idx)
    stopping = (signal.SIGINT, signal.SIGTERM)
    handlers = {signum: signal.getsignal(signum) for signum in stopping}
    # Submit with SIGINT ignored, so that the controllers inherit it, and blocked, so that a
    # Ctrl-C meanwhile stays pending (Linux keeps a blocked signal even when ignored); a
    # SIGTERM meanwhile is noted. Either is acted on once every started job is known.
    pending: list[int] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda number, frame: pending.append(number))
    try:
        processes = _Jobs(_submit(launcher, params, slices, setting))
        for signum in stopping:
            signal.signal(signum, _raise_interrupted)
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C raises here
            if pending:
                raise Interrupted(pending[0])
            processes.wait()
        except Interrupted as stop:
            stopped = processes.stop()
            kind = "cell" if setting is CellsPerTask.cell else "task"
            print(f"{stop}: stopped {stopped} running {kind} process{'es' if stopped != 1 else ''} (their shards are "
                  "kept); rerun to resume", file=sys.stderr, flush=True)
            sys.exit(stop.exit_code)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    results, lost = [], []
    for job, cells in zip(processes.jobs, (params[s.start:s.stop] for s in slices)):
        try:
            if not job.paths.result_pickle.exists():  # (results() would wait for it, then raise)
                raise RuntimeError("no result")
            returned = cell_results(job.results()[0])
        except Exception as err:  # noqa: BLE001 (no result, or FailedJobError: the task raised)
            why = _why_lost(job, err)
            # a cell that reported its status before its task died is counted by that status
            returned = [None if _reported(sweep_dir, args[2]) else CellLost(why) for args in cells]
        for args, result in zip(cells, returned):
            if isinstance(result, CellLost):
                lost.append(lost_cell(args, result.why))
            elif result is not None:
                results.append(result)
    record_lost(sweep_dir, lost)
    return results


def _reported(sweep_dir: Path, number: int) -> bool:
    """Whether job ``number`` wrote its ``status.json`` (its folder is ``<number>_<name>``)."""
    return any(sweep_dir.glob(f"{number}_*/status.json"))


def _raise_interrupted(number: int, frame) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the stopping
        signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(number)


def _submit(launcher, params: list[tuple], slices: Sequence[range], setting: CellsPerTask) -> list:
    """The plugin's ``BaseSubmititLauncher.launch`` (hydra-submitit-launcher 1.2), minus its wait,
    with one task per slice of ``params``: the same executor and parameters; returns submitit's jobs."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params_of_launcher = launcher.params
    init_keys = {"max_num_timeout", "submitit_folder"}
    executor = submitit.AutoExecutor(
        cluster=launcher._EXECUTOR, folder=params_of_launcher["submitit_folder"],
        **{f"{launcher._EXECUTOR}_{k}": v for k, v in params_of_launcher.items() if k == "max_num_timeout"})
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{launcher._EXECUTOR}_{k}": v
                                  for k, v in params_of_launcher.items() if k not in init_keys})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"Submitit '{launcher._EXECUTOR}' sweep output dir : {sweep_dir} ({len(params)} cells in "
             f"{len(slices)} task{'s' if len(slices) != 1 else ''})")
    return submit_tasks(executor, launcher, params, slices, setting)


class _Jobs:
    """The submitted jobs' processes: each job's controller, and everything below it (its task
    processes, the cells, and their helpers), noted while the controller runs so that a task
    that outlives a killed controller is still waited for and stopped."""

    def __init__(self, jobs: list) -> None:
        self.jobs = jobs
        self.seen: list[set[psutil.Process]] = [set() for _ in jobs]

    def note(self) -> bool:
        """Note every job's processes; True while any job is still running."""
        running = False
        for job, seen in zip(self.jobs, self.seen):
            if job._process.poll() is None:
                try:
                    seen.update(psutil.Process(job._process.pid).children(recursive=True))
                except psutil.Error:  # the controller ended just now
                    pass
                running = True
            elif any(p.is_running() for p in seen):
                running = True
        return running

    def wait(self) -> None:
        while self.note():
            time.sleep(_POLL_S)

    def stop(self) -> int:
        """SIGTERM to every running cell process (a controller's child), SIGKILL to whatever of
        the jobs' processes still lives ``GRACE_S`` later; returns how many cells were stopped."""
        self.note()
        controllers = {job._process.pid for job in self.jobs}
        processes = [p for seen in self.seen for p in seen if p.is_running()]
        cells = [p for p in processes if _parent_pid(p) in controllers]
        for process in cells:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and (any(job._process.poll() is None for job in self.jobs)
                                               or any(p.is_running() for p in processes)):
            time.sleep(0.1)
        for process in processes:
            _signal(process, signal.SIGKILL)
        for job in self.jobs:
            job._process.kill()  # no-op for a controller that has ended
            job._process.wait()  # reap it
        return len(cells)


def _parent_pid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        if process.is_running():  # same pid and start time: never a recycled pid
            process.send_signal(signum)
    except psutil.Error:
        pass


def _why_lost(job, err: Exception) -> str:
    returncode = job._process.returncode
    if returncode is not None and returncode < 0:
        return f"killed by signal {-returncode} (its controller)"
    if not job.paths.result_pickle.exists():
        lines = job.paths.stderr.read_text(errors="replace").split("\n") if job.paths.stderr.is_file() else []
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        return f"died without a status (killed, e.g. out of memory?); last line of {job.paths.stderr}: {last[:200]}"
    return f"failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}"
