"""``fit_gate(cfg)``: train one LSG gate (layer ``lsg.layer``) on ``fit.data`` with the backbone
frozen, checkpointed under its identity (outro_sweep/fit/store.py) and resumed from there."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from outro_sweep.cell.identity import hash_inputs
from outro_sweep.errors import ConfigError
from outro_sweep.media.cache import FrameCache

log = logging.getLogger(__name__)


def check_fit(cfg: DictConfig) -> None:
    """The fit node and lsg.layer, in one line each, before anything loads."""
    fit = cfg.fit
    layer = cfg.lsg.layer
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConfigError(f"lsg.layer={layer!r} is not one layer: valid values are one integer per fit "
                          "(one gate per layer; a layer sweep is -m lsg.layer=3,6,10)")
    for key, value, valid in (("lr", fit.lr, "a number > 0"), ("epochs", fit.epochs, "an integer >= 1"),
                              ("batch_size", fit.batch_size, "an integer >= 1")):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if key != "lr":
            ok = ok and isinstance(value, int) and value >= 1
        if not ok:
            raise ConfigError(f"fit.{key}={value!r} is not valid: valid values are {valid}")


def fit_gate(cfg: DictConfig) -> tuple[Path, bool]:
    """Train (or resume, or find done) the gate of ``cfg``; returns its gate.pt and whether this
    call trained it (False: it was already trained)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    # Deferred on purpose: the fitting modules import torch and transformers, loaded only once
    # the command line is checked.
    from outro_sweep.fit.curve import LossCurve
    from outro_sweep.fit.data import AnswerCollator
    from outro_sweep.fit.module import GateFit
    from outro_sweep.fit.store import GateStore, gate_inputs
    from outro_sweep.interventions.lsg import vision_sink_probe
    from outro_sweep.predict.data import ClipSource, QuestionDataset

    check_fit(cfg)
    loader, benchmark, lsg = instantiate(cfg.model), instantiate(cfg.fit.data), instantiate(cfg.lsg)
    lsg.check_model(loader.num_layers())
    config = OmegaConf.to_container(cfg, resolve=True)
    inputs = gate_inputs(config)
    identity = hash_inputs(inputs)
    store = GateStore(cfg.paths.output_dir, identity)
    if store.done():
        print(f"fit: gate {identity} is already trained: {store.gate_file}", flush=True)
        return store.gate_file, False
    questions = benchmark.load()
    pl.seed_everything(cfg.seed, workers=True)
    loaded = loader.load()
    clips = None
    if any(q.video is not None for q in questions):
        clips = ClipSource(benchmark, loader.sampling, FrameCache(Path(cfg.paths.cache_dir) / "frames"))
    data = DataLoader(QuestionDataset(questions, None, clips), batch_size=cfg.fit.batch_size, shuffle=False,
                      collate_fn=AnswerCollator(loaded))
    module = GateFit(loaded.model, loader.hidden_size(), cfg.lsg.layer, cfg.fit.lr, scale=cfg.lsg.scale,
                     rope=cfg.lsg.rope, positions=lambda _model: vision_sink_probe(loaded))
    curve = LossCurve(OmegaConf.to_container(cfg.logger, resolve=True), identity, inputs["config"], store.folder)
    # save_top_k=1 without a monitor keeps the latest epoch's checkpoint; Lightning writes last.ckpt only
    # after an epoch that saved one, so save_top_k=0 would leave no checkpoint until the fit's end.
    checkpoint = ModelCheckpoint(dirpath=store.checkpoints, save_last=True, save_top_k=1, every_n_epochs=1)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                         max_epochs=cfg.fit.epochs, callbacks=[checkpoint, curve], logger=False, deterministic=True,
                         enable_model_summary=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                         enable_checkpointing=True)
    resume = store.last_checkpoint.is_file()
    if resume:
        log.info("resuming gate %s from %s", identity, store.last_checkpoint)
    trainer.fit(module, train_dataloaders=data, ckpt_path="last" if resume else None)
    record = {"identity": identity, "layer": cfg.lsg.layer, "hidden_size": loader.hidden_size(),
              "scale": cfg.lsg.scale, "rope": cfg.lsg.rope, "model": cfg.model.name,
              "data_files": inputs.get("benchmark_files", {}), "losses": curve.losses}
    store.save(module.gate, record)
    print(f"fit: gate {identity} trained ({len(curve.losses)} steps, loss {curve.losses[0]:.4f} -> "
          f"{curve.losses[-1]:.4f}): {store.gate_file}", flush=True)
    return store.gate_file, True
