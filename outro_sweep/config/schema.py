"""Typed schemas: the class a config node's ``_target_`` names IS that node's schema.

Every keyword of the class's ``__init__`` (followed up its base classes where it passes
``**kwargs`` on) is a key of the node, its annotation the key's type, and markers inside
``typing.Annotated`` its range::

    alpha: Annotated[float, Range(ge=0, finite=True)] = 3.0

``check_node`` refuses, in one line naming the key, the value and the valid values: a key the
class does not take (with a "did you mean"), a value of the wrong type (``true`` is not a
number, ``"no"`` is not a bool, ``1.5`` is not an int), a value outside its range, and a
required key left at ``???``. It needs the node only, never the model.

The annotation is the one place a constraint is written: each class calls ``check_arguments``
at the top of its ``__init__``, so that building it directly (a test, library use) refuses
exactly what its config would, with the same message. Its ``__init__`` checks by hand only
what an annotation cannot say (one key against another, the model's depth or width, files).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from outro_sweep.errors import ConfigError

_MISSING = "???"
_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")  # read by instantiate, not by the class


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number (``finite``: no nan or inf)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = False

    def ok(self, value) -> bool:
        if self.finite and not math.isfinite(value):
            return False
        if math.isnan(value):
            return False
        return all(bound is None or test(value, bound) for bound, test in (
            (self.ge, lambda v, b: v >= b), (self.gt, lambda v, b: v > b),
            (self.le, lambda v, b: v <= b), (self.lt, lambda v, b: v < b)))

    def describe(self, noun: str) -> str:
        noun = f"finite {noun}" if self.finite else noun
        if noun.startswith("integers") and self.ge is not None and self.le is not None:
            return f"{noun} {_num(self.ge)}..{_num(self.le)}"
        if (self.ge is not None or self.gt is not None) and (self.le is not None or self.lt is not None):
            low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}"
            high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})"
            return f"{noun} in {low}, {high}"
        bounds = [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                  if b is not None]
        return " ".join([noun, *bounds])


@dataclasses.dataclass(frozen=True)
class NonEmpty:
    """A list (or a string) that must hold at least one element (an empty one would make the
    setting a no-op)."""

    def ok(self, value) -> bool:
        return len(value) > 0


@dataclasses.dataclass(frozen=True)
class Doc:
    """What the valid values are, in words, where the type alone says too little."""

    text: str


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def show(value) -> str:
    """A value as it is written on the command line: true, null, 3.0, [1,2], abc."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):  # quoted where it would read as another type, or needs quotes
        plain = re.fullmatch(r"[\w./:+@~-]+", value) and not re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?|true|false|null",
                                                                           value, re.IGNORECASE)
        return value if plain else repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return repr(value)


# ---- types --------------------------------------------------------------------------------


def _split(annotation) -> tuple[Any, list]:
    """(base type, Annotated markers)."""
    if typing.get_origin(annotation) is Annotated:
        base, *markers = typing.get_args(annotation)
        inner, more = _split(base)
        return inner, [*more, *markers]
    return annotation, []


def _arms(annotation) -> list | None:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return list(typing.get_args(annotation))
    return None


def matches(annotation, value) -> bool:
    """Whether a plain (resolved) config value fits the annotation, markers included."""
    base, markers = _split(annotation)
    if not _matches_base(base, value):
        return False
    for marker in markers:
        if hasattr(marker, "ok") and not _bool_or_skip(marker, value):
            return False
    return True


def _bool_or_skip(marker, value) -> bool:
    try:
        return bool(marker.ok(value))
    except TypeError:  # a range on a non-number (e.g. the null arm of an Optional): not its business
        return True


def _matches_base(base, value) -> bool:
    if base is Any or base is inspect.Parameter.empty:
        return True
    if base is None or base is type(None):
        return value is None
    arms = _arms(base)
    if arms is not None:
        return any(matches(arm, value) for arm in arms)
    origin = typing.get_origin(base)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(base))
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or base in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        return not args or all(matches(args[0], v) for v in value)
    if origin in (dict, Mapping) or base in (dict, Mapping):
        return isinstance(value, Mapping)
    if isinstance(base, type):
        # Another class (a model loader, a Lightning callback): Hydra builds it from a node.
        return isinstance(value, (Mapping, base))
    return True  # a typing construct this checker does not read: not refused


def describe(annotation) -> str:
    """The valid values of an annotation, in words: 'integers >= 1', 'true, false, official'."""
    base, markers = _split(annotation)
    for marker in markers:
        if isinstance(marker, Doc):
            return marker.text
    arms = _arms(base)
    if arms is not None:
        # Choices (literals, bools, null) read as one list: "true, false, official, or null".
        words = [describe(arm) for arm in _flat(arms)]
        return ", or ".join(dict.fromkeys(words))
    noun = _noun(base)
    for marker in markers:
        if isinstance(marker, Range):
            noun = marker.describe(noun)
        elif isinstance(marker, NonEmpty):
            noun = noun.replace("a list", "a non-empty list", 1)
    return noun


def _flat(arms: list) -> list:
    """Union arms with nested unions opened and every literal choice merged into one Literal."""
    choices, others = [], []
    for arm in arms:
        inner = _arms(arm)
        if inner is not None:
            arm_list = _flat(inner)
        else:
            arm_list = [arm]
        for one in arm_list:
            if typing.get_origin(one) is Literal:
                choices.extend(typing.get_args(one))
            elif one is bool:
                choices.extend([True, False])
            else:
                others.append(one)
    return ([Literal[tuple(dict.fromkeys(choices))]] if choices else []) + others


def _noun(base) -> str:
    origin = typing.get_origin(base)
    if base is Any or base is inspect.Parameter.empty:
        return "anything"
    if base is None or base is type(None):
        return "null"
    if origin is Literal:
        return ", ".join(dict.fromkeys(show(c) for c in typing.get_args(base)))
    if base is bool:
        return "true, false"
    if base is int:
        return "integers"
    if base is float:
        return "numbers"
    if base is str:
        return "strings"
    if origin in (list, tuple, Sequence) or base in (list, tuple, Sequence):
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        return f"a list of {describe(args[0])}" if args else "a list"
    if isinstance(base, type):
        return f"a config node ({base.__name__})"
    return str(base)


# ---- schemas -------------------------------------------------------------------------------


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keywords ``cls(...)`` takes, annotations resolved: its ``__init__``'s, and where that
    passes ``**kwargs`` on, its bases' (the first base that defines ``__init__``, and so on)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init, include_extras=True)
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name in found:
                continue
            found[param.name] = param.replace(annotation=hints.get(param.name, inspect.Parameter.empty))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return found
    return found


def target_class(node) -> type | None:
    """The class a node's ``_target_`` names (None without one); a one-line error if it does not import."""
    target = node.get("_target_") if isinstance(node, (Mapping, DictConfig)) else None
    if not isinstance(target, str):
        return None
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception as err:  # noqa: BLE001 - any import failure is a bad _target_
        raise ConfigError(f"_target_={target} does not import ({str(err).splitlines()[0]}): valid values are "
                          "a class path such as outro_sweep.models.hf_causal_lm.HFCausalLM") from None


def check_node(node, schema: type, key: str, refine: Mapping[str, Any] | None = None,
               skip: Sequence[str] = (), elsewhere: Sequence[str] = (), notes: bool = False,
               nested: bool = True) -> None:
    """Check a config node (DictConfig or dict) against ``schema``'s keywords (a class or a
    dataclass). ``key``: the node's dotted path for messages; ``refine``: stricter annotations
    for some keywords (a library's class whose annotation says only ``str``); ``skip``: keywords
    the caller passes rather than the config (an intervention's ``group``); ``elsewhere``: keys
    of the node that are checked by another schema (the config's groups); ``notes``: a key the
    schema lacks is a free-form note (``+note=...``) unless it is close to a valid key (a typo);
    ``nested``: also check a value that is itself a node (by its ``_target_`` or dataclass)."""
    params = {name: p for name, p in parameters(schema).items() if name not in skip}
    annotations = {name: p.annotation for name, p in params.items()} | dict(refine or {})
    names = [k for k in _keys(node) if k not in _HYDRA_KEYS and k not in elsewhere]
    valid = sorted({*params, *elsewhere})
    for name in names:
        if name not in params and not (notes and not difflib.get_close_matches(name, valid, n=1)):
            raise ConfigError(_unknown_key(node, name, key, valid))
    names = [name for name in names if name in params]
    for name, param in params.items():
        path = f"{key}.{name}" if key else name
        if _is_missing(node, name):
            if param.default is inspect.Parameter.empty or name in names:
                raise ConfigError(f"{path} is required (it is ??? in the config): valid values are "
                                  f"{describe(annotations[name])}")
            continue
        if name not in names:
            continue
        value = _plain(node, name)
        annotation = annotations[name]
        if not matches(annotation, value):
            raise ConfigError(f"{path}={show(value)} is invalid: valid values are {describe(annotation)}")
        if nested:
            _check_nested(node, name, path, annotation)


def check_arguments(cls: type, values: Mapping[str, Any], key: str) -> None:
    """The arguments of ``cls.__init__`` against its own annotations, as ``check_node`` checks a
    config node: ``values`` is the ``locals()`` of the top of that ``__init__`` (only its own
    keywords are read; a base's are checked by the base), ``key`` the group that prefixes the
    keys in messages (``benchmark``, ``sink``, an intervention's ``group``). A dict argument is
    a value here, not a node for Hydra to build: it is not checked as one."""
    own = [p.name for p in list(inspect.signature(cls.__dict__["__init__"]).parameters.values())[1:]
           if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    check_node({name: values[name] for name in own if name in values}, cls, key, nested=False)


def _check_nested(node, name: str, path: str, annotation) -> None:
    """A value that is itself a node: by its own ``_target_``, or by a dataclass annotation."""
    child = node[name]
    if not isinstance(child, (DictConfig, Mapping)):
        return
    cls = target_class(child)
    if cls is None:
        base, _ = _split(annotation)
        cls = next((a for a in (_arms(base) or [base]) if dataclasses.is_dataclass(a)), None)
    if cls is not None:
        check_node(child, cls, path)


def _keys(node) -> list[str]:
    return [str(k) for k in node.keys()]


def _is_missing(node, name: str) -> bool:
    if isinstance(node, DictConfig):
        return name in node.keys() and OmegaConf.is_missing(node, name)  # `in node` is False for ???
    return node.get(name) == _MISSING


def _plain(node, name: str):
    """The resolved plain value of ``node[name]`` (lists and nodes as Python containers)."""
    value = node[name]
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _unknown_key(node, name: str, key: str, valid: list[str]) -> str:
    path = f"{key}.{name}" if key else name
    value = _plain(node, name) if not _is_missing(node, name) else _MISSING
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {key + '.' if key else ''}{close[0]}?)" if close else ""
    return f"{path}={show(value)} is not a setting of {key or 'the config'}{hint}: valid keys are {', '.join(valid)}"
