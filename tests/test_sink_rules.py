"""Unit tests of the four sink rules (spec §1) on hand-made tensors with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.attention_mass import AttentionMass
from outro_sweep.interventions.sinks.first_k import FirstK
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.interventions.sinks.sink_dims import SinkDims


def flags(mask: torch.Tensor) -> list[bool]:
    assert mask.dtype == torch.bool
    assert mask.dim() == 1
    return mask.tolist()


# ---- massive_activation: thr = max(abs_thr, ratio * median|h|); sink if max_d |h| >= thr ----------


HIDDEN = torch.tensor(
    [
        [1.0, -2.0, 3.0, 4.0],  # max |h| = 4
        [100.0, 0.0, 0.0, 0.0],  # max |h| = 100 (exactly the absolute threshold)
        [0.0, -150.0, 1.0, 1.0],  # max |h| = 150, negative: the rule reads |h|
    ]
)
# |h| sorted: 0 0 0 0 1 1 1 2 3 4 100 150 -> 12 values, lower median (index 5) = 1.


def test_massive_activation_defaults_find_nothing_when_ratio_dominates():
    # thr = max(100, 1000 * 1) = 1000: nothing reaches it.
    assert flags(MassiveActivation().from_hidden(HIDDEN)) == [False, False, False]


def test_massive_activation_value_exactly_at_threshold_counts():
    # thr = max(100, 50 * 1) = 100; token 1 has exactly 100 (>=), token 2 has |-150|.
    assert flags(MassiveActivation(abs_threshold=100, median_ratio=50).from_hidden(HIDDEN)) == [False, True, True]
    # Nudging the absolute threshold just above 100 drops token 1.
    assert flags(MassiveActivation(abs_threshold=100.001, median_ratio=50).from_hidden(HIDDEN)) == [False, False, True]


def test_massive_activation_threshold_is_the_max_of_both_terms():
    # Median |h| = 10, so thr = max(100, 1000 * 10) = 10000: 9000 is above the absolute
    # threshold but below ratio * median, hence not a sink; 10000 is exactly at it.
    h = torch.full((3, 5), 10.0)
    h[1, 2] = 9000.0
    h[2, 4] = -10000.0
    assert flags(MassiveActivation(abs_threshold=100, median_ratio=1000).from_hidden(h)) == [False, False, True]
    # With a tiny ratio the absolute threshold governs: thr = max(20, 0.5 * 10) = 20.
    assert flags(MassiveActivation(abs_threshold=20, median_ratio=0.5).from_hidden(h)) == [False, True, True]


def test_massive_activation_uses_the_lower_median_over_tokens_and_dims():
    # |h| = 1 3 5 700: lower median 3 -> thr = 200 * 3 = 600 -> token 1 (700) is a sink.
    # The midpoint median (4) would give 800 and the upper median (5) 1000: no sink.
    h = torch.tensor([[1.0, -3.0], [5.0, 700.0]])
    assert flags(MassiveActivation(abs_threshold=0, median_ratio=200).from_hidden(h)) == [False, True]
    # Just above: 234 * 3 = 702 > 700.
    assert flags(MassiveActivation(abs_threshold=0, median_ratio=234).from_hidden(h)) == [False, False]


def test_massive_activation_rejects_negative_thresholds():
    with pytest.raises(ConfigError, match="sink.abs_threshold"):
        MassiveActivation(abs_threshold=-1)
    with pytest.raises(ConfigError, match="sink.median_ratio"):
        MassiveActivation(median_ratio=float("nan"))


# ---- first_k -----------------------------------------------------------------------------------


def test_first_k_marks_the_first_k_real_tokens():
    h = torch.randn(5, 8)
    assert flags(FirstK(1).from_hidden(h)) == [True, False, False, False, False]
    assert flags(FirstK(3).from_hidden(h)) == [True, True, True, False, False]
    # k larger than the sequence: every token.
    assert flags(FirstK(4).from_hidden(h[:2])) == [True, True]
    # Independent of the values.
    assert flags(FirstK(2).from_hidden(torch.zeros(3, 8))) == [True, True, False]


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_first_k_rejects_bad_k(k):
    with pytest.raises(ConfigError, match="sink.k"):
        FirstK(k)


# ---- sink_dims: x = h / RMS(h) (no gain, no eps); sink if max over dims |x[d]| > tau -----------------


SINK_DIMS_HIDDEN = torch.tensor(
    [
        [4.0, 0.0, 0.0, 0.0],  # RMS = sqrt(16 / 4) = 2 -> x = [2, 0, 0, 0]
        [0.0, 0.0, 6.0, -8.0],  # RMS = sqrt(100 / 4) = 5 -> x = [0, 0, 1.2, -1.6]
        [1.0, 1.0, 1.0, 1.0],  # RMS = 1 -> x = 1 everywhere
        [0.0, 0.0, 0.0, 9.0],  # RMS = 4.5 -> x = [0, 0, 0, 2]
    ]
)


def test_sink_dims_rms_normalisation_without_gain():
    rule = SinkDims(dims=[0, 3], tau=1.5)
    assert flags(rule.from_hidden(SINK_DIMS_HIDDEN)) == [True, True, False, True]
    # Only the listed dims count: dim 3 carries token 3's outlier.
    assert flags(SinkDims(dims=[0, 2], tau=1.5).from_hidden(SINK_DIMS_HIDDEN)) == [True, False, False, False]
    # |x| = 1.6 for token 1 (dim 3, negative): sink for tau 1.55, not for 1.65.
    assert flags(SinkDims(dims=[3], tau=1.55).from_hidden(SINK_DIMS_HIDDEN)) == [False, True, False, True]
    assert flags(SinkDims(dims=[3], tau=1.65).from_hidden(SINK_DIMS_HIDDEN)) == [False, False, False, True]


def test_sink_dims_is_strict_and_scale_invariant():
    # x = 2 exactly for tokens 0 (dim 0) and 3 (dim 3): tau = 2 is NOT exceeded (strict >).
    assert flags(SinkDims(dims=[0, 3], tau=2.0).from_hidden(SINK_DIMS_HIDDEN)) == [False, False, False, False]
    assert flags(SinkDims(dims=[0, 3], tau=1.999).from_hidden(SINK_DIMS_HIDDEN)) == [True, False, False, True]
    # RMS normalisation with no gain and no epsilon: scaling a token does not change x,
    # even for very small magnitudes (an RMSNorm eps of 1e-6 would shrink x here).
    tiny = SINK_DIMS_HIDDEN * 1e-4
    assert flags(SinkDims(dims=[0, 3], tau=1.999).from_hidden(tiny)) == [True, False, False, True]
    assert flags(SinkDims(dims=[0, 3], tau=1.999).from_hidden(SINK_DIMS_HIDDEN * 1e4)) == [True, False, False, True]


def test_sink_dims_configuration():
    rule = SinkDims(tau=1.5)
    with pytest.raises(ConfigError, match="sink.dims"):
        rule.configure([])
    rule.configure([0, 3])  # the model's dims fill an empty list
    assert rule.dims == [0, 3]
    explicit = SinkDims(dims=[2], tau=1.5)
    explicit.configure([0, 3])  # explicit dims win over the model's
    assert explicit.dims == [2]
    with pytest.raises(ConfigError, match="sink.dims"):
        SinkDims(dims=[4], tau=1.5).from_hidden(SINK_DIMS_HIDDEN)  # D = 4: dims 0..3
    with pytest.raises(ConfigError, match="sink.tau"):
        SinkDims(dims=[0], tau=0)


# ---- attention_mass: mass[t] = mean over heads and later queries i > t of P[h, i, t] ------------


def attention_probs() -> torch.Tensor:
    # Dyadic values, so every mass below is exact in float32.
    head0 = [
        [1.0, 0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0],
        [0.25, 0.5, 0.25, 0.0],
        [0.125, 0.125, 0.25, 0.5],
    ]
    head1 = [
        [1.0, 0.0, 0.0, 0.0],
        [0.75, 0.25, 0.0, 0.0],
        [0.5, 0.25, 0.25, 0.0],
        [0.625, 0.125, 0.125, 0.125],
    ]
    return torch.tensor([head0, head1])


# mass[0] = (0.5 + 0.25 + 0.125 + 0.75 + 0.5 + 0.625) / 6 = 2.75 / 6 = 0.4583
# mass[1] = (0.5 + 0.125 + 0.25 + 0.125) / 4 = 0.25
# mass[2] = (0.25 + 0.125) / 2 = 0.1875
# mass[3]: no later query -> never a sink.
# Counting the diagonal (i >= t) would instead give 0.625, 0.3125, 0.21875, 0.3125.


@pytest.mark.parametrize(
    "eps, expected",
    [
        (0.3, [True, False, False, False]),
        (0.25, [True, False, False, False]),  # mass[1] == 0.25 exactly: strict >
        (0.2, [True, True, False, False]),  # the diagonal would make 2 and 3 sinks here
        (0.18, [True, True, True, False]),
        (0.01, [True, True, True, False]),  # the last token is never a sink
        (0.46, [False, False, False, False]),  # 0.4583 < 0.46 (a head sum would be 0.917)
    ],
)
def test_attention_mass_strictly_later_mean(eps, expected):
    assert flags(AttentionMass(eps=eps).from_attention(attention_probs())) == expected


def test_attention_mass_single_token_and_flags():
    assert flags(AttentionMass(eps=0.01).from_attention(torch.ones(3, 1, 1))) == [False]
    assert AttentionMass.needs_attention_probs is True
    assert not MassiveActivation.needs_attention_probs
    assert not FirstK.needs_attention_probs
    assert not SinkDims.needs_attention_probs


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, math.nan])
def test_attention_mass_rejects_bad_eps(eps):
    with pytest.raises(ConfigError, match="sink.eps"):
        AttentionMass(eps=eps)
