"""The whole composed config against its schemas, before anything loads.

Each group node with a ``_target_`` (model, benchmark, sink, outro and any other intervention,
judge, trainer) is checked against the class it names (``schema.check_node``); the remaining
top-level keys against ``RunSettings`` (other top-level keys are free-form notes unless they
look like a typo of a known one). Lightning's Trainer annotates ``accelerator`` and
``devices`` loosely (any string), so they are refined here from Lightning's own registry.
"""

from __future__ import annotations

from typing import Annotated, Literal

from omegaconf import DictConfig

from outro_sweep.config.run_settings import RunSettings
from outro_sweep.config.schema import NonEmpty, Range, check_node, target_class
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.base import Intervention


def trainer_refinements() -> dict:
    """Lightning's own accepted values for the settings its signature types as any string."""
    # Deferred on purpose: Lightning takes seconds to import, and only a config with a trainer needs it.
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
