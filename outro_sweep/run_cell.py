"""One sweep cell, start to finish: check, lock, predict, score, log, mark done.

The recipe every cell follows, whatever its model, benchmark or interventions; each step is one
call into the layer that owns it (``preflight``, ``cell``, ``predict``, ``scoring``). Everything that can be checked without the model is checked before it loads
(``outro_sweep.preflight.checks``), and before the cell's folder exists. A cell that raises is
marked failed in one place (``run_cell``); an interrupted one (requeue, preemption, time
limit) is not, nor one stopped by a full or read-only disk: its shards resume it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from outro_sweep.atlas.hint import sinkless_layers_line
from outro_sweep.cell.baseline import baseline_identity
from outro_sweep.cell.identity import hash_inputs, identity_inputs
from outro_sweep.cell.store import CellBusy, CellStore, disk_fault_line
from outro_sweep.cell.tracking import open_cell_run
from outro_sweep.errors import RunError, one_line_error
from outro_sweep.files.atomic import write_json_atomic, write_text_atomic
from outro_sweep.files.masking import mask
from outro_sweep.group.counters import COUNTS, SHARING_FILE
from outro_sweep.predict.distributed import launch_id, process_rank
from outro_sweep.predict.interruption import interrupted, watch as watch_for_interruption
from outro_sweep.preflight.checks import check_cell
from outro_sweep.scoring.cell import score_cell
from outro_sweep.scoring.metrics import result_line

log = logging.getLogger(__name__)


def resolved_config(cfg: DictConfig) -> dict:
    """The cell's config.yaml: the resolved config, the group choices, its identity and its
    baseline's identity (both hashed unmasked), with credentials masked."""
    config = OmegaConf.to_container(cfg, resolve=True)
    inputs = identity_inputs(config)  # what identity_of hashes; recorded for python -m outro_sweep.cells diff
    bookkeeping = {"identity": hash_inputs(inputs), "baseline_identity": baseline_identity(config),
                   "identity_inputs": inputs}
    config["choices"] = {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
    return mask({**config, **bookkeeping})


def run_cell(cfg: DictConfig) -> dict:
    """One cell; returns its metrics (also when skipped as done). Every process of a
    multi-process cell runs this; only rank 0 takes the cell's lock, writes results and logs
    to W&B (the other ranks are part of the same job, under the lock rank 0 holds).

    Order: every model-free check (no folder exists yet, so bad input leaves no cell), then
    the lock, then the state (so of two runs started at once one runs and the other is refused,
    or finds DONE), then predict, score, the W&B summary, and DONE last."""
    started = time.perf_counter()
    job_dir, rank = Path(HydraConfig.get().runtime.output_dir), process_rank()
    config = resolved_config(cfg)
    store = CellStore(cfg.paths.output_dir, config["identity"])
    if cfg.get("dry_run", False):
        return dry_run_line(store, job_dir)
    try:
        cell = check_cell(cfg)
    except Exception as err:
        if rank == 0:
            write_status(job_dir, store, "failed", error=one_line_error(err))
        raise
    if rank != 0:
        if store.state() != "done" or cfg.get("force", False):
            store.wait_for_launch(launch_id())  # never wait for a rank 0 that was refused the cell
        return _run_locked(cfg, config, store, cell, job_dir, rank, started)
    try:
        with store.lock(launch_id()):
            return _run_locked(cfg, config, store, cell, job_dir, rank, started)
    except CellBusy as err:
        write_status(job_dir, store, "busy", error=str(err))
        raise
    except OSError as err:
        line = disk_fault_line(err)
        if line is None:
            raise
        write_status(job_dir, store, "failed", error=line)
        raise RunError(line) from None  # one line: the cause is the path and the errno


def _run_locked(cfg: DictConfig, config: dict, store: CellStore, cell, job_dir: Path, rank: int,
                started: float) -> dict:
    """``started``: ``time.perf_counter()`` when the job began this cell (its status records the
    wall seconds it took)."""
    force = bool(cfg.get("force", False))
    if store.state() == "done" and not force:
        if rank == 0:
            store.link_from(job_dir)
            write_status(job_dir, store, "skipped")
            print(f"skip {store.identity}: {store.describe()} -> {store.dir}", flush=True)
        return json.loads(store.metrics.read_text())
    if rank == 0:
        store.prepare(force)
        store.link_from(job_dir)
    watch_for_interruption()
    tracker = None
    try:
        if cell.judge is not None:
            config["judge_identity"] = cell.judge.identity()  # who graded, with which exact prompt
        log.info("cell %s: %d questions from %s", store.identity, len(cell.questions), type(cell.benchmark).__name__)
        if rank == 0 and cell.stack.needs_sink_rule:
            _log_sinkless_layers(cfg, cell)
        if rank == 0:
            write_text_atomic(store.dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
            tracker = open_cell_run(cfg.logger, config, store.dir)
        # Imported after every check: torch/transformers/lightning take seconds to import.
        from outro_sweep.predict.run import predict_cell

        shards = predict_cell(cfg, cell.questions, cell.benchmark, cell.loader, cell.rule, cell.stack, store.dir)
        if shards is None:  # not rank 0 of a multi-process cell: rank 0 scores and logs
            return {}
        metrics, records = score_cell(shards, config, store.dir, cell.judge,
                                      {"skipped_missing": cell.benchmark.skipped_missing})
        if tracker is not None:  # before DONE: a cell killed right after DONE has its W&B summary
            tracker.finish(metrics, records if cfg.logger.log_predictions else None)
            tracker = None
        store.mark_done(metrics)  # last: a cell with DONE is complete
    except BaseException as err:
        # Interrupted (requeue, preemption, time limit): not failed; the requeued task resumes
        # from the shards and continues the same W&B run. A full or read-only disk is not a
        # failure of the cell either: the next run on a writable disk completes it.
        stopped = isinstance(err, (KeyboardInterrupt, SystemExit)) or interrupted()
        if rank == 0 and not stopped and disk_fault_line(err) is None:
            store.mark_failed(err, job_log(job_dir))
            write_status(job_dir, store, "failed", error=one_line_error(err))
        if tracker is not None and not interrupted():
            try:
                tracker.fail()
            except Exception as fail_err:  # noqa: BLE001 - the cell's own error is the one to report
                log.warning("W&B run not marked failed: %s", one_line_error(fail_err))
        raise
    print(result_line(metrics, store.dir), flush=True)
    write_status(job_dir, store, "succeeded", seconds=round(time.perf_counter() - started, 3))
    return metrics


def _log_sinkless_layers(cfg: DictConfig, cell) -> None:
    """Where an atlas of the model exists: the layers an intervention acts on sinks at that the
    atlas found none at (``outro_sweep.atlas.hint``), as a warning; the cell runs regardless."""
    line = sinkless_layers_line(cfg.paths.output_dir, cfg.model.name, cell.rule.name,
                                cell.stack.layers_reading_sinks(cell.loader.num_layers()))
    if line:
        log.warning(line)


def dry_run_line(store: CellStore, job_dir: Path) -> dict:
    """``+dry_run=true``: say what this cell is and whether it is done; load nothing."""
    overrides = ",".join(HydraConfig.get().overrides.task) or "defaults"
    print(f"cell {store.identity} [{store.describe()}] {overrides}", flush=True)
    write_status(job_dir, store, "dry-run", state=store.state())
    return {}


def job_log(job_dir: Path) -> Path | None:
    """The Hydra job's own log file (where a failed cell's traceback is)."""
    path = job_dir / f"{HydraConfig.get().job.name}.log"
    return path if path.exists() else None


def write_status(job_dir: Path, store: CellStore, status: str, **extra) -> None:
    """``<job_dir>/status.json``: what this job did with its cell (read by the sweep summary)."""
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job_dir / "status.json", {"identity": store.identity, "status": status,
                                                    "cell": str(store.dir), **extra})
        write_json_atomic(job_dir / SHARING_FILE, dict(COUNTS))  # what this process computed and reused so far
    except OSError as err:  # a full or read-only job folder: the sweep counts the job as unreported
        log.warning("status.json not written: %s", disk_fault_line(err) or one_line_error(err))
