"""The sink rules' batched entry points on a real left-padded batch: each row's sinks are what
the independent plain-loop reference rules (reference_outro.py) find on that row alone, pads are
never sinks, and a rule that only defines the one-row method is run row by row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_outro import (  # noqa: E402
    sinks_attention_mass,
    sinks_first_k,
    sinks_massive_activation,
    sinks_sink_dims,
)

from outro_sweep.interventions.sinks.attention_mass import AttentionMass  # noqa: E402
from outro_sweep.interventions.sinks.base import SinkRule  # noqa: E402
from outro_sweep.interventions.sinks.first_k import FirstK  # noqa: E402
from outro_sweep.interventions.sinks.massive_activation import (  # noqa: E402
    MassiveActivation,
    _lower_median_on_device,
    lower_median,
)
from outro_sweep.interventions.sinks.sink_dims import SinkDims  # noqa: E402

LAYERS = (0, 3, 12, 20)  # SmolLM2: no sink, the third question's first sink, the usual first sink, deep


@pytest.fixture(scope="module")
def padded(smollm2):
    """Three built-in questions as one left-padded batch: (hidden states entering each layer,
    eager attention probabilities per layer, real (B, S) bool)."""
    from tests.test_outro_host_sync import builtin_batch

    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    model.set_attn_implementation("eager")  # the probabilities the attention-mass rule reads
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    return out.hidden_states[:-1], out.attentions, inputs["attention_mask"].bool()


def positions(mask_row: torch.Tensor, real_row: torch.Tensor) -> list[int]:
    """Sink positions counted among the row's real tokens."""
    return mask_row[real_row].nonzero().flatten().tolist()


RULES = {
    "massive_default": (MassiveActivation(), lambda h, p: sinks_massive_activation(h, 100.0, 1000.0)),
    "massive_low": (MassiveActivation(0.0, 40.0), lambda h, p: sinks_massive_activation(h, 0.0, 40.0)),
    "first_k": (FirstK(2), lambda h, p: sinks_first_k(h.shape[0], 2)),
    "sink_dims": (SinkDims(dims=[0, 100, 300, 575], tau=4.0), lambda h, p: sinks_sink_dims(h, [0, 100, 300, 575], 4.0)),
    "attention_mass": (AttentionMass(eps=0.3), lambda h, p: sinks_attention_mass(p, 0.3)),
}


@pytest.mark.parametrize("name", list(RULES))
def test_batched_rule_equals_the_reference_row_by_row(padded, name):
    hidden, attentions, real = padded
    rule, reference = RULES[name]
    fired = 0
    for layer in LAYERS:
        if rule.needs_attention_probs:
            found = rule.from_attention_batch(attentions[layer], real)
        else:
            found = rule.from_hidden_batch(hidden[layer], real)
        assert found.shape == real.shape and found.dtype == torch.bool
        assert not (found & ~real).any(), "a pad was flagged"
        for row in range(real.shape[0]):
            keep = real[row]
            probs = attentions[layer][row][:, keep][:, :, keep]  # (H, n, n) among real tokens
            expected = reference(hidden[layer][row, keep], probs)
            assert positions(found[row], keep) == expected, f"layer {layer}, row {row}"
            fired += len(expected)
    assert fired, f"{name} found no sink: the case would test nothing"


def test_massive_activation_rows_differ_by_padding_only_through_their_tokens(padded):
    """The third question has a sink at layer 3 that the others lack: its median, not the
    batch's, sets its threshold."""
    hidden, _, real = padded
    found = MassiveActivation().from_hidden_batch(hidden[3], real)
    assert found.any(dim=1).tolist() == [False, False, True]


@pytest.mark.parametrize("select", [lower_median, _lower_median_on_device], ids=["cpu_numpy", "device_kthvalue"])
def test_lower_median_is_torch_median_of_the_kept_values(select):
    """Both selections (numpy's on the CPU, the one-kthvalue form a GPU runs), ties and
    infinities included."""
    generator = torch.Generator().manual_seed(0)
    for width in (1, 2, 7, 40, 1001):
        values = torch.randn(5, width, generator=generator).round(decimals=1)  # ties included
        values[0, :: max(1, width // 3)] = float("inf")
        values[1, :: max(1, width // 4)] = float("-inf")
        keep = torch.rand(5, width, generator=generator) > 0.4
        keep[:, -1] = True
        medians = select(values, keep)
        for row in range(5):
            assert medians[row] == values[row][keep[row]].median()
    halves = values.bfloat16()  # numpy has no bfloat16: the device form serves it on the CPU too
    assert torch.equal(lower_median(halves, keep), _lower_median_on_device(halves, keep))


class EveryOther(SinkRule):
    """A rule written for one row only: every second real token."""

    name = "every_other"

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.arange(hidden.shape[0]) % 2 == 0


def test_a_one_row_rule_runs_row_by_row_in_a_batch():
    real = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    found = EveryOther().from_hidden_batch(torch.zeros(2, 5, 4), real)
    assert found.tolist() == [[False, False, True, False, True], [True, False, True, False, True]]


def test_a_rule_with_neither_method_says_so():
    with pytest.raises(NotImplementedError, match="neither"):
        SinkRule().from_hidden_batch(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="no attention"):
        FirstK(1).from_attention(torch.zeros(1, 2, 2))
