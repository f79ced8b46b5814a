"""Sink dimensions (Kang et al., ICLR 2025).

    x = h_t / RMS(h_t)   (no learned gain);  sink if max over the model's sink dims of |x[d]| > tau

The dimensions are a property of the model, so they come from ``model.sink_dims`` unless
``sink.dims`` names them explicitly.
"""

from __future__ import annotations

from typing import Annotated

import torch

from outro_sweep.config.schema import NonEmpty, Range, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.base import SinkRule

# Hidden-dimension indices: non-negative (a negative one would index from the end), at least
# one (an empty list is a rule that can never fire), and below the model's hidden size
# (``check_hidden_size``, from the model's config before its weights load).
Dims = Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()]


class SinkDims(SinkRule):
    name = "sink_dims"

    def __init__(self, dims: Dims | None = None, tau: Annotated[float, Range(gt=0, finite=True)] = 20.0) -> None:
        check_arguments(SinkDims, locals(), self.config_key)
        self.dims = list(dims) if dims else []
        self.tau = float(tau)

    def configure(self, sink_dims: list[int]) -> None:
        if not self.dims:
            self.dims = list(sink_dims)
        if not self.dims:
            raise ConfigError(
                "sink.dims is empty and the model config has no sink_dims: valid values are a list of "
                "hidden-dimension indices, e.g. sink.dims=[1415,2533] for LLaMA-2-7B"
            )

    def check_hidden_size(self, hidden_size: int) -> None:
        if max(self.dims) >= hidden_size:
            raise ConfigError(
                f"sink.dims={self.dims} is out of range: valid values are 0..{hidden_size - 1} for this model"
            )

    def from_hidden_batch(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        h = hidden.detach().float()  # (B, S, D)
        if max(self.dims) >= h.shape[-1]:
            raise ConfigError(
                f"sink.dims={self.dims} is out of range: valid values are 0..{h.shape[-1] - 1} for this model"
            )
        rms = h.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (B, S, 1)
        normalised = h[..., self.dims] / rms  # (B, S, len(dims))
        return real & (normalised.abs().amax(dim=-1) > self.tau)
