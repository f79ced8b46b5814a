"""Sink dimensions (Kang et al., ICLR 2025).

    x = h_t / RMS(h_t)   (no learned gain);  sink if max over the model's sink dims of |x[d]| > tau

The dimensions are a property of the model, so they come from ``model.sink_dims`` unless
``sink.dims`` names them explicitly.
"""

from __future__ import annotations

import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.base import SinkRule


class SinkDims(SinkRule):
    name = "sink_dims"

    def __init__(self, dims: list[int] | None = None, tau: float = 20.0) -> None:
        if not tau > 0:
            raise ConfigError(f"sink.tau={tau} is invalid: valid values are numbers > 0")
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

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.detach().float()  # (n, D)
        if max(self.dims) >= h.shape[-1]:
            raise ConfigError(
                f"sink.dims={self.dims} is out of range: valid values are 0..{h.shape[-1] - 1} for this model"
            )
        rms = h.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (n, 1)
        normalised = h[:, self.dims] / rms  # (n, len(dims))
        return normalised.abs().amax(dim=-1) > self.tau
