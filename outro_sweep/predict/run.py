"""Run the Lightning predict loop over one cell's questions (text or video), interventions attached or not.

Durable, resumable, multi-process:

- every finished batch of every process is one shard file under ``<cell_dir>/shards/``
  (``ShardPredictionWriter``; atomic, so a SIGKILL loses at most the batches in flight);
- the model, decoded clips, tower outputs and stock decoder prefixes come through
  ``outro_sweep.group.share``: kept from the previous cell of the group in this process;
- a cell first reads its shards and predicts only the questions not in any of them, each
  under its original index; with nothing left the model is not even loaded;
- a cell may run as N processes (SLURM tasks, local submitit tasks or torchrun; see
  ``outro_sweep.predict.distributed``): Lightning runs them as one DDP group. Rank 0 reads the shards
  and broadcasts the questions still to do; the list is cut into batches of
  ``predict.batch_size`` and each rank takes a contiguous run of whole batches (so every batch
  is the batch a one-process run would form, padding and all, and a rank may get none);
  after prediction all ranks meet at a barrier and rank 0 alone reads the shards back.

Rank 0 returns the merged shards; scoring them (``outro_sweep.scoring.cell``) is a separate
step, so the interventions' diagnostics and the timing are summed over every shard of the
cell (every rank, resumed attempts included) and equal what one uninterrupted process would
report (up to float summation order).

Resuming never mixes two prompts: every record carries the hash of the rendered prompt the
model read (``prompt_hash``), and a cell whose shards were predicted from another prompt
(benchmark text, instruction, system prompt, chat template) stops with one line.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from outro_sweep.benchmarks.base import Benchmark, Question
from outro_sweep.errors import ConfigError
from outro_sweep.group.share import model_for_cell, shared_work
from outro_sweep.interventions.sinks.base import SinkRule
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.media.cache import FrameCache
from outro_sweep.models.base import ModelLoader
from outro_sweep.predict import interruption
from outro_sweep.predict.data import ClipSource, QuestionDataModule, QuestionDataset, question_hash
from outro_sweep.predict.distributed import process_rank, trainer_overrides, world_size
from outro_sweep.predict.module import Predictor
from outro_sweep.predict.progress import ProgressLog, live_terminal
from outro_sweep.predict.shards import ShardSet, check_complete, read_shard_set, remove_stale_temporaries
from outro_sweep.predict.writer import ShardPredictionWriter

log = logging.getLogger(__name__)

# (module, datamodule) for the given question indices; loads the model.
Setup = Callable[[list[int]], tuple[Predictor, pl.LightningDataModule]]


def _quiet_lightning() -> None:
    """Keep the cell's console readable: Lightning's tips and two known-harmless warnings."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")  # intended: see Predictor
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # On a machine with SLURM installed, a cell that runs outside srun (a plain run, the local
    # launcher) is told to prepend srun: wrong here, SLURM cells are launched by hydra/launcher=slurm.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system but is not used.*")
    # A process of a multi-process cell whose share is empty (see share_of).
    warnings.filterwarnings("ignore", message=".*local rank has zero length.*")


def share_of(remaining: list[int], batch_size: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s part of ``remaining``: the list is cut into batches of ``batch_size``
    (as one process would batch it) and rank r takes batches [r*B/W, (r+1)*B/W): contiguous,
    disjoint, together everything; shares differ by at most one batch, and are empty when
    there are fewer batches than ranks."""
    batches = [remaining[i:i + batch_size] for i in range(0, len(remaining), batch_size)]
    first, last = rank * len(batches) // world, (rank + 1) * len(batches) // world
    return [index for batch in batches[first:last] for index in batch]


class _StopOnSignal(pl.Callback):
    """SIGTERM stops prediction at once, as elsewhere in the cell (``outro_sweep.predict.interruption``)."""

    def on_predict_start(self, trainer, pl_module) -> None:
        interruption.reclaim()


def _check_resumable(shard_set: ShardSet, questions: list, loader: ModelLoader, cell_dir: Path) -> None:
    """The shards must be predictions of these very questions under this very prompt: index
    in range and, at that index, the hash of the prompt this cell renders now. Rendering needs
    the tokenizer or processor only, never the weights."""
    beyond = sorted(i for i in shard_set.indices if i >= len(questions))
    if beyond:
        raise RuntimeError(f"{cell_dir / 'shards'} holds predictions for question indices {beyond[:10]} but the cell "
                           f"has only {len(questions)} questions: these shards belong to another question list")
    if not shard_set.records:
        return
    processor = loader.load_processor()
    for record in shard_set.records:
        expected = question_hash(loader, processor, questions[record["index"]])
        if record.get("prompt_hash") != expected:
            raise ConfigError(
                f"cell {cell_dir} holds predictions made from another prompt (question {record['index']}: "
                f"prompt_hash {record.get('prompt_hash')}, now {expected}; the question text, the instruction, "
                "model.system_prompt or the chat template changed): valid values are the settings those shards "
                "were made with, or move the cell folder away to start over"
            )


def _plan(cell_dir: Path, questions: list, loader: ModelLoader,
          trainer: pl.Trainer | None) -> tuple[list[int], ShardSet | None]:
    """(question indices still to predict, the shards found) on rank 0; the same list on
    every rank of a multi-process cell (rank 0 broadcasts it, with any error it hit)."""
    found, plan = None, None
    if trainer is None or trainer.global_rank == 0:
        try:
            found = read_shard_set(cell_dir / "shards")
            _check_resumable(found, questions, loader, cell_dir)
            plan = [i for i in range(len(questions)) if i not in found.indices]
        except Exception as err:  # every rank must hear of it, or the others wait at the broadcast
            if trainer is not None:
                trainer.strategy.broadcast(f"{type(err).__name__}: {err}", src=0)
            raise
    if trainer is not None:
        plan = trainer.strategy.broadcast(plan, src=0)
        if isinstance(plan, str):
            raise RuntimeError(f"rank 0 could not plan the cell: {plan}")
    return plan, found


def _setup_everywhere(setup: Setup, indices: list[int], trainer: pl.Trainer | None):
    """``setup(indices)`` (loads the model); in a multi-process cell every rank learns whether
    all ranks managed it, so one rank's failure (say, out of memory) stops them all here
    instead of leaving the others waiting in Lightning's first collective."""
    if trainer is None:
        return setup(indices)
    try:
        built, failed = setup(indices), None
    except Exception as err:  # noqa: BLE001 (re-raised below, after the others are told)
        built, failed = None, err
    if not trainer.strategy.reduce_boolean_decision(failed is None, all=True):
        if failed is not None:
            raise failed
        raise RuntimeError("another process of this cell failed to load the model (see its log)")
    return built


def predict_cell(cfg: DictConfig, questions: list[Question], benchmark: Benchmark, loader: ModelLoader,
                 rule: SinkRule | None, stack: InterventionStack, cell_dir: Path) -> ShardSet | None:
    """Resume from the cell's shards, predict the rest (on every process of the cell) with the
    interventions of ``stack`` attached, and return every shard, complete, on rank 0 (``None``
    on the other ranks of a multi-process cell). Video questions' clips are decoded (or loaded
    from the frame cache under ``paths.cache_dir``) per question and fed through the model's
    processor; text questions go through its tokenizer."""
    _quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    cell_dir = Path(cell_dir)
    shard_dir = cell_dir / "shards"
    writer = ShardPredictionWriter(shard_dir)
    interruption.track(shard_dir, len(questions))
    overrides = trainer_overrides(cfg.trainer.get("accelerator"))
    # A terminal gets Lightning's live bar; a log file gets progress lines (outro_sweep.predict.progress).
    progress, bar = [], {}
    if not live_terminal():
        progress = [ProgressLog(cfg.predict.progress_every_batches, cfg.predict.progress_every_seconds)]
        bar = {"enable_progress_bar": False}
    trainer = None
    if overrides:
        # Multi-process: the Trainer (and its process group) comes first, so that rank 0 can
        # tell the others which questions are left before anyone loads the model.
        trainer = instantiate(cfg.trainer, callbacks=[writer, _StopOnSignal(), *progress], use_distributed_sampler=False,
                              **overrides, **bar)
        if (trainer.global_rank, trainer.world_size) != (process_rank(), world_size()):
            raise RuntimeError(f"Lightning sees rank {trainer.global_rank} of {trainer.world_size}, the environment "
                               f"says {process_rank()} of {world_size()}")
        trainer.strategy.setup_environment()  # joins the process group (Lightning's predict reuses it)
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    remaining, found = _plan(cell_dir, questions, loader, trainer)
    resumed = len(questions) - len(remaining)
    if rank == 0:
        log.info("%d of %d questions resumed from %d shards in %s; %d to predict now on %d process%s",
                 resumed, len(questions), len(found.shards), shard_dir, len(remaining), world,
                 "es" if world > 1 else "")
    if remaining:
        mine = share_of(remaining, cfg.predict.batch_size, rank, world)

        session = None

        def setup(indices: list[int]):
            nonlocal session
            loaded, session = model_for_cell(cfg, loader)
            clips = None
            if any(questions[i].video is not None for i in indices):
                clips = ClipSource(benchmark, loader.sampling, FrameCache(Path(cfg.paths.cache_dir) / "frames"),
                                   kept=session.clips if session is not None else None)
            data = QuestionDataModule(QuestionDataset(questions, indices, clips), loaded, cfg.predict.batch_size,
                                      cfg.predict.num_workers, kept=session.clips if session is not None else None)
            return Predictor(loaded, benchmark.scoring, benchmark.max_new_tokens, cfg.predict.batch_size), data

        module, data = _setup_everywhere(setup, mine, trainer)
        if trainer is None:
            trainer = instantiate(cfg.trainer, callbacks=[writer, _StopOnSignal(), *progress], **bar)
        started = time.perf_counter()
        with stack.attach(module.loaded, rule) as attached, shared_work(cfg, session, attached):
            module.attached = attached
            trainer.predict(module, datamodule=data, return_predictions=False)
        module.attached = None
        log.info("rank %d predicted %d questions in %.1f s", rank, len(mine), time.perf_counter() - started)
        trainer.strategy.barrier("outro_sweep: all ranks' shards are written")  # no-op with one process
    if rank != 0:
        return None
    merged = read_shard_set(shard_dir)
    check_complete(merged, len(questions), shard_dir)
    remove_stale_temporaries(shard_dir)  # every writer has finished
    log.info("predictions: %d resumed + %d predicted now = %d in %s", resumed, len(remaining), len(merged.records),
             shard_dir)
    return merged
