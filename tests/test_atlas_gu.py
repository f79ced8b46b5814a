"""Gu et al.'s first-token mass and sink rate (outro_sweep.atlas.attention) against a plain-loop
reference, on a tiny random Llama whose attention pattern is known: layer 0's queries are zeroed,
so every query attends uniformly to itself and every earlier token (P[t, 0] = 1 / (t + 1))."""

from __future__ import annotations

import pytest
import torch

from outro_sweep.atlas.attention import FirstTokenAttention
from outro_sweep.atlas.capture import capture
from outro_sweep.models.hf_causal_lm import HFCausalLM

PROMPTS = ["The capital of France is Paris.", "Two plus two is four, and three plus three is six.",
           "Sinks absorb attention."]
EPS = 0.3


@pytest.fixture(scope="module")
def samples(tiny_model_dir):
    loader = HFCausalLM(path=str(tiny_model_dir), name="tiny", attn_implementation="eager", use_chat_template=False)
    loaded = loader.load()
    with torch.no_grad():
        loaded.model.model.layers[0].self_attn.q_proj.weight.zero_()  # uniform causal attention at layer 0
    layers = loader.num_layers()
    prompts = []  # per prompt, its layers' (H, n, n) probabilities
    for text in PROMPTS:
        views = []
        capture(loaded, loader.inputs(loaded.processor, [text], [None]), layers, views.append)
        assert [view.layer for view in views] == list(range(layers))
        prompts.append(views)
    return prompts


def analysed(samples) -> dict:
    analysis = FirstTokenAttention(len(samples[0]), EPS)
    for views in samples:
        for view in views:
            analysis.add(view)
    return analysis.result()


def reference(samples, eps: float) -> tuple[list[list[float]], list[float]]:
    """Per layer: per-head mass (mean over prompts), and the sink rate (mean over prompts of the
    share of heads whose mass exceeds eps), with plain loops."""
    layers, heads = len(samples[0]), samples[0][0].probs.shape[0]
    mass, rate = [], []
    for layer in range(layers):
        per_head = [0.0] * heads
        share_sum = 0.0
        for views in samples:
            probs = views[layer].probs
            n = probs.shape[1]
            sinks = 0
            for head in range(heads):
                total = 0.0
                for query in range(n):
                    total += float(probs[head, query, 0])
                value = total / n
                per_head[head] += value / len(samples)
                sinks += value > eps
            share_sum += sinks / heads
        mass.append(per_head)
        rate.append(share_sum / len(samples))
    return mass, rate


def test_known_pattern_at_layer_0(samples):
    for views in samples:
        probs = views[0].probs
        n = probs.shape[1]
        expected = torch.tensor([1.0 / (t + 1) for t in range(n)])
        assert torch.allclose(probs[:, :, 0], expected.expand(probs.shape[0], n), atol=1e-6)
    result = analysed(samples)
    lengths = [views[0].probs.shape[1] for views in samples]
    harmonic = [sum(1.0 / (t + 1) for t in range(n)) / n for n in lengths]
    assert result["mass_per_head"][0] == pytest.approx([sum(harmonic) / len(samples)] * 4, abs=1e-6)
    # (1/n) H_n: above 0.3 for a short prompt (n <= 7 tokens), below for a longer one.
    expected_rate = sum(h > EPS for h in harmonic) / len(samples)
    assert result["sink_rate"][0] == pytest.approx(expected_rate)
    assert 0 < expected_rate < 1  # the prompts straddle the threshold, so the rate is really tested


def test_matches_plain_loop_reference(samples):
    result = analysed(samples)
    mass, rate = reference(samples, EPS)
    for layer in range(len(mass)):
        assert result["mass_per_head"][layer] == pytest.approx(mass[layer], abs=1e-6)
        assert result["sink_rate"][layer] == pytest.approx(rate[layer], abs=1e-6)  # float32 shares
    heads = [len(m) for m in mass]
    assert result["model_sink_rate"] == pytest.approx(sum(r * h for r, h in zip(rate, heads)) / sum(heads))
