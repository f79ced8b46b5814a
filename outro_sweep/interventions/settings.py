"""OutRo's settings checks, importable without torch so bad input fails in a second."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from outro_sweep.config.schema import NonEmpty, Range
from outro_sweep.errors import ConfigError

# outro.layer: one layer index, a non-empty list of them, auto, or null (no relaxation).
LayerSpec = (Annotated[int, Range(ge=0)] | Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()] | Literal["auto"]
             | None)
Alpha = Annotated[float, Range(ge=0, finite=True)]
Temperature = Annotated[float, Range(gt=0, finite=True)]
RotateDecode = bool | Literal["official"]


def relaxation_layers(layer: LayerSpec, num_layers: int) -> list[int]:
    """Resolve ``outro.layer`` to a sorted list of layer indices.

    null -> no relaxation; ``auto`` -> the paper's schedule, every multiple of
    k = max(1, floor(L / 7)) below L - 2; an int or a list -> those layers.
    """
    valid = f"valid values are integers 0..{num_layers - 1}, a list of them, auto or null"
    if layer is None:
        return []
    if isinstance(layer, str):
        if layer == "auto":
            step = max(1, num_layers // 7)
            return list(range(0, num_layers - 2, step))
        raise ConfigError(f"outro.layer={layer!r} is invalid: {valid}")
    if isinstance(layer, int):
        layers = [layer]
    elif isinstance(layer, (list, tuple)):
        layers = list(layer)
    else:  # a float, a mapping, ...: not a layer index nor a list of them
        raise ConfigError(f"outro.layer={layer!r} is invalid: {valid}")
    for value in layers:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_layers:
            raise ConfigError(f"outro.layer={layer!r} is out of range: {valid}")
    return sorted(set(layers))


def check_strengths(alpha: float, temperature: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or math.isnan(alpha) or math.isinf(alpha) or alpha < 0:
        raise ConfigError(f"outro.alpha={alpha} is invalid: valid values are finite numbers >= 0 (paper: 3.0)")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"outro.temperature={temperature} is invalid: valid values are finite numbers > 0 (paper: 0.1)")


def check_layer_syntax(layer: LayerSpec) -> None:
    """``outro.layer`` before the model's depth is known: an int >= 0, a non-empty list of them,
    auto or null (``relaxation_layers`` checks the range against the model)."""
    if layer is None or layer == "auto":
        return
    values = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if isinstance(layer, str) or not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                     for v in values):
        raise ConfigError(f"outro.layer={layer!r} is invalid: valid values are integers >= 0, a list of them, "
                          "auto or null")


# outro.rotate_decode: True rotates decode-step outputs toward the prefill's sink value mean at
# every layer whose prompt had sinks; False leaves decode steps alone; "official" reproduces the
# released code's decode step (rotated only at sink layers whose sinks exclude position 0).
ROTATE_DECODE_VALUES = (True, False, "official")


def check_rotate_decode(value: object) -> None:
    """Only the bools and the exact string "official": a CLI ``no`` or ``maybe`` arrives as a
    string and must not be taken as truthy, nor 1/0 as bools."""
    if isinstance(value, bool) or (isinstance(value, str) and value == "official"):
        return
    raise ConfigError(f"outro.rotate_decode={value!r} is invalid: valid values are true, false, official")
