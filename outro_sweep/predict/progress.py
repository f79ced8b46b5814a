"""Prediction progress as log lines, for output that is not a terminal.

Lightning's progress bar redraws one terminal line; written to a file (a SLURM log, a Hydra
job log, a pipe) it shows only when prediction ends, after what may be many minutes of
silence. Where stderr is not a terminal the bar is switched off and ``ProgressLog`` logs a line
every ``every_batches`` batches or ``every_seconds`` seconds, whichever comes first, plus the
last batch: done/total batches, rate and ETA. On a terminal the live bar stays, alone.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

import lightning.pytorch as pl

log = logging.getLogger(__name__)


def live_terminal() -> bool:
    """Whether stderr (where Lightning draws its bar) is a terminal."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class ProgressLog(pl.Callback):
    def __init__(self, every_batches: int, every_seconds: float) -> None:
        self.every_batches = every_batches
        self.every_seconds = every_seconds

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.total = int(sum(trainer.num_predict_batches))  # this process's batches, every dataloader
        self.done = 0
        self.started = self.last = time.monotonic()

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done % self.every_batches and now - self.last < self.every_seconds and self.done != self.total:
            return
        self.last = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else float("inf")  # batches per second
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        log.info("predict rank %d: %d/%d batches (%.0f%%), %.2f batches/s, elapsed %s, ETA %s", trainer.global_rank,
                 self.done, self.total, 100.0 * self.done / max(self.total, 1), rate, _clock(elapsed), _clock(left))


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
