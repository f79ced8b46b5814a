"""An editor's settings as one hashable value, derived from its typed ``__init__``.

``Editor.replay_signature`` (``base.py``) is the editor's class with every argument its
constructor was given after the model, made hashable here (``canonical``), so that two editors
with equal signatures are configured alike and a setting added to a constructor later is part of
it without anyone listing it. The group replay compares signatures to decide whether two cells
compute a layer alike (``outro_sweep.group.replayable``).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping, Sequence, Set
from typing import Any


class Opaque:
    """A setting with no value semantics (a module, a tensor, a callable made per cell): equal
    only to itself, so two editors that hold different such objects never share a layer."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value  # kept alive, so that its identity cannot be reused while compared

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)

    def __repr__(self) -> str:
        return f"<{type(self.value).__qualname__} at {id(self.value):#x}>"


def canonical(value: Any, depth: int = 0) -> Hashable:
    """``value`` as a hashable value, equal for equal settings: numbers, strings and None as they
    are (3 and 3.0 alike), sequences and mappings element by element, an enum by its value, a
    plain settings object (a sink rule) by its class and attributes; anything else (a module, a
    tensor, a function, an object nested more than a few levels deep) by identity (``Opaque``)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if depth > 4:
        return Opaque(value)
    if isinstance(value, enum.Enum):
        return (type(value).__qualname__, canonical(value.value, depth + 1))
    if isinstance(value, Mapping):
        items = ((repr(key), canonical(item, depth + 1)) for key, item in value.items())
        return ("{}", tuple(sorted(items, key=lambda pair: pair[0])))
    if isinstance(value, Set):
        return ("set", tuple(sorted((canonical(item, depth + 1) for item in value), key=repr)))
    if isinstance(value, Sequence):
        return ("[]", tuple(canonical(item, depth + 1) for item in value))
    if _is_settings_object(value):
        return (type(value).__module__, type(value).__qualname__, canonical(vars(value), depth + 1))
    return Opaque(value)


def _is_settings_object(value: Any) -> bool:
    """An instance of a plain Python class, whose attributes are its settings; not a function, a
    class, or anything of torch or transformers (whose state is not a setting)."""
    module = type(value).__module__.split(".")[0]
    return (hasattr(value, "__dict__") and not callable(value) and not isinstance(value, type)
            and module not in ("torch", "transformers", "builtins"))
