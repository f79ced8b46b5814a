"""Attention-mass sinks (Gu et al., ICLR 2025).

    mass[t] = mean over heads h and later queries i > t of P[h, i, t];  sink if mass[t] > eps

"Later" is strict and counts real queries only, so the last token (which no query follows) is
never a sink. Needs the attention probabilities, so a model run with this rule uses the eager
attention path.
"""

from __future__ import annotations

from typing import Annotated

import torch

from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.interventions.sinks.base import SinkRule


class AttentionMass(SinkRule):
    name = "attention_mass"
    needs_attention_probs = True

    def __init__(self, eps: Annotated[float, Range(gt=0, lt=1)] = 0.3) -> None:
        check_arguments(AttentionMass, locals(), self.config_key)
        self.eps = float(eps)

    def from_attention_batch(self, probs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        p = probs.detach().float()  # (B, H, S, S) query x key
        heads, seq = p.shape[1], p.shape[-1]
        after = torch.ones(seq, seq, dtype=torch.bool, device=p.device).tril(diagonal=-1)  # [i, t]: i > t
        later = after & real[:, :, None]  # (B, S, S): query i is real and follows key t
        summed = (p.sum(dim=1) * later).sum(dim=1)  # (B, S) over heads and later queries
        count = later.sum(dim=1) * heads  # (B, S) later real queries per key, times heads
        mass = summed / count.clamp(min=1)
        return real & (mass > self.eps) & (count > 0)
