"""OutRo's settings as annotations (checked by ``config.schema``), importable without torch so
bad input fails in a second, and the one check that needs the model's depth."""

from __future__ import annotations

from typing import Annotated, Literal

from outro_sweep.config.schema import NonEmpty, Range
from outro_sweep.errors import ConfigError

# outro.layer: one layer index, a non-empty list of them, auto, or null (no relaxation).
LayerSpec = (Annotated[int, Range(ge=0)] | Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()] | Literal["auto"]
             | None)
Alpha = Annotated[float, Range(ge=0, finite=True)]
Temperature = Annotated[float, Range(gt=0, finite=True)]
# outro.rotate_decode: True rotates decode-step outputs toward the prefill's sink value mean at
# every layer whose prompt had sinks; False leaves decode steps alone; "official" reproduces the
# released code's decode step (rotated only at sink layers whose sinks exclude position 0).
RotateDecode = bool | Literal["official"]  # a CLI no or 1 is neither


def relaxation_layers(layer: LayerSpec, num_layers: int) -> list[int]:
    """Resolve ``outro.layer`` to a sorted list of layer indices.

    null -> no relaxation; ``auto`` -> the paper's schedule, every multiple of
    k = max(1, floor(L / 7)) below L - 2; an int or a list -> those layers.
    """
    if layer is None:
        return []
    if layer == "auto":
        step = max(1, num_layers // 7)
        return list(range(0, num_layers - 2, step))
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    # Its syntax is LayerSpec's (checked before); only the range needs the model's depth.
    if any(not 0 <= value < num_layers for value in layers):
        raise ConfigError(f"outro.layer={layer!r} is out of range: valid values are integers 0..{num_layers - 1}, "
                          "a list of them, auto or null")
    return sorted(set(layers))

