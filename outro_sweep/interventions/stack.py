"""Every intervention of a cell, found through its config, checked, attached and summarised
together.

An intervention is a top-level config node with an ``enabled`` key and a ``_target_`` whose class
subclasses ``Intervention`` (``outro`` today; a new one is one ``.py`` plus one
``conf/<group>/*.yaml``, selected with ``+<group>=<option>`` or listed in a config's defaults). Torch-free at import;
each intervention's own module may import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.base import Editor, Intervention


def _node_items(config: Any):
    """(key, node) for the top-level mapping nodes of a DictConfig or a plain dict."""
    if hasattr(config, "items_ex"):  # DictConfig: do not resolve interpolations of unrelated nodes
        return [(k, config[k]) for k in config.keys()]
    return list(config.items())


def intervention_class(node: Any) -> type[Intervention] | None:
    """The Intervention subclass a config node names in ``_target_``, else None."""
    if not hasattr(node, "get") or "enabled" not in node:  # cheap filter: no import of unrelated targets
        return None
    target = node.get("_target_")
    if not isinstance(target, str):
        return None
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - not importable here: whatever it is, it is not an intervention
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Intervention) else None


def intervention_groups(config: Any) -> dict[str, type[Intervention]]:
    """{group: class} for every intervention node of a config (DictConfig or plain dict)."""
    found = {}
    for key, node in _node_items(config):
        cls = intervention_class(node)
        if cls is not None:
            found[str(key)] = cls
    return found


def is_active(node: Mapping) -> bool:
    """Whether an intervention's config node switches it on (``enabled``, default true)."""
    return node.get("enabled", True) is not False


class Attached:
    """The editors of the active interventions while attached to a model, ``[(group, editor)]`` in
    attach order (what the group replay asks of them all: ``outro_sweep.group.replayable``)."""

    def __init__(self, editors: list[tuple[str, Editor]]) -> None:
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
    """The interventions of one cell, in config order."""

    def __init__(self, interventions: list[Intervention]) -> None:
        self.interventions = interventions
        by_edit: dict[str, str] = {}
        for intervention in self.active_interventions:
            for edit in sorted(intervention.edits):
                if edit in by_edit:
                    raise ConfigError(
                        f"{by_edit[edit]} and {intervention.group} both edit the {edit.replace('_', ' ')}: "
                        f"valid values enable one of them ({by_edit[edit]}.enabled=false or "
                        f"{intervention.group}.enabled=false)"
                    )
                by_edit[edit] = intervention.group

    @classmethod
    def from_config(cls, config: Any) -> "InterventionStack":
        """Build and validate every intervention node of ``config`` (no model, no torch needed
        by the checks themselves). Raises a one-line ConfigError for a bad setting."""
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        built = []
        for group in intervention_groups(config):
            try:
                built.append(instantiate(config[group], group=group))
            except InstantiationException as err:
                if isinstance(err.__cause__, ConfigError):
                    raise err.__cause__ from None
                raise ConfigError(f"{group}: {str(err.__cause__ or err).splitlines()[0]}") from None
        return cls(built)

    @property
    def active_interventions(self) -> list[Intervention]:
        return [i for i in self.interventions if i.active]

    @property
    def active(self) -> bool:
        """False: every intervention is off and the cell is the stock-model baseline."""
        return bool(self.active_interventions)

    @property
    def needs_sink_rule(self) -> bool:
        return any(i.needs_sink_rule for i in self.active_interventions)

    def check_model(self, num_layers: int) -> None:
        for intervention in self.active_interventions:
            intervention.check_model(num_layers)

    def layers_reading_sinks(self, num_layers: int) -> dict[str, list[int]]:
        """{group: the layers it acts on sinks at} of every active intervention that does."""
        return {i.group: layers for i in self.active_interventions if (layers := i.layers_reading_sinks(num_layers))}

    def check_before_load(self, loader: Any, sink_rule: Any) -> None:
        for intervention in self.active_interventions:
            intervention.check_before_load(loader, sink_rule)

    def check_benchmark(self, benchmark: Any) -> None:
        for intervention in self.active_interventions:
            intervention.check_benchmark(benchmark)

    @contextmanager
    def attach(self, loaded: Any, sink_rule: Any):
        """Attach every active intervention (config order) for the ``with`` block; all are
        detached on exit, also after an error."""
        with ExitStack() as stack:
            editors = []
            for intervention in self.active_interventions:
                editor = intervention.attach(loaded, sink_rule)
                if not isinstance(editor, Editor):
                    raise TypeError(f"{type(intervention).__qualname__}.attach returned a {type(editor).__qualname__}: "
                                    "it must return an outro_sweep.interventions.base.Editor")
                editors.append((intervention.group, stack.enter_context(editor)))
            yield Attached(editors)

    def summarise(self, samples: list[dict | None], sums: dict[str, dict[str, float]]) -> dict:
        """``{group: summary}`` for every active intervention, from every record's
        ``diagnostics`` dict and the cell's summed ``diagnostic_sums``; needs no model."""
        return {
            i.group: i.summarise([(s or {}).get(i.group) for s in samples], sums.get(i.group, {}))
            for i in self.active_interventions
        }


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
