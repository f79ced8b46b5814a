"""Sink dimensions found automatically (Kang et al., ICLR 2025), per layer.

With x = h / RMS(h) per token (no gain), a dimension d is a sink dimension of a prompt at a
layer if it is massive on a FEW tokens: 1 <= #{t : |x[t, d]| > tau} <= max(1, floor(share * n))
(a dimension above tau on most tokens is an offset, not a sink). ``tau`` is ``atlas.tau``,
``share`` is ``atlas.dim_share``. A layer's dims are those found in at least half of the
prompts; the model's dims (``dims``, for ``sink=sink_dims``) are those that are a layer's dims
at ``MIN_LAYERS`` layers or more, the most layers first: a massive activation persists across
layers once it appears (Sun et al.), while a dimension that crosses tau at one layer only is
noise of that layer.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from outro_sweep.atlas.capture import LayerView

MIN_LAYERS = 2


def sink_dimensions(hidden: torch.Tensor, tau: float, share: float) -> list[int]:
    """hidden: (n, D) one prompt's residual stream at one layer -> its sink dimensions."""
    h = hidden.float()
    x = h / h.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-12)  # (n, D)
    count = (x.abs() > tau).sum(dim=0)  # (D,) tokens above tau per dimension
    few = max(1, math.floor(share * h.shape[0]))
    return ((count >= 1) & (count <= few)).nonzero().flatten().tolist()


class SinkDimensions:
    name = "dims"

    def __init__(self, layers: int, tau: float, share: float) -> None:
        self.tau, self.share = tau, share
        self.found = [Counter() for _ in range(layers)]  # [layer] dim -> prompts where it is a sink dim
        self.prompts = 0

    def add(self, view: LayerView) -> None:
        self.prompts += view.layer == 0
        self.found[view.layer].update(sink_dimensions(view.hidden, self.tau, self.share))

    def result(self) -> dict:
        per_layer = [{str(dim): count / self.prompts for dim, count in sorted(counter.items())}
                     for counter in self.found]
        layer_dims = [sorted(dim for dim, count in counter.items() if count >= self.prompts / 2)
                      for counter in self.found]
        layers_of = Counter(dim for dims in layer_dims for dim in dims)
        dims = [dim for dim, count in sorted(layers_of.items(), key=lambda item: (-item[1], item[0]))
                if count >= MIN_LAYERS]
        return {"tau": self.tau, "share": self.share, "per_layer": per_layer, "layer_dims": layer_dims,
                "dims": dims, "layers_per_dim": {str(d): n for d, n in sorted(layers_of.items())}}
