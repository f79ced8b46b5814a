"""Stopping a cell on a signal, and telling an interrupted cell from a failed one.

A cell process runs in one of two settings:

- **Under SLURM** (submitit), SLURM announces the end of a task with a signal: SIGUSR2 before
  the time limit or on preemption (submitit's handler checkpoints, requeues the task and exits),
  SIGTERM when the task is requeued or cancelled from outside (submitit's handler ignores it;
  SIGKILL follows). ``watch()`` only chains a flag onto submitit's handlers there.
- **Everywhere else** (a single run, a basic multirun, a local submitit task), SIGTERM and
  SIGINT stop the cell at once: the handler raises ``Interrupted`` in the main thread, wherever
  it is (model loading, prediction, scoring). Shards are written atomically, one per batch, so
  at most the batches in flight are lost. A local task's SIGUSR2 (its time limit) keeps
  submitit's requeue.

Either way the cell has not failed: its shards are intact and a rerun (or the requeued task)
resumes from them. So it must not write a FAILED marker or a result, and must not mark its W&B
run failed; ``interrupted()`` tells it so. Under SLURM the same signal reaches every process of
the task, so helpers such as the W&B service die with it and the cell's code may raise an
unrelated-looking error on its way out ("Connection lost"): ``interrupted()`` covers that too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from outro_sweep.predict.shards import read_shard_set

log = logging.getLogger(__name__)
_INTERRUPTED = threading.Event()
_STOPPING = (signal.SIGTERM, signal.SIGINT)
# The cell this process is predicting: (its shard folder, its number of questions), for the
# line printed when it stops.
_progress: tuple[Path, int] | None = None


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT. A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way out takes it for a failure."""

    def __init__(self, signum: int) -> None:
        self.signum = signal.Signals(signum)
        super().__init__(f"interrupted by {self.signum.name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


def _under_slurm() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def _stop(number: int, frame) -> None:
    if _INTERRUPTED.is_set():  # a second Ctrl-C must not break the first one's way out
        log.warning("received %s again: already stopping", signal.Signals(number).name)
        return
    _INTERRUPTED.set()
    raise Interrupted(number)


def _chain_flag(signum: int) -> None:
    """Note ``signum`` in ``interrupted()``, then run the handler already installed (submitit's)."""
    previous = signal.getsignal(signum)
    if not callable(previous) or getattr(previous, "_outro_chained", False):
        return

    def handler(number, frame, previous=previous):
        _INTERRUPTED.set()
        log.warning("received %s: the task is being requeued or stopped", signal.Signals(number).name)
        previous(number, frame)

    handler._outro_chained = True
    signal.signal(signum, handler)


def watch() -> None:
    """Install this process's signal handling for the cell about to run (see the module doc).
    Call it in the main thread, before the cell's checks and model loading."""
    global _progress
    _progress = None
    if _under_slurm():
        for signum in (signal.SIGTERM, signal.SIGUSR2):
            _chain_flag(signum)
        return
    for signum in _STOPPING:
        signal.signal(signum, _stop)
    # A local submitit task inherits SIGINT blocked from the submitting process (see
    # outro_sweep.sweep.local_launch); it must hear it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
    _chain_flag(signal.SIGUSR2)


def reclaim() -> None:
    """Put the stopping handler back on SIGTERM. Lightning's loops replace it with their own,
    which sets a flag that the predict loop never reads and, in a multi-process cell, runs a
    collective inside the signal handler, before calling ours; Lightning restores ours when
    the loop ends. Call from the loop's start (``on_predict_start``)."""
    if not _under_slurm() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)


def track(shard_dir: Path, questions: int) -> None:
    """Name the cell being predicted, for ``stop_line``."""
    global _progress
    _progress = (Path(shard_dir), questions)


def stop_line(stop: Interrupted) -> str:
    """The one line an interrupted cell prints, e.g. "interrupted by SIGTERM: 12 of 40 questions
    are in shards; rerun to resume"."""
    if _progress is None:
        return f"{stop}: no question was predicted yet; rerun to resume"

    shard_dir, total = _progress
    try:
        done = len(read_shard_set(shard_dir).indices)
    except Exception as err:  # noqa: BLE001 (the line must come out; the rerun reads the shards again)
        return f"{stop}: the shards in {shard_dir} could not be counted ({err}); rerun to resume"
    return f"{stop}: {done} of {total} questions are in shards ({shard_dir}); rerun to resume"


def interrupted() -> bool:
    """True once this process was told to stop (requeue, preemption, time limit, scancel,
    SIGTERM, Ctrl-C)."""
    return _INTERRUPTED.is_set()
