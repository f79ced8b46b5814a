"""Every intervention of a cell, checked, attached and summarised together.

Minimal form of the intervention API (OutRo, from the ``outro`` config node, is the only
intervention): ``from_config`` validates, ``attach`` edits the model inside ``with``,
``Attached`` reports per-sample diagnostics and additive running sums, ``summarise`` turns
the records' diagnostics and the summed sums into the cell's ``diagnostics`` block. Torch-free
at import (OutRo is imported when attached or summarised).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

GROUP = "outro"


class Attached:
    """The editors of the active interventions while attached to a model."""

    def __init__(self, editors: list[tuple[str, Any]]) -> None:
        self.editors = editors

    def sample_diagnostics(self) -> list[dict]:
        """One dict per batch row of the last prefill, ``{group: per-sample dict}``; [] when no
        intervention is attached (callers then record ``{}`` for every row)."""
        rows: list[dict] = []
        for group, editor in self.editors:
            for position, sample in enumerate(editor.take_sample_diagnostics()):
                if position == len(rows):
                    rows.append({})
                rows[position][group] = sample
        return rows

    def running_sums(self) -> dict[str, dict[str, float]]:
        """``{group: {key: float}}``: additive sums since attach (the shard writer stores deltas)."""
        return {group: dict(editor.running_sums()) for group, editor in self.editors}


class InterventionStack:
    def __init__(self, outro: dict | None) -> None:
        self.outro = outro  # OutRo's settings when enabled, else None

    @classmethod
    def from_config(cls, config: Any) -> "InterventionStack":
        """From the composed DictConfig or the plain dict of a saved config.yaml; a bad
        setting raises a one-line ConfigError."""
        from omegaconf import OmegaConf

        from outro_sweep.interventions.settings import check_strengths

        node = config.get("outro") if hasattr(config, "get") else None
        if OmegaConf.is_config(node):
            node = OmegaConf.to_container(node, resolve=True)
        if not isinstance(node, Mapping) or node.get("enabled", True) is False:
            return cls(None)
        check_strengths(node["alpha"], node["temperature"])
        return cls(dict(node))

    @property
    def active(self) -> bool:
        return self.outro is not None

    @property
    def needs_sink_rule(self) -> bool:
        return self.active

    def check_model(self, num_layers: int) -> None:
        from outro_sweep.interventions.settings import relaxation_layers

        if self.active:
            relaxation_layers(self.outro["layer"], num_layers)

    @contextmanager
    def attach(self, model: Any, sink_rule: Any):
        if not self.active:
            yield Attached([])
            return
        from outro_sweep.interventions.outro import OutRo

        node = self.outro
        with OutRo(model, sink_rule, alpha=node["alpha"], temperature=node["temperature"], layer=node["layer"],
                   rotate_decode=node["rotate_decode"]) as editor:
            yield Attached([(GROUP, editor)])

    def summarise(self, samples: list[dict | None], sums: Mapping) -> dict:
        """``{group: summary}`` from every record's ``diagnostics`` and the cell's summed
        ``diagnostic_sums``; needs no model."""
        if not self.active:
            return {}
        from outro_sweep.interventions.outro import summarise_outro

        return {GROUP: summarise_outro([(s or {}).get(GROUP) for s in samples], dict(sums.get(GROUP, {})))}


def add_sums(total: dict[str, dict[str, float]], part: Mapping) -> dict[str, dict[str, float]]:
    """``total += part`` key-wise for ``{group: {key: float}}`` sums (in place; returns total)."""
    for group, values in part.items():
        into = total.setdefault(group, {})
        for key, value in values.items():
            into[key] = into.get(key, 0.0) + value
    return total


def subtract_sums(now: Mapping, before: Mapping) -> dict[str, dict[str, float]]:
    """``now - before`` key-wise; keys whose difference is 0 are left out."""
    delta: dict[str, dict[str, float]] = {}
    for group, values in now.items():
        old = before.get(group, {})
        changed = {k: v - old.get(k, 0.0) for k, v in values.items() if v - old.get(k, 0.0)}
        if changed:
            delta[group] = changed
    return delta
