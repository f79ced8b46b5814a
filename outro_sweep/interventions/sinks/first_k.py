"""StreamingLLM's rule: the first k real tokens are sinks, at every scanned layer."""

from __future__ import annotations

from typing import Annotated

import torch

from outro_sweep.config.schema import Range
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.base import SinkRule


class FirstK(SinkRule):
    name = "first_k"

    def __init__(self, k: Annotated[int, Range(ge=1)] = 1) -> None:
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"sink.k={k!r} is invalid: valid values are integers >= 1")
        self.k = k

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        sinks = torch.zeros(hidden.shape[0], dtype=torch.bool, device=hidden.device)
        sinks[: self.k] = True
        return sinks
