"""OutRo's (ii) in the atlas (outro_sweep.atlas.value_share) on a tiny random Llama: the captured
head outputs are the attention-weighted values (o[t, h] = sum_s P[h, t, s] v[s, g(h)]), and the
cosine and value share match a plain-loop reference with planted sinks."""

from __future__ import annotations

import math

import pytest
import torch

from outro_sweep.atlas.capture import capture
from outro_sweep.atlas.value_share import layer_share
from outro_sweep.models.hf_causal_lm import HFCausalLM

PROMPT = "The capital of France is Paris, and the capital of Italy is Rome."


@pytest.fixture(scope="module")
def sample(tiny_model_dir):
    loader = HFCausalLM(path=str(tiny_model_dir), name="tiny", attn_implementation="eager", use_chat_template=False)
    loaded = loader.load()
    views = []
    capture(loaded, loader.inputs(loaded.processor, [PROMPT], [None]), loader.num_layers(), views.append)
    return views


def test_head_outputs_are_weighted_values(sample):
    for probs, out, values in ((v.probs, v.head_out, v.values) for v in sample):
        per_head = values.repeat_interleave(out.shape[1] // values.shape[1], dim=1)  # (n, H, d)
        expected = torch.einsum("hts,shd->thd", probs, per_head)
        assert torch.allclose(out, expected, atol=1e-5)


def reference(sinks: list[int], probs, out, values) -> tuple[float, float]:
    heads, groups, n = out.shape[1], values.shape[1], out.shape[0]
    cosines, shares = [], []
    for t in range(n):
        if t in sinks:
            continue
        for h in range(heads):
            g = h // (heads // groups)
            v_sink = [sum(float(values[s, g, i]) for s in sinks) / len(sinks) for i in range(values.shape[2])]
            o = [float(x) for x in out[t, h]]
            dot = sum(a * b for a, b in zip(o, v_sink))
            norm_o = math.sqrt(sum(a * a for a in o))
            cosines.append(dot / (norm_o * math.sqrt(sum(b * b for b in v_sink))))
            carried = sum(float(probs[h, t, s]) * math.sqrt(sum(float(x) ** 2 for x in values[s, g])) for s in sinks)
            shares.append(carried / norm_o)
    return sum(cosines) / len(cosines), sum(shares) / len(shares)


@pytest.mark.parametrize("planted", [[0], [0, 3], [2, 5, 7]])
def test_matches_plain_loop_reference(sample, planted):
    n = sample[0].probs.shape[1]
    sinks = torch.zeros(n, dtype=torch.bool)
    sinks[planted] = True
    for view in (sample[0], sample[3]):
        found = layer_share(sinks, view.probs, view.head_out, view.values)
        expected = reference(planted, view.probs, view.head_out, view.values)
        assert found == pytest.approx(expected, abs=1e-5)


def test_no_sink_no_number(sample):
    view = sample[0]
    n = view.probs.shape[1]
    assert layer_share(torch.zeros(n, dtype=torch.bool), view.probs, view.head_out, view.values) is None
    assert layer_share(torch.ones(n, dtype=torch.bool), view.probs, view.head_out, view.values) is None
