"""One Weights & Biases run per sweep cell.

The cell owns the run (not Lightning's WandbLogger): the run must exist before the model
loads, and must be marked failed, not finished, when anything in the cell raises.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


class CellRun:
    """Start with ``CellRun(...)``; end with ``finish(metrics, records)`` or ``fail()``."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 config: dict, directory: Path, tags: list[str], run_id: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            # A stable id (the cell's identity) with resume="allow": a requeued or re-run cell
            # continues its own run instead of starting a second one.
            id=run_id,
            resume="allow" if run_id else None,
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type="cell",
            tags=list(tags),
            config=config,
            dir=str(directory),
            mode=mode,
            # A sweep runs many cells in one process: never log two cells into one run.
            reinit="finish_previous",
            settings=wandb.Settings(save_code=False, x_disable_stats=True, console="off", quiet=True),
        )
        if mode == "offline":
            log.info("W&B offline run in %s (upload later with `wandb sync`)", self.run.dir)

    def finish(self, metrics: dict, records: list[dict] | None) -> None:
        self.run.summary.update(_flatten("", metrics, {}))
        if records:
            columns = ["index", "id", "prompt_hash", "category", "output", "prediction", "target", "valid", "correct"]
            table = self._wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in records])
            self.run.log({"predictions": table})
        self.run.finish(exit_code=0)

    def fail(self) -> None:
        self.run.finish(exit_code=1)
