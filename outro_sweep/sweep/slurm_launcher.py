"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher with three additions.

* **A task per cell or per group.** ``cells_per_task=cell`` (the default): one array task per
  cell, as many cells running at once as the array allows. ``cells_per_task=group``: one array
  task per group of cells (``outro_sweep.group.key``; the sweeper orders a group's cells
  consecutively), which runs them one after another in one process
  (``outro_sweep.sweep.group_task.GroupTask``) and so loads the model once for the group. A
  requeued group task skips the cells it finished and resumes the interrupted one from its shards.
* **Arrays the cluster accepts.** SLURM refuses an array index that is not below the cluster's
  ``MaxArraySize`` (slurm.conf), so a sweep with more tasks is submitted as several arrays of at
  most ``MaxArraySize`` tasks each (indices 0 .. MaxArraySize-1). The value is read once per
  process from ``scontrol show config``; without scontrol the whole sweep is one array, as
  submitit does it. ``array_parallelism`` caps the running tasks of each array.
* **No watcher** (``wait=false``). The arrays are submitted and the command returns. At the end
  of the multirun (outro_sweep.sweep.summary.SweepSummary) ONE more job is submitted, with
  ``--dependency=afterany:<array>:<array>...``: SLURM starts it once every task of every array has
  ended, whatever its state, and it runs the sweep's summary and report
  (outro_sweep.sweep.summary.finish_sweep) there. Requeues need no watcher: the requeued task
  resumes its cell by itself.

A subclass of hydra-submitit-launcher's SlurmLauncher rather than a new launcher: what each cell
runs (``__call__``: Hydra's run_job in the task) and the mapping of the config onto submitit's
parameters stay the plugin's own; only the submission (``launch``) differs.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from outro_sweep.sweep.group_task import (CellLost, CellsPerTask, cell_params, cell_results, lost_cell, per_task,
                                          submit_tasks, task_slices)

from outro_sweep.cell.sweep_records import record_lost
from outro_sweep.sweep.local_launch import register_local_launcher
from outro_sweep.sweep.plugins import PLUGIN_MODULE, register_plugin_class

log = logging.getLogger(__name__)
PLUGIN_NAME = f"{PLUGIN_MODULE}.SlurmLauncher"  # hydra.launcher._target_ (see register_launcher)
# sbatch options of the cells that also place the report job (not their GPUs, tasks or memory)
PLACEMENT_KEYS = ("partition", "account", "qos", "comment", "constraint", "exclude", "setup")


@dataclass
class SlurmConf(SlurmQueueConf):
    _target_: str = PLUGIN_NAME
    # false: submit the arrays and return; a job that depends on them writes the summary and report
    wait: bool = True
    # cell: one array task per cell; group: one array task runs a group's cells one after another
    cells_per_task: CellsPerTask = CellsPerTask.cell


# conf/hydra/launcher/slurm.yaml extends this node. Stored on import, so also in each task: a
# task unpickles the launcher (importing this module) before it composes its config again.
ConfigStore.instance().store(group="hydra/launcher", name="outro_slurm", node=SlurmConf(), provider="outro_sweep")


@functools.cache
def max_array_size() -> int | None:
    """The cluster's ``MaxArraySize`` (array indices must stay below it); None without scontrol."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else None


def array_chunks(n: int, size: int | None) -> list[range]:
    """Positions 0..n-1 (tasks) cut into consecutive arrays of at most ``size`` tasks (one array
    if None). A chunk of one task is submitted by submitit as a plain job."""
    step = n if size is None else max(1, size)
    return [range(start, min(n, start + step)) for start in range(0, n, max(1, step))]


class SlurmLauncher(SubmititSlurmLauncher):
    def __init__(self, wait: bool = True, cells_per_task: Any = CellsPerTask.cell, **params: Any) -> None:
        super().__init__(**params)  # every other key becomes a submitit parameter
        self.wait = wait
        self.cells_per_task = per_task(cells_per_task)

    def executor(self):
        """A submitit SLURM executor with the config's parameters, exactly as the plugin's
        ``launch`` builds it."""
        import submitit

        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
               keys: Sequence[str] | None = None) -> Sequence[JobReturn]:
        """Submit the jobs as arrays of tasks. ``keys``: each job's group key (the sweeper's);
        without them (a sweep of fits) every job is its own task."""
        assert self.config is not None and job_overrides
        executor = self.executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        params = cell_params(job_overrides, initial_job_idx)
        slices = task_slices(keys if keys is not None else range(len(params)), self.cells_per_task)
        jobs = []
        for chunk in array_chunks(len(slices), max_array_size()):
            jobs += submit_tasks(executor, self, params, slices[chunk.start:chunk.stop], self.cells_per_task)
        arrays = list(dict.fromkeys(job.job_id.split("_")[0] for job in jobs))
        if len(arrays) > 1:
            log.info(f"{len(jobs)} tasks in {len(arrays)} arrays ({', '.join(arrays)}): "
                     f"MaxArraySize is {max_array_size()}")
        if self.wait:
            return self._results(sweep_dir, jobs, [params[s.start:s.stop] for s in slices])
        pending = UNWAITED.setdefault(str(sweep_dir), {"launcher": self, "arrays": [], "cells": 0})
        pending["arrays"] += arrays
        pending["cells"] += len(params)
        return []  # no results: the cells are queued

    @staticmethod
    def _results(sweep_dir: Path, jobs: list, cells_of_jobs: list[list[tuple]]) -> list[JobReturn]:
        """Wait for every task; the cells' results, the cells lost by a group task in ``lost.json``."""
        results, lost = [], []
        for job, cells in zip(jobs, cells_of_jobs):
            for args, result in zip(cells, cell_results(job.results()[0])):
                if isinstance(result, CellLost):
                    lost.append(lost_cell(args, result.why))
                else:
                    results.append(result)
        record_lost(sweep_dir, lost)
        return results


# sweep dir -> the launcher, arrays and number of cells submitted without waiting, in this process
UNWAITED: dict[str, dict] = {}


def register_launcher() -> None:
    """Make ``hydra/launcher=slurm`` and ``hydra/launcher=local`` instantiable: called by the CLI
    before Hydra starts (``sweeper.register_plugin_class``)."""
    register_plugin_class(SlurmLauncher)
    register_local_launcher()
