"""One loaded model per process, kept for the next cell of the group.

``shared_session(loader, key, budget_gb)`` loads the model the first time and returns the kept
one while ``key`` (the resolved ``model`` config) stays the same; a cell of another model
replaces it (the caches of the old model go with it). A kept model is the stock model between
cells: every intervention undoes its edits on exit (``ModelEdits``), which the group's tests
check against a model loaded afresh.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.models.base import LoadedModel, ModelLoader

GIB = 1024 ** 3


@dataclass
class SharedSession:
    """What the cells of one group share in this process."""

    key: str
    loaded: LoadedModel
    towers: BoundedCache  # vision/audio tower outputs by input (outro_sweep.group.towers)
    prefixes: BoundedCache  # stock decoder prefixes by batch (outro_sweep.group.prefix)
    # decoded clips by frame-cache key (outro_sweep.predict.data.ClipSource), and the model batches
    # built from them (outro_sweep.predict.data.Collator)
    clips: BoundedCache


_SESSION: SharedSession | None = None


def load_fresh(loader: ModelLoader) -> LoadedModel:
    COUNTS["model_loads"] += 1
    return loader.load()


def shared_session(loader: ModelLoader, key: str, budget_gb: float) -> SharedSession:
    """The process's session for model ``key``; tower outputs, prefixes and clips (with their
    batches) get a third of ``budget_gb`` each."""
    global _SESSION
    if _SESSION is not None and _SESSION.key == key:
        return _SESSION
    release()
    third = int(budget_gb * GIB / 3)
    _SESSION = SharedSession(key, load_fresh(loader), BoundedCache(third), BoundedCache(third), BoundedCache(third))
    return _SESSION


def release() -> None:
    """Drop the kept model and its caches (the next cell loads afresh); their memory is returned
    at once (a collection takes a few tenths of a second, so only when there was one)."""
    global _SESSION
    if _SESSION is None:
        return
    _SESSION = None
    gc.collect()
