"""One loaded model per process, kept for the next cell of the group.

``shared_session(loader, key, budget_gb)`` loads the model the first time and returns the kept
one while ``key`` (the resolved ``model`` config) stays the same; a cell of another model
replaces it (the caches of the old model go with it). A kept model is the stock model between
cells: every intervention undoes its edits on exit (``ModelEdits``), and before a kept model is
handed to the next cell ``check_stock`` checks it against what it was when it loaded: the same
forward hooks and pre-hooks on every module (none left by a cell), no editor on any of its
attention modules, no replay watching it, and the text decoder's attention implementation as
loaded. A violation stops the process (``NotStock``, one line): every later cell of the group
would run on a changed model.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.prefix import ACTIVE, is_output_capture
from outro_sweep.interventions.attention_hook import ACTIVE_EDITORS
from outro_sweep.interventions.decoder import attention_module, find_decoder
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
    stock: dict = field(default_factory=dict)  # ``stock_state`` of the model as loaded


class NotStock(SystemExit):
    """The model kept for the next cell of a group is not the stock model: a process-wide refusal
    (every later cell of the group would run on it), reported as its one line."""


_SESSION: SharedSession | None = None


def load_fresh(loader: ModelLoader) -> LoadedModel:
    COUNTS["model_loads"] += 1
    return loader.load()


def stock_state(model) -> dict:
    """What a cell must leave as it found it: per module (by dotted name) the ids of its forward
    hooks and pre-hooks (not transformers' own output-capturing hooks, which it installs for good
    and which are inert) and an instance ``forward`` if one replaces the class's; the text
    decoder's attention implementation."""
    modules = {}
    for name, module in model.named_modules():
        hooks = tuple(key for key, hook in module._forward_hooks.items() if not is_output_capture(hook))
        modules[name or "<model>"] = (hooks, tuple(module._forward_pre_hooks), module.__dict__.get("forward"))
    return {"modules": modules, "attention": find_decoder(model).config._attn_implementation}


def check_stock(model, stock: dict) -> None:
    """Raise ``NotStock`` (one line) unless ``model`` is as ``stock`` (its ``stock_state`` at load)
    says, with no editor on its attention modules and no replay watching it."""
    parts = find_decoder(model)
    now = stock_state(model)
    problem = None
    for name, (hooks, pre_hooks, forward) in now["modules"].items():
        was = stock["modules"].get(name, ((), (), None))
        if hooks != was[0] or pre_hooks != was[1]:
            problem = f"a forward hook left on {name}"
        elif forward is not was[2]:
            problem = f"its forward replaced on {name}"
        if problem:
            break
    if problem is None:
        editing = [index for index, layer in enumerate(parts.layers) if id(attention_module(layer)) in ACTIVE_EDITORS]
        if editing:
            problem = f"an editor still attached to the attention of decoder layer {editing[0]}"
        elif ACTIVE.get(id(model)) is not None:
            problem = "a group replay still watching it"
        elif now["attention"] != stock["attention"]:
            problem = f"its attention implementation {now['attention']!r}, loaded as {stock['attention']!r}"
    if problem is not None:
        raise NotStock(f"error: the model kept for the next cell of the group is not the stock model ({problem} "
                       "after the previous cell): an intervention's editor did not undo all it changed on exit; "
                       "fix its stop()/start(), or run with group.share=false")


def shared_session(loader: ModelLoader, key: str, budget_gb: float) -> SharedSession:
    """The process's session for model ``key``; tower outputs, prefixes and clips (with their
    batches) get a third of ``budget_gb`` each. A kept model is checked to be stock first
    (``check_stock``)."""
    global _SESSION
    if _SESSION is not None and _SESSION.key == key:
        check_stock(_SESSION.loaded.model, _SESSION.stock)
        return _SESSION
    release()
    third = int(budget_gb * GIB / 3)
    loaded = load_fresh(loader)
    _SESSION = SharedSession(key, loaded, BoundedCache(third), BoundedCache(third), BoundedCache(third),
                             stock_state(loaded.model))
    return _SESSION


def release() -> None:
    """Drop the kept model and its caches (the next cell loads afresh); their memory is returned
    at once (a collection takes a few tenths of a second, so only when there was one)."""
    global _SESSION
    if _SESSION is None:
        return
    _SESSION = None
    gc.collect()
