"""Telling an interrupted cell from a failed one.

Under submitit, SLURM announces the end of a task with a signal: SIGUSR2 before the time limit
or on preemption (submitit's handler then checkpoints, requeues the task and exits), SIGTERM
when the task is requeued or cancelled from outside (submitit's handler ignores it; SIGKILL
follows). The same signal reaches every process of the task, so helpers such as the W&B
service die with it and the cell's code may raise an unrelated-looking error on its way out
("Connection lost").

Such a cell has not failed: its shards are intact and the requeued task resumes from them. So
the cell must not write a FAILED marker or a result, and must not mark its W&B run failed.
``watch()`` chains a flag onto submitit's own handlers; ``interrupted()`` reads it.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)
_INTERRUPTED = threading.Event()
_WATCHED = (signal.SIGTERM, signal.SIGUSR2)


def watch() -> None:
    """Note SIGTERM/SIGUSR2 before submitit's handler runs. Only where a handler is installed
    (a submitit task): a plain run keeps Python's default behaviour."""
    for signum in _WATCHED:
        previous = signal.getsignal(signum)
        if not callable(previous) or getattr(previous, "_outro_chained", False):
            continue

        def handler(number, frame, previous=previous):
            _INTERRUPTED.set()
            log.warning("received %s: the task is being requeued or stopped", signal.Signals(number).name)
            previous(number, frame)

        handler._outro_chained = True
        signal.signal(signum, handler)


def interrupted() -> bool:
    """True once this process was told to stop (requeue, preemption, time limit, scancel)."""
    return _INTERRUPTED.is_set()
