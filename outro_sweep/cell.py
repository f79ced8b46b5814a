"""One sweep cell, start to finish: validate, load, predict, score, log.

Everything that can be checked without the model is checked before it loads, so a typo
in a sweep costs seconds, not a model load.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.video_base import VideoBenchmark
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.settings import check_strengths, relaxation_layers
from outro_sweep.judge import judge_summary
from outro_sweep.metrics import summarise, write_json_atomic, write_jsonl_atomic
from outro_sweep.models.video_lm import VideoLMLoader
from outro_sweep.redaction import redact
from outro_sweep.scoring_open import nextoe_score, wordnet_similarity
from outro_sweep.tracking import MODES, CellRun
from outro_sweep.video.cache import FrameCache
from outro_sweep.video.decode import missing_videos_message

log = logging.getLogger(__name__)


def build(node: DictConfig, **kwargs):
    """``instantiate`` that lets our one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def cell_identity(cfg: DictConfig) -> tuple[str, str]:
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
    cell_dir = Path(HydraConfig.get().runtime.output_dir)
    # ---- checks that need no model -------------------------------------------------------
    if cfg.logger.mode not in MODES:
        raise ConfigError(f"logger.mode={cfg.logger.mode!r} is invalid: valid values are {', '.join(MODES)}")
    if not isinstance(cfg.predict.batch_size, int) or cfg.predict.batch_size < 1:
        raise ConfigError(f"predict.batch_size={cfg.predict.batch_size!r} is invalid: valid values are integers >= 1")
    if cfg.outro.enabled:
        check_strengths(cfg.outro.alpha, cfg.outro.temperature)
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
    config = resolved_config(cfg)
    if judge is not None:
        config["judge_identity"] = judge.identity()  # who graded, with which exact prompt
    (cell_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    log.info("cell %s: %d questions from %s", cell_dir, len(questions), cfg.benchmark._target_.rsplit(".", 1)[-1])

    # ---- the run ---------------------------------------------------------------------------
    group, name = cell_identity(cfg)
    tracker = None
    if cfg.logger.mode != "disabled":
        tracker = CellRun(mode=cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity,
                          group=group, name=name, config=config, directory=cell_dir, tags=cfg.logger.tags)
    try:
        # Imported here, after every check: torch/transformers/lightning take seconds to import.
        from outro_sweep.predict.run import predict_cell, predict_video_cell

        predictions = cell_dir / "predictions.jsonl"
        if video:
            cache = FrameCache(Path(cfg.paths.cache_dir) / "frames")
            records, seconds, cosines = predict_video_cell(cfg, questions, benchmark, loader, rule, predictions,
                                                           cache, wups)
        else:
            records, seconds, cosines = predict_cell(cfg, questions, benchmark, loader, rule, predictions)
        if judge is not None:
            records = judge.judge(records)
            write_jsonl_atomic(predictions, records)  # the judged records replace the file whole
        metrics = summarise(records, seconds, cosines)
        if video:
            metrics["skipped_missing"] = benchmark.skipped_missing
        if judge is not None:
            metrics.update(judge_summary(records), judge=judge.identity())
        write_json_atomic(cell_dir / "metrics.json", metrics)  # written only once the cell is complete
        if tracker is not None:
            tracker.finish(metrics, records if cfg.logger.log_predictions else None)
    except BaseException:
        if tracker is not None:
            tracker.fail()
        raise
    extra = f", video errors={metrics['errors']}, skipped missing={metrics['skipped_missing']}" if video else ""
    print(
        f"accuracy {metrics['accuracy']:.4f} (95% CI {metrics['ci_low']:.4f}-{metrics['ci_high']:.4f}, "
        f"n={metrics['n']}, invalid={metrics['invalid']}{extra}) -> {cell_dir}"
    )
    return metrics


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
    for path in sorted((Path(__file__).resolve().parent.parent / "conf" / "model").glob("*.yaml")):
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
