"""One sweep cell, start to finish: validate, load, predict, score, log.

Everything that can be checked without the model is checked before it loads, so a typo
in a sweep costs seconds, not a model load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.video_base import VideoBenchmark
from outro_sweep.cell.store import CellStore
from outro_sweep.predict.distributed import process_rank
from outro_sweep.errors import ConfigError
from outro_sweep.cell.identity import cell_identity
from outro_sweep.cell.interruption import interrupted
from outro_sweep.cell.interruption import watch as watch_for_interruption
from outro_sweep.interventions.settings import check_rotate_decode, check_strengths, relaxation_layers
from outro_sweep.scoring.judge import judge_summary
from outro_sweep.scoring.metrics import summarise, write_json_atomic, write_jsonl_atomic
from outro_sweep.models.video_lm import VideoLMLoader
from outro_sweep.cell.redaction import redact
from outro_sweep.scoring.open_answers import nextoe_score, wordnet_similarity
from outro_sweep.cell.tracking import MODES, CellRun
from outro_sweep.media.cache import FrameCache
from outro_sweep.media.decode import missing_videos_message

log = logging.getLogger(__name__)


def build(node: DictConfig, **kwargs):
    """``instantiate`` that lets our one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def wandb_group_and_name(cfg: DictConfig) -> tuple[str, str]:
    """(W&B group, W&B name): the sweep this cell belongs to and the cell's own overrides."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = "sweep-" + "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    else:
        group = "run-" + "_".join(Path(hydra_cfg.runtime.output_dir).parts[-2:])
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in excluded]
    return group, ",".join(overrides) or "defaults"


def resolved_config(cfg: DictConfig) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    config["choices"] = {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
    return redact(config)


def run_cell(cfg: DictConfig) -> dict:
    """One cell, start to finish; returns its metrics (also when skipped as done). Every
    process of a multi-process cell runs this; only rank 0 writes results and logs to W&B."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    rank = process_rank()
    config = resolved_config(cfg)
    store = CellStore(cfg.paths.output_dir, cell_identity(config))
    force, dry_run = bool(cfg.get("force", False)), bool(cfg.get("dry_run", False))
    if dry_run:
        return dry_run_line(store, job_dir)
    if store.state() == "done" and not force:
        metrics = json.loads(store.metrics.read_text())
        if rank == 0:
            store.link_from(job_dir)
            write_status(job_dir, store, "skipped")
            print(f"skip {store.identity}: {store.describe()} -> {store.dir}", flush=True)
        return metrics
    if rank == 0:
        store.prepare(force)
        store.link_from(job_dir)
    watch_for_interruption()
    try:
        metrics = _run_checked(cfg, config, store, job_dir, rank)
    except BaseException as err:
        # Interrupted (requeue, preemption, time limit): not failed; its shards resume it.
        if rank == 0 and not isinstance(err, (KeyboardInterrupt, SystemExit)) and not interrupted():
            store.mark_failed(err, job_log(job_dir))
            write_status(job_dir, store, "failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    if rank == 0:
        write_status(job_dir, store, "succeeded")
    return metrics


def _run_checked(cfg: DictConfig, config: dict, store: CellStore, job_dir: Path, rank: int) -> dict:
    # ---- checks that need no model -------------------------------------------------------
    if cfg.logger.mode not in MODES:
        raise ConfigError(f"logger.mode={cfg.logger.mode!r} is invalid: valid values are {', '.join(MODES)}")
    if not isinstance(cfg.predict.batch_size, int) or cfg.predict.batch_size < 1:
        raise ConfigError(f"predict.batch_size={cfg.predict.batch_size!r} is invalid: valid values are integers >= 1")
    if cfg.outro.enabled:
        check_strengths(cfg.outro.alpha, cfg.outro.temperature)
        check_rotate_decode(cfg.outro.rotate_decode)
    benchmark = build(cfg.benchmark)
    questions = benchmark.load()
    loader = build(cfg.model)
    video = isinstance(benchmark, VideoBenchmark)
    check_pairing(cfg, video, loader)
    wups = None
    if video:
        check_videos_present(benchmark, questions)
        wups = wups_scorer() if benchmark.open_metric == "wups" else None
    judge = build_judge(cfg)
    rule = build(cfg.sink)
    if cfg.outro.enabled:
        layer = cfg.outro.layer
        relaxation_layers(OmegaConf.to_object(layer) if OmegaConf.is_config(layer) else layer, loader.num_layers())
        rule.configure(loader.sink_dims)
    config = dict(config, identity=store.identity)
    if judge is not None:
        config["judge_identity"] = judge.identity()  # who graded, with which exact prompt
    if rank == 0:
        (store.dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    log.info("cell %s: %d questions from %s", store.identity, len(questions),
             cfg.benchmark._target_.rsplit(".", 1)[-1])

    # ---- the run ---------------------------------------------------------------------------
    group, name = wandb_group_and_name(cfg)
    tracker = None
    if cfg.logger.mode != "disabled" and rank == 0:
        # run id = the cell's identity: a requeued or re-run cell continues its own run.
        tracker = CellRun(mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                          group=group, name=name, config=config, directory=store.dir, tags=cfg.logger.tags,
                          run_id=store.identity)
    try:
        # Imported here, after every check: torch/transformers/lightning take seconds to import.
        from outro_sweep.predict.run import predict_cell, predict_video_cell

        if video:
            cache = FrameCache(Path(cfg.paths.cache_dir) / "frames")
            records, seconds, cosines = predict_video_cell(cfg, questions, benchmark, loader, rule,
                                                           store.predictions, cache, wups)
        else:
            records, seconds, cosines = predict_cell(cfg, questions, benchmark, loader, rule, store.predictions)
        if records is None:  # not rank 0 of a multi-process cell: rank 0 merges, scores and logs
            return {}
        if judge is not None:
            records = judge.judge(records)
            write_jsonl_atomic(store.predictions, records)  # the judged records replace the file whole
        metrics = summarise(records, seconds, cosines)
        if video:
            metrics["skipped_missing"] = benchmark.skipped_missing
        if judge is not None:
            metrics.update(judge_summary(records), judge=judge.identity())
        write_json_atomic(store.metrics, metrics)  # written only once every sample is in
        store.mark_done(metrics)  # last: a cell with DONE is complete
        if tracker is not None:
            tracker.finish(metrics, records if cfg.logger.log_predictions else None)
    except BaseException:
        if tracker is not None and not interrupted():
            tracker.fail()  # (an interrupted cell's run is continued by the requeued task)
        raise
    extra = f", video errors={metrics['errors']}, skipped missing={metrics['skipped_missing']}" if video else ""
    print(
        f"accuracy {metrics['accuracy']:.4f} (95% CI {metrics['ci_low']:.4f}-{metrics['ci_high']:.4f}, "
        f"n={metrics['n']}, invalid={metrics['invalid']}{extra}) -> {store.dir}",
        flush=True,
    )
    return metrics


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
    payload = {"identity": store.identity, "status": status, "cell": str(store.dir), **extra}
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job_dir / "status.json", payload)


def build_judge(cfg: DictConfig):
    """The LLM judge of judge=llm (its model loader built, not loaded), or None."""
    if not cfg.judge.enabled:
        return None
    for key in ("path",):
        if key in cfg.judge.model and OmegaConf.is_missing(cfg.judge.model, key):
            raise ConfigError(f"judge.model.{key} is required for the judge's model: a local folder or a cached hub id")
    return build(cfg.judge)


def check_pairing(cfg: DictConfig, video: bool, loader) -> None:
    """A video benchmark needs a video model, a text benchmark a text model."""
    choices = HydraConfig.get().runtime.choices
    is_video_model = isinstance(loader, VideoLMLoader)
    if video and not is_video_model:
        raise ConfigError(
            f"benchmark={choices.get('benchmark')} is a video benchmark and model={choices.get('model')} reads "
            f"text only: valid values are the video models {', '.join(video_model_choices())}"
        )
    if not video and is_video_model:
        raise ConfigError(
            f"benchmark={choices.get('benchmark')} has no videos and model={choices.get('model')} is a video model: "
            "valid values are the video benchmarks (conf/benchmark/), or a text model"
        )


def video_model_choices() -> list[str]:
    """conf/model/*.yaml whose loader is a video model (for the pairing error)."""
    import importlib

    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml")):
        target = OmegaConf.load(path).get("_target_", "")
        module, _, name = target.rpartition(".")
        try:
            if issubclass(getattr(importlib.import_module(module), name), VideoLMLoader):
                found.append(path.stem)
        except (ImportError, AttributeError, TypeError):
            continue
    return found


def check_videos_present(benchmark: VideoBenchmark, questions: list) -> None:
    """Every question's video must exist (skip_missing=true already dropped the absent ones)."""
    missing = benchmark.missing_videos(questions)
    if missing:
        names = list(dict.fromkeys(q.video for q in missing))
        total = len({q.video for q in questions})
        raise ConfigError(missing_videos_message(names, total, benchmark.video_dir))
    if benchmark.skipped_missing:
        log.warning("benchmark.skip_missing=true: skipped %d questions whose video is absent from %s",
                    benchmark.skipped_missing, benchmark.video_dir)


def wups_scorer():
    """NExT-OE's score for one answer (WUPS@0, exact match for DC/DB); fails before any model loads
    when WordNet is not available."""
    similarity = wordnet_similarity()

    def score(prediction: str, references, qtype: str) -> float:
        return nextoe_score(prediction, references, qtype, alpha=0.0, similarity=similarity)

    return score
