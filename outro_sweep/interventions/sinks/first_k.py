"""StreamingLLM's rule: the first k real tokens are sinks, at every scanned layer."""

from __future__ import annotations

from typing import Annotated

import torch

from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.interventions.sinks.base import SinkRule


class FirstK(SinkRule):
    name = "first_k"

    def __init__(self, k: Annotated[int, Range(ge=1)] = 1) -> None:
        check_arguments(FirstK, locals(), self.config_key)
        self.k = k

    def from_hidden_batch(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        rank = real.long().cumsum(dim=1) - 1  # (B, S) index among the row's real tokens
        return real & (rank < self.k)
