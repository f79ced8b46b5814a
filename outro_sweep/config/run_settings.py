"""The whole composed config against its schemas, before anything loads.

Each group node with a ``_target_`` (model, benchmark, sink, outro and any other intervention,
judge, trainer) is checked against the class it names (``schema.check_node``); the remaining
top-level keys against ``RunSettings`` (other top-level keys are free-form notes unless they
look like a typo of a known one). Lightning's Trainer annotates ``accelerator`` and
``devices`` loosely (any string), so they are refined here from Lightning's own registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from omegaconf import DictConfig

from outro_sweep.cell.tracking import MODES
from outro_sweep.config.schema import Doc, NonEmpty, Range, check_node, target_class
from outro_sweep.errors import ConfigError


@dataclass
class PredictSettings:
    batch_size: Annotated[int, Range(ge=1)] = 8  # prompts per forward
    num_workers: Annotated[int, Range(ge=0)] = 0  # DataLoader worker processes
    progress_every_batches: Annotated[int, Range(ge=1)] = 20  # log lines where stderr is not a terminal
    progress_every_seconds: Annotated[float, Range(gt=0, finite=True)] = 60.0


@dataclass
class GroupSettings:
    """What the cells of one group share in one process (``outro_sweep.group``)."""

    share: bool = True  # one model load, kept clips and tower outputs for the group's cells
    prefix: bool = True  # replay the stock decoder layers below the first layer a cell changes
    cache_gb: Annotated[float, Range(gt=0, finite=True)] = 4.0  # kept tower outputs + prefixes, GiB


@dataclass
class PathSettings:
    output_dir: str = "outputs"
    cache_dir: str = ""


@dataclass
class LoggerSettings:
    mode: Literal[MODES] = "offline"
    project: str = "outro_sweep"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    log_predictions: bool = True
    api_key: str | None = None  # online runs' credential (masked in every output)


@dataclass
class JudgeOff:
    """``judge=off``: no class to build, only the switch."""

    enabled: Annotated[Literal[False], Doc("false (judge=llm switches the judge on)")] = False


@dataclass
class RunSettings:
    """The top-level keys that are not a group with a ``_target_``."""

    seed: int = 0
    force: bool = False
    baseline: bool = True
    dry_run: bool = False  # +dry_run=true
    predict: PredictSettings = field(default_factory=PredictSettings)
    group: GroupSettings = field(default_factory=GroupSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    judge: JudgeOff = field(default_factory=JudgeOff)


def trainer_refinements() -> dict:
    """Lightning's own accepted values for the settings its signature types as any string."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    accelerators = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    return {
        "accelerator": Literal[accelerators],
        "devices": (Annotated[int, Range(ge=1)] | Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()]
                    | Literal["auto"]),
    }


REFINEMENTS = {"lightning.pytorch.trainer.trainer.Trainer": trainer_refinements}


def check_config(cfg: DictConfig) -> None:
    """Every key of a job's composed config (no ``hydra`` node) against its schema; raises a
    one-line ConfigError."""
    from outro_sweep.interventions.base import Intervention

    groups = []
    for key in cfg.keys():
        key = str(key)
        node = cfg[key]
        cls = target_class(node) if isinstance(node, DictConfig) else None
        if cls is None:
            continue
        groups.append(key)
        name = f"{cls.__module__}.{cls.__qualname__}"
        refine = REFINEMENTS[name]() if name in REFINEMENTS else None
        skip = ("group",) if issubclass(cls, Intervention) else ()
        if not isinstance(cls, type):
            raise ConfigError(f"{key}._target_={node._target_} is not a class: valid values are a class path")
        check_node(node, cls, key, refine=refine, skip=skip)
    # A top-level key added with + that no schema names is a note, recorded with the cell and
    # read by nothing (e.g. +note=...); one close to a known key is taken for a typo of it.
    check_node(cfg, RunSettings, "", elsewhere=groups, notes=True)
