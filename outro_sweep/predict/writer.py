"""Lightning prediction writer: each finished batch of each process becomes one durable shard.

Nothing is ever truncated or appended to: a batch's records go to their own file under the
cell's ``shards/`` folder (see ``outro_sweep.predict.shards``), written atomically, so a
killed cell keeps every batch it finished and a resumed or multi-process cell can never
count a question twice. ``predictions.jsonl`` is written from the shards at the end, scored.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter

from outro_sweep.files.masking import mask
from outro_sweep.interventions.stack import subtract_sums
from outro_sweep.predict.shards import write_shard
from outro_sweep.predict.speed import timing_delta


def _running_sums(pl_module) -> dict:
    attached = getattr(pl_module, "attached", None)
    return attached.running_sums() if attached is not None else {}


class ShardPredictionWriter(BasePredictionWriter):
    """One shard per predict batch (``write_interval="batch"``), named by the batch's first and
    last question index and this process's global rank. Each shard's header carries what the
    batch added to ``pl_module.seconds`` and to the attached interventions' running sums
    (``pl_module.attached``) and to its generate timing (``pl_module.timing``, with the machine it
    was measured on), so all can be summed over shards, processes and attempts."""

    def __init__(self, shard_dir: Path) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)
        self.written: list[Path] = []  # this process's shards of this run
        self._seconds = 0.0
        self._sums: dict = {}
        self._timing: dict = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._seconds = float(getattr(pl_module, "seconds", 0.0))
        self._sums = _running_sums(pl_module)
        self._timing = dict(getattr(pl_module, "timing", {}))

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if not prediction:
            return
        seconds = float(getattr(pl_module, "seconds", 0.0))
        sums = _running_sums(pl_module)
        timing = dict(getattr(pl_module, "timing", {}))
        delta = timing_delta(timing, self._timing)
        records = [mask(record) for record in prediction]
        self.written.append(write_shard(self.shard_dir, records, trainer.global_rank, seconds - self._seconds,
                                        subtract_sums(sums, self._sums), delta,
                                        pl_module.machine() if delta else None))
        self._seconds, self._sums, self._timing = seconds, sums, timing
