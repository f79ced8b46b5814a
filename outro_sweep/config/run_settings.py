"""The settings of a run that are not a group with a ``_target_`` (``RunSettings``: seed,
predict, group, paths, logger, ...), typed for ``config.schema``; ``preflight.schemas`` checks a
composed config against them and against every group's class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from outro_sweep.config.schema import Doc, Range

#: W&B's run modes (``logger.mode``; the report's ``--wandb-mode``).
MODES = ("offline", "online", "disabled")


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
    # batches of each cell run without replay and compared with what the replay would give
    verify: Annotated[int, Range(ge=0)] = 0


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
