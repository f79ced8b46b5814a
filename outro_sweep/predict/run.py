"""Run the Lightning predict loop over one cell's questions (text or video), OutRo attached or not."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.base import Benchmark, MCQuestion
from outro_sweep.benchmarks.video_base import VideoBenchmark, VideoQuestion
from outro_sweep.interventions.outro import OutRo
from outro_sweep.metrics import read_predictions
from outro_sweep.models.base import ModelLoader
from outro_sweep.models.video_lm import VideoLMLoader
from outro_sweep.predict.datamodule import QuestionDataModule
from outro_sweep.predict.module import MCPredictor
from outro_sweep.predict.video_data import VideoDataModule, VideoQuestionDataset
from outro_sweep.predict.video_module import VideoPredictor
from outro_sweep.predict.writer import JsonlPredictionWriter
from outro_sweep.sinks.base import SinkRule
from outro_sweep.video.cache import FrameCache

log = logging.getLogger(__name__)


def _quiet_lightning() -> None:
    """Keep the cell's console readable: Lightning's tips and two known-harmless warnings."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")  # intended: see MCPredictor
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


def _outro(cfg: DictConfig, model, rule: SinkRule) -> OutRo | None:
    if not cfg.outro.enabled:
        return None
    layer = cfg.outro.layer
    layer = OmegaConf.to_object(layer) if OmegaConf.is_config(layer) else layer
    return OutRo(model, rule, alpha=cfg.outro.alpha, temperature=cfg.outro.temperature,
                 layer=layer, rotate_decode=cfg.outro.rotate_decode)


def _predict(cfg: DictConfig, module: pl.LightningModule, data: pl.LightningDataModule, outro: OutRo | None,
             predictions_file: Path, expected: int) -> list[dict]:
    """Lightning's predict loop with OutRo attached; the records as the writer persisted them."""
    trainer = instantiate(cfg.trainer, callbacks=[JsonlPredictionWriter(predictions_file)])
    started = time.perf_counter()
    with outro if outro is not None else contextlib.nullcontext():
        trainer.predict(module, datamodule=data, return_predictions=False)
    log.info("predicted %d questions in %.1f s", expected, time.perf_counter() - started)
    records = read_predictions(predictions_file)
    if len(records) != expected:
        raise RuntimeError(f"{predictions_file} holds {len(records)} predictions for {expected} questions")
    return records


def predict_cell(cfg: DictConfig, questions: list[MCQuestion], benchmark: Benchmark, loader: ModelLoader,
                 rule: SinkRule, predictions_file: Path) -> tuple[list[dict], float, dict]:
    """Text benchmarks. Returns (records sorted by index, seconds in predict_step, per-layer rotation cosines)."""
    _quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    loaded = loader.load()
    outro = _outro(cfg, loaded.model, rule)
    module = MCPredictor(loaded, benchmark.scoring, benchmark.max_new_tokens, outro)
    data = QuestionDataModule(questions, loaded.tokenizer, loaded.use_chat_template,
                              cfg.predict.batch_size, cfg.predict.num_workers)
    records = _predict(cfg, module, data, outro, predictions_file, len(questions))
    return records, module.seconds, outro.cell_diagnostics() if outro is not None else {}


def predict_video_cell(cfg: DictConfig, questions: list[VideoQuestion], benchmark: VideoBenchmark,
                       loader: VideoLMLoader, rule: SinkRule, predictions_file: Path, cache: FrameCache,
                       wups=None) -> tuple[list[dict], float, dict]:
    """Video benchmarks: clips decoded (or loaded from ``cache``) per question, fed through the
    model's processor. Same return value as ``predict_cell``."""
    _quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    loaded = loader.load()
    outro = _outro(cfg, loaded.model, rule)
    module = VideoPredictor(loaded, benchmark.scoring, benchmark.max_new_tokens, outro,
                            open_metric=benchmark.open_metric, wups=wups)
    dataset = VideoQuestionDataset(questions, benchmark, loader, cache)
    data = VideoDataModule(dataset, loaded, cfg.predict.batch_size, cfg.predict.num_workers)
    records = _predict(cfg, module, data, outro, predictions_file, len(questions))
    return records, module.seconds, outro.cell_diagnostics() if outro is not None else {}
