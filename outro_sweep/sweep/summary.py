"""The sweep's last line: how many cells succeeded, were skipped, failed and were running
elsewhere (locked by another process); exit code 1 if any failed or was running elsewhere.

A Hydra callback (registered in conf/config.yaml under hydra.callbacks), so it runs in the
submitting process after every launcher, local or SLURM. Each job leaves
``<job folder>/status.json`` (outro_sweep.run_cell.write_status); this reads them all, plus the
cells the sweeper skipped before launching (``skipped.json``). With ``hydra/launcher=slurm
hydra.launcher.wait=false`` the same summary and report (``finish_sweep``) come from a SLURM job
that starts after the cells' arrays have ended, and the submitting process only says where.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from outro_sweep.cell.sweep_records import BUSY_FILE, LOST_FILE, SKIPPED_FILE, SUMMARY_FILE
from outro_sweep.files.atomic import write_text_atomic
from outro_sweep.predict.distributed import process_rank
from outro_sweep.report.build import write_report
from outro_sweep.report.headline import report_line
from outro_sweep.report.verdict import VERDICT_TXT
from outro_sweep.sweep.slurm_launcher import PLACEMENT_KEYS, UNWAITED


def read_statuses(sweep_dir: Path) -> list[dict]:
    """Every job's status; a job that ended without one (its process killed: out of memory, a
    signal) counts as failed, with the reason the launcher recorded when it has one."""
    statuses = []
    for path in sorted(sweep_dir.glob("*/status.json")):
        try:
            statuses.append(json.loads(path.read_text()) | {"job": path.parent.name})
        except (OSError, json.JSONDecodeError):
            statuses.append({"job": path.parent.name, "status": "failed", "error": f"unreadable {path}"})
    lost_file = sweep_dir / LOST_FILE
    lost = {str(e["job"]): e for e in json.loads(lost_file.read_text())} if lost_file.is_file() else {}
    reported = {s["job"] for s in statuses}
    job_dirs = sorted(p for p in sweep_dir.glob("[0-9]*_*") if p.is_dir()) if sweep_dir.is_dir() else []
    for folder in job_dirs:
        if folder.name not in reported:
            entry = lost.pop(folder.name.split("_", 1)[0], {})
            statuses.append({"job": folder.name, "status": "failed",
                             "error": entry.get("error", "died without a status (killed, e.g. out of memory?)")})
    for number, entry in lost.items():  # died before its job folder existed
        statuses.append({"job": f"{number} ({' '.join(entry['overrides']) or 'defaults'})", "status": "failed",
                         "error": entry["error"]})
    return statuses


def summary_line(statuses: list[dict], jobs: int, skipped_before_launch: int = 0, busy_before_launch: int = 0) -> str:
    """``jobs``: cells launched; ``skipped_before_launch``: done cells the sweeper never launched;
    ``busy_before_launch``: cells it did not launch because another process holds them."""
    counts = Counter(s["status"] for s in statuses)
    if counts.get("dry-run"):
        states = Counter(s.get("state", "?") for s in statuses)
        listed = ", ".join(f"{states[k]} {k}" for k in ("done", "partial", "failed", "new") if states[k])
        return f"dry run: {len(statuses)} cells ({listed}); nothing was run"
    unreported = jobs - len(statuses)  # a job that died before writing its status (killed, no Python)
    failed = counts["failed"] + max(0, unreported)
    skipped = counts["skipped"] + skipped_before_launch
    busy = counts["busy"] + busy_before_launch
    running = f", {busy} running elsewhere (not done)" if busy else ""
    return (f"sweep: {counts['succeeded']} succeeded, {skipped} skipped (already done), "
            f"{failed} failed{running}, of {jobs + skipped_before_launch + busy_before_launch} cells")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if process_rank() != 0:
            # A sweep run by several processes (torchrun -m outro_sweep -m ...) runs each cell on all
            # of them, and only rank 0 writes a cell's status: rank 0 alone reports the sweep.
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not config.hydra.launcher.get("wait", True):
            # hydra/launcher=slurm with wait=false: the cells are queued, not failed; a job that
            # depends on the arrays runs finish_sweep once they have ended.
            line = submit_finisher(sweep_dir, str(config.logger.mode))
            if line:  # (nothing submitted: every cell was done, so the sweep is summarised here)
                print(line, flush=True)
                return
        if finish_sweep(sweep_dir, str(config.logger.mode)):
            sys.exit(1)


def finish_sweep(sweep_dir: Path, wandb_mode: str, launched: int = 0) -> int:
    """Read every job's status, write the report, print the failed cells and the sweep's last
    line (also kept in ``<sweep dir>/summary.txt``); 1 if a cell failed, never reported or was
    running elsewhere (locked by another process), else 0.

    Runs in the submitting process once the launcher has waited for every cell, or in the job
    that depends on the SLURM arrays (``hydra.launcher.wait=false``). ``launched``: cells
    submitted (a cell cancelled before it started has no job folder to count)."""
    statuses = read_statuses(sweep_dir)
    jobs = max(launched, len(statuses),
               len([p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:1].isdigit()]) if sweep_dir.is_dir() else 0)
    skipped_file = sweep_dir / SKIPPED_FILE
    skipped = len(json.loads(skipped_file.read_text())) if skipped_file.is_file() else 0
    busy_file = sweep_dir / BUSY_FILE
    busy = len(json.loads(busy_file.read_text())) if busy_file.is_file() else 0
    write_sweep_report(sweep_dir, statuses, wandb_mode)
    lines = [f"failed: {status['job']}: {status.get('error')}" if "identity" not in status  # died without a status
             else f"failed: {status['job']} cell {status.get('identity')}: {status.get('error')} "
                  f"(marker {status.get('cell')}/FAILED)"
             for status in statuses if status["status"] == "failed"]
    lines.append(summary_line(statuses, jobs, skipped, busy))  # the sweep's last line
    for line in lines:
        print(line, flush=True)
    if sweep_dir.is_dir():
        write_text_atomic(sweep_dir / SUMMARY_FILE, "\n".join(lines) + "\n")
    return int(bool(busy) or any(s["status"] in ("failed", "busy") for s in statuses) or len(statuses) < jobs)


def write_sweep_report(sweep_dir: Path, statuses: list[dict], wandb_mode: str) -> None:
    """The comparison report (outro_sweep.report) of a sweep that ran cells, logged to W&B the way
    the cells were (``logger.mode``); never fails the sweep."""
    if any(s["status"] == "dry-run" for s in statuses):
        return
    try:
        out = write_report([sweep_dir], wandb_mode=wandb_mode)
        # One line per compared cell (its answer), then the one line that says where the report is.
        verdicts = (out / VERDICT_TXT).read_text().splitlines() if (out / VERDICT_TXT).is_file() else []
        for line in [*verdicts, report_line(out)]:
            print(line, flush=True)
    except Exception as err:  # a report problem must not turn a finished sweep into a failed one
        print(f"report: not written ({type(err).__name__}: {err}); run python -m outro_sweep.report {sweep_dir}",
              flush=True)


def submit_finisher(sweep_dir: Path, wandb_mode: str) -> str | None:
    """Submit the job that summarises the sweep once every array submitted without waiting has
    ended; the line to print, or None when this process submitted no cell for ``sweep_dir``."""
    pending = UNWAITED.pop(str(sweep_dir), None)
    if pending is None:
        return None
    import submitit

    launcher, arrays = pending["launcher"], pending["arrays"]
    params = launcher.params
    # its own folder beside the cells' <job id> folders, which then name only the cells' arrays
    executor = submitit.AutoExecutor(cluster="slurm", folder=sweep_dir / ".submitit" / "summary" / "%j")
    executor.update_parameters(
        name=f"{params['name']}-summary", timeout_min=params["timeout_min"], cpus_per_task=1, tasks_per_node=1,
        **{f"slurm_{k}": params[k] for k in PLACEMENT_KEYS if params.get(k) is not None},
        slurm_additional_parameters=dict(params.get("additional_parameters") or {}),
        slurm_dependency="afterany:" + ":".join(arrays))
    job = executor.submit(finish_sweep_job, str(sweep_dir), wandb_mode, pending["cells"])
    kind = "array" if len(arrays) == 1 else "arrays"
    return (f"submitted {pending['cells']} cells as {kind} {', '.join(arrays)}; summary and report by job "
            f"{job.job_id} -> {sweep_dir / SUMMARY_FILE}, {sweep_dir / 'report'} (log {job.paths.stdout})")


def finish_sweep_job(sweep_dir: str, wandb_mode: str, launched: int) -> None:
    """The dependent job: the summary the watcher would have printed; the job fails (exit 1) when
    a cell failed, as the watching command would have."""
    if finish_sweep(Path(sweep_dir), wandb_mode, launched):
        sys.exit(1)
