"""Where a cell's results live, and whether it is done: ``<output_dir>/cells/<identity>/``.

    config.yaml        the resolved config (credentials masked)
    shards/            one durable file per finished batch (resume reads them)
    predictions.jsonl  all records, merged by sample index, written once all are in
    metrics.json       written once all samples are in
    DONE               written last: the cell is complete (JSON: identity, time, accuracy)
    FAILED             the last attempt raised (JSON: error, traceback tail, log file)
    wandb/             the cell's W&B run (run id = identity)

The folder is keyed by identity, not by sweep, so every sweep and every re-run that contains
the same cell shares it; each Hydra job folder links to it as ``cell``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import traceback
from pathlib import Path

from outro_sweep.cell.atomic import write_json_atomic

STATES = ("new", "partial", "failed", "done")


class CellStore:
    def __init__(self, output_dir: str | os.PathLike, identity: str) -> None:
        self.identity = identity
        self.dir = Path(output_dir) / "cells" / identity

    # paths ---------------------------------------------------------------------------------
    @property
    def shards(self) -> Path:
        return self.dir / "shards"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.jsonl"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def done_marker(self) -> Path:
        return self.dir / "DONE"

    @property
    def failed_marker(self) -> Path:
        return self.dir / "FAILED"

    # state ---------------------------------------------------------------------------------
    def state(self) -> str:
        """done > failed > partial (some shards) > new."""
        if self.done_marker.is_file():
            return "done"
        if self.failed_marker.is_file():
            return "failed"
        if self.shards.is_dir() and any(self.shards.glob("*.jsonl")):
            return "partial"
        return "new"

    def describe(self) -> str:
        state = self.state()
        if state == "done":
            info = json.loads(self.done_marker.read_text())
            return f"done (accuracy {info.get('accuracy', float('nan')):.4f}, n={info.get('n')})"
        if state == "failed":
            info = json.loads(self.failed_marker.read_text())
            return f"failed ({info.get('error', '?')})"
        if state == "partial":
            return f"partial ({len(list(self.shards.glob('*.jsonl')))} prediction shards)"
        return "new"

    # transitions ---------------------------------------------------------------------------
    def prepare(self, force: bool) -> None:
        """Create the folder; ``force`` discards every earlier result of this cell first."""
        if force and self.dir.exists():
            for name in ("shards", "predictions.jsonl", "metrics.json", "DONE", "FAILED"):
                path = self.dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)

    def link_from(self, job_dir: Path) -> None:
        """``<job_dir>/cell`` -> this folder (relative, so the outputs tree can move)."""
        link = job_dir / "cell"
        target = os.path.relpath(self.dir, job_dir)
        if link.is_symlink() or link.exists():
            if link.is_symlink() and os.readlink(link) == target:
                return
            link.unlink()
        link.symlink_to(target, target_is_directory=True)

    def mark_done(self, metrics: dict) -> None:
        self.failed_marker.unlink(missing_ok=True)
        write_json_atomic(self.done_marker, {
            "identity": self.identity, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "accuracy": metrics.get("accuracy"), "n": metrics.get("n"),
        })

    def mark_failed(self, error: BaseException, log_file: Path | None) -> None:
        tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
        write_json_atomic(self.failed_marker, {
            "identity": self.identity, "failed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
            "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": "),
            "traceback_tail": tail, "log": None if log_file is None else str(log_file),
        })

