"""LSG's trained gate (outro_sweep/fit/gate.py) through LayerSinkGate's ``weights`` on
SmolLM2-135M (real weights, offline) with chosen "visual" positions (the positions are the
method's input, given explicitly as in test_lsg_gate.py).

- an untrained gate outputs (0.5, 0.5) and, with scale=two_rho, leaves the logits bit-identical
  to stock (rope after and before);
- a gate whose output is forced to a fixed (rho, 1 - rho) gives the oracle gate's logits;
- the loss's gradient reaches the gate's parameters through the scaled keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_lsg_gate import GATE_LAYER, PROMPTS, chosen_positions  # noqa: E402

from outro_sweep.fit.gate import SinkGate  # noqa: E402
from outro_sweep.interventions.lsg import LayerSinkGate  # noqa: E402


@pytest.fixture(scope="module")
def batch(smollm2):
    return smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def run(model, inputs, **gate):
    with torch.no_grad():
        if not gate:
            return model(**inputs).logits
        with LayerSinkGate(model, [], 0.5, **gate):
            return model(**inputs).logits


@pytest.mark.parametrize("rope", ["after", "before"])
def test_an_untrained_gate_is_the_stock_model_bit_for_bit(smollm2, batch, rope):
    model = smollm2.model
    gate = SinkGate(model.config.hidden_size)
    hidden = torch.randn(3, model.config.hidden_size)
    assert torch.equal(gate(hidden), torch.full((3, 2), 0.5))
    stock = run(model, batch)
    gated = run(model, batch, rope=rope, weights={GATE_LAYER: gate},
                positions=chosen_positions(batch["attention_mask"]))
    assert torch.equal(gated, stock)


def test_a_gate_fixed_at_rho_gives_the_oracle_logits(smollm2, batch):
    model = smollm2.model
    gate = SinkGate(model.config.hidden_size)
    with torch.no_grad():
        gate.out.bias.copy_(torch.tensor([0.0, 2.0]))  # softmax: rho_vsink = 1 / (1 + e^2)
    rho = float(torch.softmax(torch.tensor([0.0, 2.0]), 0)[0])
    provider = chosen_positions(batch["attention_mask"])
    trained = run(model, batch, weights={GATE_LAYER: gate}, positions=provider)
    with torch.no_grad(), LayerSinkGate(model, [GATE_LAYER], rho, positions=provider):
        oracle = model(**batch).logits
    assert (trained - run(model, batch)).abs().max() > 1e-3  # the gate acts
    assert (trained - oracle).abs().max() < 1e-4


def test_the_gradient_reaches_the_gate_through_the_keys(smollm2, batch):
    model = smollm2.model
    gate = SinkGate(model.config.hidden_size)
    with LayerSinkGate(model, [], 0.5, weights={GATE_LAYER: gate}, positions=chosen_positions(batch["attention_mask"])):
        out = model(**batch).logits
    out[:, -1].logsumexp(-1).sum().backward()
    assert gate.out.weight.grad is not None and gate.out.weight.grad.abs().max() > 0
