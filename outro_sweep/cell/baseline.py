"""The baseline of a cell, defined once: the same model, benchmark and settings with every
intervention off.

It is derived from the cell's composed config, never from override strings, so an experiment
that switches an intervention on in its own YAML still gets its baseline. The sweeper launches
it (``baseline_overrides``), the cell records its identity in ``config.yaml``
(``baseline_identity``) and the report pairs every cell with the cell of that identity.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from outro_sweep.cell.identity import cell_identity
from outro_sweep.interventions.stack import intervention_groups, is_active


def active_groups(config: dict) -> list[str]:
    """The config groups of the interventions that ``config`` (plain dict) switches on."""
    return [group for group in intervention_groups(config) if is_active(config[group])]


def is_baseline(config: dict) -> bool:
    """True when every intervention is off: the cell is the stock model."""
    return not active_groups(config)


def baseline_config(config: dict) -> dict:
    """``config`` with every intervention switched off (the rest unchanged)."""
    baseline = copy.deepcopy(config)
    for group in intervention_groups(config):
        baseline[group] = {**baseline[group], "enabled": False}
    return baseline


def baseline_identity(config: dict) -> str:
    """The identity of the cell's baseline (its own identity when it is a baseline)."""
    return cell_identity(baseline_config(config))


def baseline_overrides(overrides: Sequence[str], config: dict) -> list[str]:
    """Command-line overrides that compose the baseline of the cell composed from
    ``overrides``: every active intervention gets ``<group>.enabled=false``, which Hydra applies
    after the defaults list (experiments included)."""
    groups = active_groups(config)
    switches = {f"{group}.enabled" for group in groups}
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in switches]
    return [*kept, *(f"{group}.enabled=false" for group in groups)]
