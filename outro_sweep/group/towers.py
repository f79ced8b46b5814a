"""Vision and audio tower outputs, computed once per clip for a group of cells.

No intervention edits a tower, so every cell of a group gets the same tower output from the
same pixels (or audio features). While a cell predicts, ``TowerCache`` swaps each tower's
``forward`` for one that keys the call on its exact input tensors and reuses a kept output. The
module's own ``__call__`` still runs the tower's hooks around it, so a hook on the tower itself
(LSG's V-sink probe on a Qwen tower) reads the kept output as it would the computed one. A
tower with hooks on its submodules (the probe on a LLaVA tower's last LayerNorm) is always
computed: a kept output would skip those hooks.
"""

from __future__ import annotations

import copy

import torch

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.fingerprint import tensor_digest
from outro_sweep.group.memory import BoundedCache
from outro_sweep.models.video_lm import family_of


def find_towers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{dotted name: tower module} of ``model``: the towers its family's loader names
    (``ModelLoader.towers``), on the model or on its inner ``model``; empty for a text model or a
    model of no known family."""
    family = family_of(model.config.model_type)
    found = {}
    for owner_name in ("", "model"):
        owner = model.get_submodule(owner_name) if owner_name else model
        for name in family.towers if family is not None else ():
            tower = getattr(owner, name, None)
            if isinstance(tower, torch.nn.Module) and all(tower is not t for t in found.values()):
                found[f"{owner_name}.{name}".lstrip(".")] = tower
    return found


def _hooked_inside(tower: torch.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in tower.modules() if m is not tower)


class TowerCache:
    """Context manager: the towers of ``model`` reuse outputs kept in ``store`` (by model, tower
    and input tensors) while inside ``with``."""

    def __init__(self, model: torch.nn.Module, store: BoundedCache) -> None:
        self.model = model
        self.towers = find_towers(model)
        self.store = store

    def __enter__(self) -> "TowerCache":
        for name, tower in self.towers.items():
            tower.forward = self._cached(name, tower, tower.forward)
        return self

    def __exit__(self, *exc) -> None:
        for tower in self.towers.values():
            tower.__dict__.pop("forward", None)

    def _cached(self, name: str, tower: torch.nn.Module, forward):
        def cached_forward(*args, **kwargs):
            if _hooked_inside(tower):
                COUNTS["tower_runs"] += 1
                return forward(*args, **kwargs)
            key = (id(self.model), name, tensor_digest([list(args), kwargs]))
            kept = self.store.get(key)
            if kept is not None:
                COUNTS["tower_reuses"] += 1
                return copy.copy(kept)
            COUNTS["tower_runs"] += 1
            output = forward(*args, **kwargs)
            # Callers reassign fields of the output object (Qwen splits pooler_output per clip):
            # keep a shallow copy, hand out shallow copies; the tensors themselves are not written.
            self.store.put(key, copy.copy(output))
            return output

        return cached_forward
