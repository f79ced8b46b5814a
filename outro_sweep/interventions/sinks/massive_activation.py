"""Massive-activation sinks (Sun et al. 2024, as used by OutRo).

    A = |h|;  thr = max(abs_threshold, median_ratio * median(A));  sink if max_d A[t, d] >= thr

The median is taken over every real token and every dimension of the row, and is
``torch.median``'s lower median for an even count.
"""

from __future__ import annotations

from typing import Annotated

import torch

from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.interventions.sinks.base import SinkRule

Threshold = Annotated[float, Range(ge=0, finite=True)]


class MassiveActivation(SinkRule):
    name = "massive_activation"

    def __init__(self, abs_threshold: Threshold = 100.0, median_ratio: Threshold = 1000.0) -> None:
        check_arguments(MassiveActivation, locals(), self.config_key)
        self.abs_threshold = float(abs_threshold)
        self.median_ratio = float(median_ratio)

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        magnitude = hidden.detach().abs().float()  # (n, D)
        threshold = max(self.abs_threshold, self.median_ratio * magnitude.median().item())
        return magnitude.amax(dim=-1) >= threshold  # (n,)
