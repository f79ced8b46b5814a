"""The files a sweep writes beside its cells' job folders (``<sweep dir>/``), read back by its
summary and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from outro_sweep.files.atomic import write_json_atomic

SKIPPED_FILE = "skipped.json"  # done cells the sweeper did not launch
PLAN_FILE = "plan.json"  # every distinct cell of the sweep (baselines included): overrides and identity
BUSY_FILE = "busy.json"  # cells not launched because another process holds their lock
LOST_FILE = "lost.json"  # launched jobs that ended without a result: job number, overrides, why
SUMMARY_FILE = "summary.txt"  # the failed cells and the sweep's last line, as printed


def record_lost(sweep_dir: Path, entries: list[dict]) -> None:
    """Add ``entries`` (``group_task.lost_cell``) to ``<sweep dir>/lost.json``."""
    if entries:
        write_json_atomic(sweep_dir / LOST_FILE, _read_lost(sweep_dir) + entries)


def _read_lost(sweep_dir: Path) -> list[dict[str, Any]]:
    path = sweep_dir / LOST_FILE
    return json.loads(path.read_text()) if path.is_file() else []
