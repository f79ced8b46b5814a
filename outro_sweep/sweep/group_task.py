"""One submitit task per group of cells (``hydra.launcher.cells_per_task=group``).

The sweeper hands the launchers its jobs ordered so that the cells of a group
(``outro_sweep.group.key.group_key``) are consecutive, the group's baseline first. With
``cells_per_task=group`` a launcher submits each such run of cells as ONE task, ``GroupTask``:
one process (per rank) that runs the group's cells one after another, each as its own Hydra job
exactly as the plugin's per-cell task does it (its own job number, job folder, log,
``status.json``, cell folder, markers and W&B run), so that process-level caches serve every
cell of the group. With ``cells_per_task=cell`` each task is one cell, submitted exactly as
hydra-submitit-launcher submits it (the launcher is the task's callable).

- **Failure isolation.** A cell that fails writes its FAILED marker and status and returns
  (``outro_sweep.__main__``); a cell whose job breaks before the cell starts (composition, its
  job folder) becomes ``CellLost``; either way the next cell of the group runs. Only a signal
  (``Interrupted``, submitit's requeue) or a process-wide refusal (``SystemExit``) ends the task.
- **Requeue.** submitit's checkpoint (SLURM time limit, preemption) resubmits this object as it
  is, with the results of the cells it finished: the requeued task returns those as they were,
  and runs the rest; the interrupted cell resumes from its shards.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.utils import JobReturn

log = logging.getLogger(__name__)


class CellsPerTask(enum.Enum):
    """``hydra.launcher.cells_per_task``: a task (local process, SLURM array task) per group of
    cells, or per cell."""

    group = "group"
    cell = "cell"


@dataclass(frozen=True)
class CellLost:
    """A cell of a group task that ended without a Hydra result (its job raised before or
    around the cell): ``why`` in one line, for ``lost.json``."""

    why: str


def per_task(setting: Any) -> CellsPerTask:
    """The launcher's ``cells_per_task`` (an enum member, or its name from a plain config)."""
    return setting if isinstance(setting, CellsPerTask) else CellsPerTask(str(setting))


def task_slices(keys: Sequence, cells_per_task: CellsPerTask) -> list[range]:
    """Positions of the jobs (their group keys, in launch order) cut into tasks: each run of
    consecutive equal keys (``group``), or each job alone (``cell``)."""
    if cells_per_task is CellsPerTask.cell:
        return [range(i, i + 1) for i in range(len(keys))]
    slices, start = [], 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            slices.append(range(start, end))
            start = end
    return slices


class GroupTask:
    """The submitit callable of one task: the plugin launcher's per-cell ``__call__`` for each
    of the task's cells in turn; returns one ``JobReturn`` or ``CellLost`` per cell, in order."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher
        self.finished: dict[int, JobReturn | CellLost] = {}  # job number -> result, kept across a requeue

    def __call__(self, cells: Sequence[tuple]) -> list[JobReturn | CellLost]:
        """``cells``: each cell's arguments of the launcher's ``__call__`` (overrides, job folder
        key, job number, job id, Hydra's singleton state)."""
        for args in cells:
            number = args[2]
            if number in self.finished:  # finished before a requeue
                continue
            try:
                self.finished[number] = self.launcher(*args)
            except Exception as err:  # noqa: BLE001 - this cell's job only: the next cells run
                log.exception("job %d of the group task failed outside its cell", number)
                text = str(err).strip()
                self.finished[number] = CellLost(f"failed: {text.splitlines()[-1] if text else type(err).__name__}")
        return [self.finished[args[2]] for args in cells]

    def checkpoint(self, cells: Sequence[tuple]):
        """Resubmit this task with what it has finished (submitit calls this on a requeue)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, cells)


def cell_params(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[tuple]:
    """Each job's arguments of the launcher's ``__call__``, as the plugin's ``launch`` builds them."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides

    params = []
    for number, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        params.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state()))
    return params


def submit_tasks(executor, launcher, params: list[tuple], slices: Sequence[range],
                 cells_per_task: CellsPerTask) -> list:
    """One submitit job per slice of ``params``; returns the jobs. Under ``cells_per_task=cell``
    the launcher itself is each job's callable, exactly as the plugin submits a cell (its result
    is the cell's ``JobReturn``); otherwise a ``GroupTask`` (a list, one per cell)."""
    if cells_per_task is CellsPerTask.cell:
        return executor.map_array(launcher, *zip(*(params[s.start] for s in slices)))
    return executor.map_array(GroupTask(launcher), [params[s.start:s.stop] for s in slices])


def cell_results(returned) -> list:
    """A task's result as one entry per cell (``submit_tasks``)."""
    return returned if isinstance(returned, list) else [returned]


def lost_cell(args: tuple, why: str) -> dict:
    """Say that the cell whose ``__call__`` arguments are ``args`` ended without a result (one
    line on stderr); its ``lost.json`` entry."""
    print(f"job {args[2]} ({' '.join(args[0]) or 'defaults'}) {why}", file=sys.stderr, flush=True)
    return {"job": args[2], "overrides": list(args[0]), "error": why}
