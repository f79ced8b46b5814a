"""Everything about a cell that can be checked without its model, before the model loads: a
typo in a sweep costs seconds, not a model load. ``check_cell`` runs in-process (no Hydra
job needed), so tests call it directly; the sweeper runs it on every cell of the grid before
any launches, with one ``memo`` for the whole grid so that each distinct benchmark, model and
judge node is read once however many cells share it."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.base import Benchmark, Question
from outro_sweep.config.compose import build
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.media.decode import missing_videos_message
from outro_sweep.models.base import ModelLoader
from outro_sweep.models.video_lm import VideoLMLoader
from outro_sweep.preflight.schemas import check_config
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


def check_cell(cfg: DictConfig, memo: dict | None = None, choices: Mapping[str, str] | None = None) -> CheckedCell:
    """Build and check every part of the cell; a ConfigError (one line) for bad input.

    memo: results (and errors) of the node-level checks, shared by the cells of one sweep;
    choices: the group choices as written (Hydra's ``runtime.choices``) where HydraConfig does
    not hold this cell's (the sweeper's process)."""
    memo = {} if memo is None else memo
    check_config(cfg)  # every key's type and range (outro_sweep.config)
    stack = InterventionStack.from_config(cfg)
    benchmark, questions = _memoised(memo, "benchmark", cfg.benchmark, lambda: load_benchmark(cfg.benchmark))
    loader = _memoised(memo, "model", cfg.model, lambda: build(cfg.model))
    check_pairing(cfg, questions, loader, choices)
    benchmark.check_model(loader)  # e.g. a passkey context longer than the model's positions
    _memoised(memo, "videos", cfg.benchmark, lambda: check_videos_present(benchmark, questions))
    num_layers, hidden_size = _memoised(memo, "model shape", cfg.model, lambda: model_shape(loader))
    Scorer.for_benchmark(cfg.benchmark)  # e.g. WUPS without WordNet fails here, not after prediction
    judge = _memoised(memo, "judge", cfg.judge, lambda: build_judge(cfg))
    rule = build(cfg.sink)
    if stack.active:
        stack.check_model(num_layers)
        stack.check_benchmark(benchmark)
        if stack.needs_sink_rule:
            rule.configure(loader.sink_dims)
            rule.check_hidden_size(hidden_size)
        stack.check_before_load(loader, rule)
    return CheckedCell(benchmark, questions, loader, rule, stack, judge)


def check_before_launch(cfg: DictConfig, memo: dict | None = None, choices: Mapping[str, str] | None = None) -> None:
    """What the CLI and the sweeper check before anything runs: the whole ``check_cell``, or
    with ``+dry_run=true`` the schemas only (listing the cells reads no data)."""
    if cfg.get("dry_run", False):
        check_config(cfg)
    else:
        check_cell(cfg, memo, choices)


def _memoised(memo: dict, name: str, node: DictConfig, make: Callable):
    """``make()`` once per distinct ``node`` content; a ConfigError is remembered and raised again."""
    key = (name, json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True, default=str))
    if key not in memo:
        try:
            memo[key] = (make(), None)
        except ConfigError as err:
            memo[key] = (None, err)
    result, error = memo[key]
    if error is not None:
        raise error
    return result


def load_benchmark(node: DictConfig) -> tuple[Benchmark, list[Question]]:
    benchmark = build(node)
    return benchmark, benchmark.load()


def model_shape(loader: ModelLoader) -> tuple[int, int]:
    """(decoder layers, hidden size), read from the model's config, never its weights."""
    return loader.num_layers(), loader.hidden_size()


def build_judge(cfg: DictConfig):
    """The LLM judge of judge=llm (its model loader built and its config read, not its
    weights), or None. Checked even where no answer will need judging: a judge that could not
    load is a broken setting whatever this cell's questions are."""
    if not cfg.judge.enabled:
        return None
    judge = build(cfg.judge)
    try:
        judge.model.num_layers()
    except ConfigError as err:  # the loader names its keys model.*; here they are judge.model.*
        message = str(err)
        raise ConfigError(f"judge.{message}" if message.startswith("model.") else message) from None
    return judge


def _choice(cfg: DictConfig, group: str, choices: Mapping[str, str] | None) -> str:
    """The group's choice as the user wrote it (Hydra's), else the class its node builds."""
    if choices is not None and group in choices:
        return str(choices[group])
    if choices is None and HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]


def check_pairing(cfg: DictConfig, questions: list[Question], loader: ModelLoader,
                  choices: Mapping[str, str] | None = None) -> None:
    """Questions about videos need a video model; text questions a text model."""
    video = any(q.video is not None for q in questions)
    is_video_model = isinstance(loader, VideoLMLoader)
    benchmark, model = _choice(cfg, "benchmark", choices), _choice(cfg, "model", choices)
    if video and not is_video_model:
        raise ConfigError(
            f"benchmark={benchmark} is a video benchmark and model={model} reads "
            f"text only: valid values are the video models {', '.join(video_model_choices())}"
        )
    if not video and is_video_model:
        raise ConfigError(
            f"benchmark={benchmark} has no videos and model={model} is a video "
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
