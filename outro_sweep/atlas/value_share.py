"""OutRo's finding (ii), per layer: the sink's value acts as a shared bias of the head outputs.

At layer l, with S the sinks of the configured rule (``sink=...``) in the prompt, N the other
tokens, o[t, h] head h's attention output (o_proj's input, (d,)) and v[s, g] the value of
token s in the head's KV group g:

    v_sink[g] = mean_{s in S} v[s, g]                        (as OutRo's relaxation uses it)
    cosine[l] = mean_{t in N, h} cos(o[t, h], v_sink[g(h)])
    share[l]  = mean_{t in N, h} sum_{s in S} P[h, t, s] * |v[s, g(h)]| / |o[t, h]|

``share`` is the size of the sinks' weighted values relative to the whole output (1 = as
large as the output). Per prompt, then the mean over the prompts that have a sink at l
(``prompts`` of them); null where none has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from outro_sweep.atlas.capture import LayerView
from outro_sweep.atlas.rules import sinks_at


def layer_share(sinks: torch.Tensor, probs: torch.Tensor, head_out: torch.Tensor, values: torch.Tensor
                ) -> tuple[float, float] | None:
    """One prompt at one layer -> (cosine, share), None without sinks or non-sink tokens.
    sinks: (n,) bool; probs: (H, n, n); head_out: (n, H, d); values: (n, H_kv, d)."""
    others = ~sinks
    if not sinks.any() or not others.any():
        return None
    heads, groups = head_out.shape[1], values.shape[1]
    per_head = values.repeat_interleave(heads // groups, dim=1)  # (n, H, d): each head's values
    v_sink = per_head[sinks].mean(dim=0)  # (H, d)
    out = head_out[others]  # (m, H, d)
    cosine = F.cosine_similarity(out, v_sink.expand_as(out), dim=-1)  # (m, H)
    weight = probs[:, others][:, :, sinks]  # (H, m, k): attention of the non-sinks to the sinks
    sink_norm = per_head[sinks].norm(dim=-1).T  # (H, k)
    carried = (weight * sink_norm[:, None, :]).sum(dim=-1).T  # (m, H)
    share = carried / out.norm(dim=-1).clamp(min=1e-12)
    return float(cosine.mean()), float(share.mean())


class ValueShare:
    name = "value_share"

    def __init__(self, layers: int, rule) -> None:
        self.rule = rule
        self.sums = [[0.0, 0.0, 0] for _ in range(layers)]  # [layer] -> [cosine sum, share sum, prompts]

    def add(self, view: LayerView) -> None:
        found = layer_share(sinks_at(self.rule, view).cpu(), view.probs, view.head_out, view.values)
        if found is not None:
            sums = self.sums[view.layer]
            sums[0] += found[0]
            sums[1] += found[1]
            sums[2] += 1

    def result(self) -> dict:
        def mean(index: int) -> list[float | None]:
            return [s[index] / s[2] if s[2] else None for s in self.sums]

        return {"rule": self.rule.name, "cosine": mean(0), "share": mean(1),
                "prompts": [s[2] for s in self.sums]}
