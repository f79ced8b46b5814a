"""One atlas: load the model (eager attention) and the benchmark's questions, capture each
prompt, run every analysis, write atlas.json, the figures and suggestion.txt, log the W&B run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from outro_sweep.atlas import store
from outro_sweep.atlas.attention import FirstTokenAttention
from outro_sweep.atlas.capture import capture
from outro_sweep.atlas.dims import SinkDimensions
from outro_sweep.atlas.figures import draw_all
from outro_sweep.atlas.massive import MassiveActivations
from outro_sweep.atlas.modality import ByModality, describe, probe_for
from outro_sweep.atlas.rules import RuleSinks, rule_configs
from outro_sweep.atlas.suggest import lines, suggest
from outro_sweep.atlas.tracking import log_atlas
from outro_sweep.atlas.value_share import ValueShare
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.files.atomic import write_lines_atomic
from outro_sweep.media.cache import FrameCache
from outro_sweep.preflight.checks import build
from outro_sweep.preflight.schemas import check_config

log = logging.getLogger(__name__)
LOADS = 0  # model loads by ``compute`` in this process: a cached atlas loads nothing
SUGGESTION_FILE = "suggestion.txt"


@dataclass
class AtlasResult:
    directory: Path
    atlas: dict
    cached: bool


def compute(cfg: DictConfig, rules: dict[str, dict]) -> dict:
    """Every analysis over the benchmark's questions (a dict of JSON-ready results)."""
    global LOADS
    settings = build(cfg.atlas)
    device = settings.torch_device()
    loader = build(cfg.model, attn_implementation="eager")  # attention probabilities for the atlas pass only
    rule = build(cfg.sink)  # the configured rule (sink=...): OutRo's (ii) and the suggestion read its sinks
    rule.configure(loader.sink_dims)
    benchmark = build(cfg.benchmark)
    questions = benchmark.load()
    clips = None
    if any(q.video is not None for q in questions):  # a video benchmark: clips decoded through the frame cache
        # Deferred on purpose: it imports torch and transformers.
        from outro_sweep.predict.data import ClipSource

        clips = ClipSource(benchmark, loader.sampling, FrameCache(Path(cfg.paths.cache_dir) / "frames"))
    num_layers = loader.num_layers()
    loaded = loader.load()
    loaded.model.to(device)
    LOADS += 1
    analyses = [MassiveActivations(num_layers), SinkDimensions(num_layers, settings.tau, settings.dim_share),
                FirstTokenAttention(num_layers, settings.eps), RuleSinks(num_layers, rules, loaded.sink_dims),
                ValueShare(num_layers, rule), ByModality(num_layers, rule)]

    def consume(view) -> None:
        for analysis in analyses:
            analysis.add(view)

    probe = probe_for(loaded)  # video models: visual positions and V-sinks of every prompt
    started = time.monotonic()
    failed: dict[str, str] = {}  # question id -> why its clip could not be used (left out of the atlas)
    for index, question in enumerate(questions):
        text = loader.render(loaded.processor, question.prompt)
        clip = None
        if clips is not None and question.video is not None:
            item = clips.item(index, question)
            if item.error is not None:
                failed[question.id] = item.error
                log.warning("atlas: question %s left out: %s", question.id, item.error)
                continue
            clip = item.clip
        inputs = loader.inputs(loaded.processor, [text], [clip] if clip is not None else [None])
        inputs = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
        if probe is None:
            capture(loaded, inputs, num_layers, consume)
        else:
            with probe:
                capture(loaded, inputs, num_layers, consume, lambda: describe(probe, inputs, loaded.model.config))
    analysed = len(questions) - len(failed)
    if not analysed:
        raise RuntimeError(f"the atlas has no prompt: every question's clip failed "
                           f"({next(iter(failed.values()), 'the benchmark has no questions')})")
    log.info("atlas: %d prompts in %.1f s", analysed, time.monotonic() - started)
    results = {analysis.name: analysis.result() for analysis in analyses}
    results["prompts"] = analysed
    results["failed"] = failed
    results["layers"] = num_layers
    return results


def run_atlas(cfg: DictConfig) -> AtlasResult:
    """The atlas of ``cfg`` (conf/atlas.yaml): from the cache when its identity has one."""
    config = OmegaConf.to_container(cfg, resolve=True)
    check_config(cfg)  # every group's keys (atlas.* included) against its class: one line, before anything loads
    rules = rule_configs(CONF_DIR)
    identity = store.atlas_identity(config, rules)
    directory = store.atlas_dir(cfg.paths.output_dir, cfg.model.name, identity)
    cached = store.load(directory)
    if cached is not None:
        return AtlasResult(directory, cached, cached=True)
    results = compute(cfg, rules)
    settings = build(cfg.atlas)
    results["suggestion"] = suggest(results, results["value_share"]["rule"], cfg.model.name, settings.min_rate,
                                    settings.suggest_layers, settings.suggest_step)
    results["identity"] = identity
    results["model"] = cfg.model.name

    directory.mkdir(parents=True, exist_ok=True)
    results["figures"] = [path.name for path in draw_all(results, directory)]
    write_lines_atomic(directory / SUGGESTION_FILE, lines(results["suggestion"]))
    log_atlas(cfg, config, results, directory)
    store.save(directory, results)  # last: a folder with atlas.json holds a whole atlas
    return AtlasResult(directory, results, cached=False)
