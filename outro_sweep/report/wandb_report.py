"""The report as one W&B run of the sweep's group (job_type="report"): the main table and the
category table as ``wandb.Table``s, every figure as a ``wandb.Image``, the counts in the summary.

Like the cells' runs (outro_sweep/cell/tracking.py): offline by default (no account needed; upload
later with ``wandb sync <report>/wandb/offline-run-*``), quiet settings, and
reinit="finish_previous" so that a sweep's last cell run in the same process is closed first.
With mode "online", ``cross_check`` also reads the sweep's cell runs through ``wandb.Api()``
(when reachable) and notes any whose summary accuracy disagrees with the local files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from outro_sweep.cell.tracking import keep_wandb_files_under

log = logging.getLogger(__name__)

def _cell_value(value):
    if value == "" or value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def log_report(*, mode: str, directory: Path, project: str, entity: str | None, group: str, config: dict,
               table: list[dict], columns: list[str], category_table: list[dict], category_columns: list[str],
               figures: list[Path], summary: dict) -> Path | None:
    """Create, fill and finish the report run; returns the run's local folder (None if disabled)."""
    if mode == "disabled":
        return None
    import wandb


    directory.mkdir(parents=True, exist_ok=True)
    keep_wandb_files_under(directory)  # W&B's cache and logs stay in the report folder
    run = wandb.init(
        project=project, entity=entity, group=group, name="report", job_type="report", config=config,
        dir=str(directory), mode=mode, reinit="finish_previous",
        settings=wandb.Settings(save_code=False, x_disable_stats=True, console="off", quiet=True),
    )
    try:
        payload = {"table": wandb.Table(columns=columns,
                                        data=[[_cell_value(r.get(c)) for c in columns] for r in table])}
        if category_table:
            payload["categories"] = wandb.Table(
                columns=category_columns,
                data=[[_cell_value(r.get(c)) for c in category_columns] for r in category_table])
        for path in figures:
            kind = path.name.split("_", 1)[0]
            payload[f"{kind}/{path.stem}"] = wandb.Image(str(path), caption=path.stem)
        run.log(payload)
        run.summary.update(summary)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0)
    return Path(run.dir).parent if run.dir else directory


def cross_check(*, project: str, entity: str | None, group: str, local_accuracy: dict[str, float],
                timeout: int = 15) -> list[str]:
    """Online only: compare the sweep's W&B cell runs (run id = identity) with the local numbers."""
    notes = []
    try:
        import wandb

        api = wandb.Api(timeout=timeout)
        path = f"{entity}/{project}" if entity else project
        runs = api.runs(path, filters={"group": group, "jobType": "cell"})
        seen = 0
        for run in runs:
            seen += 1
            local = local_accuracy.get(run.id)
            remote = run.summary.get("accuracy")
            if local is not None and remote is not None and abs(float(remote) - local) > 1e-9:
                notes.append(f"W&B run {run.id} reports accuracy {remote:.4f}, the local files {local:.4f}")
        notes.append(f"W&B cross-check: {seen} cell runs of group {group} read from {path}")
    except Exception as err:  # noqa: BLE001 - the report never depends on the network
        notes.append(f"W&B cross-check skipped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    return notes
