"""Massive activations per layer (Sun et al. 2024): the top-3 |h| and the median |h| of the
residual stream entering each layer, and which tokens and dimensions carry the top-3.

Per prompt, over its n real tokens x D dimensions; the numbers are means over prompts and
the carriers are counted over prompts (a carrier is a (position, dimension) pair).
"""

from __future__ import annotations

from collections import Counter

import torch

from outro_sweep.atlas.capture import LayerView

TOP = 3


class MassiveActivations:
    name = "massive"

    def __init__(self, layers: int) -> None:
        self.top: list[list[list[float]]] = [[] for _ in range(layers)]  # [layer][prompt] -> top-3 |h|
        self.median: list[list[float]] = [[] for _ in range(layers)]  # [layer][prompt]
        self.carriers = [Counter() for _ in range(layers)]  # [layer] (position, dim) among each prompt's top-3
        self.texts: list[dict] = [{} for _ in range(layers)]  # [layer] (position, dim) -> token string, first seen
        self.prompts = 0

    def add(self, view: LayerView) -> None:
        self.prompts += view.layer == 0
        magnitude = view.hidden.abs()  # (n, D)
        width = magnitude.shape[1]
        values, flat = magnitude.flatten().topk(min(TOP, magnitude.numel()))
        self.top[view.layer].append(values.tolist())
        self.median[view.layer].append(float(magnitude.median()))
        for index in flat.tolist():
            key = (index // width, index % width)
            self.carriers[view.layer][key] += 1
            self.texts[view.layer].setdefault(key, view.tokens[key[0]] if view.tokens else "")

    def result(self) -> dict:
        top = [torch.tensor(per_prompt).mean(dim=0).tolist() for per_prompt in self.top]
        median = [sum(values) / len(values) for values in self.median]
        carriers = [
            [{"position": pos, "dim": dim, "text": texts[(pos, dim)], "share": count / self.prompts}
             for (pos, dim), count in counter.most_common(TOP)]
            for counter, texts in zip(self.carriers, self.texts)
        ]
        return {"top3": top, "median": median, "ratio": [t[0] / max(m, 1e-12) for t, m in zip(top, median)],
                "carriers": carriers, "prompts": self.prompts}
