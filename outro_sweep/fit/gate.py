"""LSG's trained gate (spec §6): at layer l, LayerNorm on the last input token's hidden state,
then D -> 64 -> 2 and a softmax, giving (rho_vsink, rho_rest) per prompt. It feeds
``LayerSinkGate`` (outro_sweep/interventions/lsg.py) as that layer's ``weights``, so the oracle
and the trained gate share one key-scaling mechanism.

The last linear layer starts at zero, so an untrained gate outputs exactly (0.5, 0.5): with
``lsg.scale=two_rho`` every visual key is scaled by 1.0 and the model is the stock model bit for
bit. The hidden activation is not named by the paper; GELU is used here.
"""

from __future__ import annotations

import torch

HIDDEN = 64  # the paper's width: ~262K parameters at D = 4096


class SinkGate(torch.nn.Module):
    """(B, D) hidden states, any dtype -> (B, 2) float32 softmax weights (rho_vsink, rho_rest)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden_size)
        self.up = torch.nn.Linear(hidden_size, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, 2)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # float32 whatever the backbone's dtype: the gate is small and its softmax decides scales
        return torch.softmax(self.out(torch.nn.functional.gelu(self.up(self.norm(hidden.float())))), dim=-1)
