"""The last line of a fit sweep (``python -m outro_sweep.fit -m lsg.layer=3,6,10``): how many
gates were trained, were already trained, and failed; exit code 1 if any failed.

A Hydra callback (conf/fit.yaml replaces the cell sweep's summary with it), so it runs in the
submitting process after every launcher, local or SLURM. Each fit job leaves
``<job folder>/status.json`` (``write_fit_status``); a job folder without one died before it
could write it (killed: out of memory, a signal) and counts as failed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from outro_sweep.files.atomic import write_json_atomic

STATUS_FILE = "status.json"


def write_fit_status(job_dir: Path, status: str, **extra) -> None:
    """status: "trained" | "done" (found already trained) | "failed"; extra: gate, layer, error."""
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job_dir / STATUS_FILE, {"status": status, **extra})


def fit_statuses(sweep_dir: Path) -> list[dict]:
    statuses = []
    for folder in sorted(p for p in sweep_dir.glob("fit_*") if p.is_dir()):
        try:
            statuses.append(json.loads((folder / STATUS_FILE).read_text()) | {"job": folder.name})
        except (OSError, json.JSONDecodeError):
            statuses.append({"job": folder.name, "status": "failed",
                             "error": "died without a status (killed, e.g. out of memory?)"})
    return statuses


def fit_summary_line(statuses: list[dict]) -> str:
    counts = Counter(s["status"] for s in statuses)
    return (f"fit: {counts['trained']} trained, {counts['done']} already trained, {counts['failed']} failed, "
            f"of {len(statuses)} gates")


class FitSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        statuses = fit_statuses(Path(str(config.hydra.sweep.dir)))
        for status in statuses:
            if status["status"] == "failed":
                print(f"failed: {status['job']} (lsg.layer={status.get('layer')}): {status.get('error')}", flush=True)
        print(fit_summary_line(statuses), flush=True)
        if any(s["status"] == "failed" for s in statuses):
            sys.exit(1)
