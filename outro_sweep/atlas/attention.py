"""First-token attention mass per head and Gu et al.'s sink rate (ICLR 2025), per layer.

    mass[l, h] = (1/n) sum_t P[l, h, t, 0]     (mean over ALL n queries, as Gu et al. define it)
    sink_rate[l] = share of heads h of layer l with mass[l, h] > eps

Per prompt; ``mass`` is then the mean over prompts and ``sink_rate`` the mean over prompts of
each prompt's share (Gu et al. average the metric over sequences). ``eps`` is ``atlas.eps`` (0.3).
"""

from __future__ import annotations

import torch

from outro_sweep.atlas.capture import LayerView


def first_token_mass(probs: torch.Tensor) -> torch.Tensor:
    """probs: (H, n, n) query x key -> (H,) mean attention every query pays to token 0."""
    return probs[:, :, 0].float().mean(dim=-1)


class FirstTokenAttention:
    name = "attention"

    def __init__(self, layers: int, eps: float) -> None:
        self.eps = eps
        self.mass: list[list[torch.Tensor]] = [[] for _ in range(layers)]  # [layer][prompt] -> (H,)

    def add(self, view: LayerView) -> None:
        self.mass[view.layer].append(first_token_mass(view.probs))

    def result(self) -> dict:
        per_head = [torch.stack(prompts).mean(dim=0).tolist() for prompts in self.mass]  # [layer][head]
        rate = [float(torch.stack([(m > self.eps).float().mean() for m in prompts]).mean()) for prompts in self.mass]
        heads = sum(len(m[0]) for m in self.mass)
        overall = sum(r * len(m[0]) for r, m in zip(rate, self.mass)) / heads
        return {"eps": self.eps, "mass_per_head": per_head, "mass": [sum(h) / len(h) for h in per_head],
                "sink_rate": rate, "model_sink_rate": overall}
