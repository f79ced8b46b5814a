"""Float64 building blocks of the plain-loop references that the intervention tests write from
the spec: the pieces of a decoder layer's attention that no intervention changes."""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation of the last dimension's halves: (x1, x2) -> (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """``layer`` applied in float64 to a float64 ``x``."""
    bias = None if layer.bias is None else layer.bias.double()
    return torch.nn.functional.linear(x, layer.weight.double(), bias)
