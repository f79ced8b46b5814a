"""A least-recently-used store bounded in bytes: the one eviction policy of the group's caches."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch


def nbytes(value: Any, seen: set | None = None) -> int:
    """Bytes held by the tensors (and numpy arrays) inside ``value``, nested containers included;
    a tensor storage reached twice (a layer's output that is the next layer's input) counts once."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if hasattr(value, "nbytes") and not isinstance(value, (str, bytes)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v, seen) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, name), seen) for name in value.__dataclass_fields__)
    if hasattr(value, "to_tuple"):  # transformers' ModelOutput
        return nbytes(value.to_tuple(), seen)
    return 0


class BoundedCache:
    """``get``/``put`` by key; the least recently used entries go once the bytes exceed ``budget``.
    An entry larger than the whole budget is not kept."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self.entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.used = 0

    def get(self, key: Hashable) -> Any | None:
        found = self.entries.get(key)
        if found is None:
            return None
        self.entries.move_to_end(key)
        return found[0]

    def keys(self) -> list:
        """The keys kept now, least recently used first (reading them does not touch the order)."""
        return list(self.entries)

    def put(self, key: Hashable, value: Any, evict: bool = True) -> bool:
        """Keep ``value`` under ``key``; False when it is not kept: larger than the budget, or, with
        ``evict=False``, larger than what is free (an entry already under ``key`` then stays)."""
        size = nbytes(value)
        held = self.entries[key][1] if key in self.entries else 0
        if size > self.budget or (not evict and self.used - held + size > self.budget):
            if evict and key in self.entries:
                self.used -= self.entries.pop(key)[1]
            return False
        if key in self.entries:
            self.used -= self.entries.pop(key)[1]
        while self.entries and self.used + size > self.budget:
            self.used -= self.entries.popitem(last=False)[1][1]
        self.entries[key] = (value, size)
        self.used += size
        return True

    def clear(self) -> None:
        self.entries.clear()
        self.used = 0
