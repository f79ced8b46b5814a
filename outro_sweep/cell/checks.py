"""Everything about a cell that can be checked without its model, before the model loads: a
typo in a sweep costs seconds, not a model load. ``check_cell`` runs in-process (no Hydra
job needed), so tests call it directly."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.base import Benchmark, Question
from outro_sweep.cell.tracking import MODES
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.media.decode import missing_videos_message
from outro_sweep.models.base import ModelLoader
from outro_sweep.models.video_lm import VideoLMLoader
from outro_sweep.scoring.answers import Scorer

log = logging.getLogger(__name__)


@dataclass
class CheckedCell:
    """What a cell is made of, built and checked; nothing loaded."""

    benchmark: Benchmark
    questions: list[Question]
    loader: ModelLoader
    rule: object  # the sink rule (configured for the model where an intervention reads sinks)
    stack: InterventionStack
    judge: object | None  # the LLM judge of judge=llm (its model not loaded), or None


def build(node: DictConfig, **kwargs):
    """``instantiate`` that lets our one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def check_cell(cfg: DictConfig) -> CheckedCell:
    """Build and check every part of the cell; a ConfigError (one line) for bad input."""
    if cfg.logger.mode not in MODES:
        raise ConfigError(f"logger.mode={cfg.logger.mode!r} is invalid: valid values are {', '.join(MODES)}")
    if not isinstance(cfg.predict.batch_size, int) or cfg.predict.batch_size < 1:
        raise ConfigError(f"predict.batch_size={cfg.predict.batch_size!r} is invalid: valid values are integers >= 1")
    stack = InterventionStack.from_config(cfg)
    benchmark = build(cfg.benchmark)
    questions = benchmark.load()
    loader = build(cfg.model)
    check_pairing(cfg, questions, loader)
    check_videos_present(benchmark, questions)
    Scorer.for_benchmark(cfg.benchmark)  # e.g. WUPS without WordNet fails here, not after prediction
    judge = build_judge(cfg)
    rule = build(cfg.sink)
    if stack.active:
        stack.check_model(loader.num_layers())
        if stack.needs_sink_rule:
            rule.configure(loader.sink_dims)
    return CheckedCell(benchmark, questions, loader, rule, stack, judge)


def build_judge(cfg: DictConfig):
    """The LLM judge of judge=llm (its model loader built, not loaded), or None."""
    if not cfg.judge.enabled:
        return None
    if "path" in cfg.judge.model and OmegaConf.is_missing(cfg.judge.model, "path"):
        raise ConfigError("judge.model.path is required for the judge's model: a local folder or a cached hub id")
    return build(cfg.judge)


def _choice(cfg: DictConfig, group: str) -> str:
    """The group's choice as the user wrote it (Hydra's), else the class its node builds."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]


def check_pairing(cfg: DictConfig, questions: list[Question], loader: ModelLoader) -> None:
    """Questions about videos need a video model; text questions a text model."""
    video = any(q.video is not None for q in questions)
    is_video_model = isinstance(loader, VideoLMLoader)
    if video and not is_video_model:
        raise ConfigError(
            f"benchmark={_choice(cfg, 'benchmark')} is a video benchmark and model={_choice(cfg, 'model')} reads "
            f"text only: valid values are the video models {', '.join(video_model_choices())}"
        )
    if not video and is_video_model:
        raise ConfigError(
            f"benchmark={_choice(cfg, 'benchmark')} has no videos and model={_choice(cfg, 'model')} is a video "
            "model: valid values are the video benchmarks (conf/benchmark/), or a text model"
        )


def video_model_choices() -> list[str]:
    """conf/model/*.yaml whose loader is a video model (for the pairing error)."""
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


def check_videos_present(benchmark: Benchmark, questions: list[Question]) -> None:
    """Every question's clip must exist (skip_missing=true already dropped the absent ones)."""
    with_clips = [q for q in questions if q.video is not None]
    if not with_clips:
        return
    missing = benchmark.missing_videos(with_clips)
    if missing:
        names = list(dict.fromkeys(q.video for q in missing))
        total = len({q.video for q in with_clips})
        raise ConfigError(missing_videos_message(names, total, benchmark.video_dir))
    if benchmark.skipped_missing:
        log.warning("benchmark.skip_missing=true: skipped %d questions whose video is absent from %s",
                    benchmark.skipped_missing, benchmark.video_dir)
