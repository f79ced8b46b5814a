"""OutRo on the real Gemma 3 270M: the invariants, and the plain-loop reference written for
Gemma's own attention (reference_gemma3.py: QK-norm, sliding windows, scaled embeddings,
sandwich norms).

Its massive-activation sinks start at layer 1, so ``outro.layer=1,2,4`` relaxes a real sink
here (on SmolLM2 the same setting finds none); with the default thresholds layers 1-4 also flag
later tokens (3, 15, 4 and 8 of this 24-token prompt's tokens), and from layer 5 on token 0
alone. As on SmolLM2 the strict check is on a float64 copy, where the edits run in float64 too.
"""

from __future__ import annotations

import copy

import pytest
import torch

from outro_sweep.interventions.outro import OutRo
from outro_sweep.interventions.sinks.attention_mass import AttentionMass
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from tests.reference_gemma3 import reference_gemma3
from tests.reference_outro import reference_relax_layers

PROMPT = "Question: Which planet is the largest? A) Mars B) Jupiter C) Venus D) Earth\nAnswer:"
RULE = {"name": "massive_activation", "abs_threshold": 100.0, "median_ratio": 1000.0}
F64_TOL = 1e-12  # float64 model, float64 edits, float64 reference (measured: 0.0, stock and OutRo)


@pytest.fixture(scope="module")
def ids(gemma3):
    return gemma3.tokenizer(PROMPT, return_tensors="pt").input_ids[0]  # <bos> first


@pytest.fixture(scope="module")
def gemma64(gemma3):
    model = copy.deepcopy(gemma3.model).to(torch.float64)
    yield model
    del model


@torch.no_grad()
def test_alpha_0_without_relaxation_is_bit_identical(gemma3):
    """On a left-padded batch through sdpa, and the model is stock again afterwards."""
    loader, tokenizer, model = gemma3.loader, gemma3.tokenizer, gemma3.model
    inputs = loader.inputs(tokenizer, [PROMPT, "Question: What do bees make?\nAnswer:"], [])
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    stock = model(**inputs, position_ids=positions).logits
    with OutRo(model, MassiveActivation(), alpha=0.0, layer=None) as outro:
        edited = model(**inputs, position_ids=positions).logits
        diagnostics = outro.take_sample_diagnostics()
    assert torch.equal(stock, edited)
    # The rule did fire (the identity is not vacuous): token 0 from layer 1 on, in both rows.
    for row in diagnostics:
        assert row["first_sink_layer"] == 1
        assert all(0 in found for found in row["sink_positions"].values())
    assert torch.equal(model(**inputs, position_ids=positions).logits, stock)


@torch.no_grad()
def test_attention_mass_rule_runs_gemmas_eager_kernel(gemma3):
    """Gu et al.'s rule reads the probabilities of Gemma's own eager kernel (sliding windows
    included): alpha = 0 stays bit-identical to stock eager, and token 0 is the sink (measured:
    at 15 and 16 of the 16 scanned layers of these two prompts; 0.2-0.9 of each head's mass)."""
    loader, tokenizer, model = gemma3.loader, gemma3.tokenizer, gemma3.model
    inputs = loader.inputs(tokenizer, [PROMPT, "Question: What do bees make?\nAnswer:"], [])
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    model.set_attn_implementation("eager")
    try:
        stock = model(**inputs, position_ids=positions).logits
        with OutRo(model, AttentionMass(0.3), alpha=0.0, layer=None) as outro:
            edited = model(**inputs, position_ids=positions).logits
            diagnostics = outro.take_sample_diagnostics()
    finally:
        model.set_attn_implementation("sdpa")
    assert torch.equal(stock, edited)
    for row in diagnostics:
        assert row["first_sink_layer"] == 0
        assert sum(0 in found for found in row["sink_positions"].values()) >= 14


@torch.no_grad()
def test_reference_reproduces_the_stock_model_in_a_binding_window(gemma64, ids):
    """The reference's attention is Gemma's: with the sliding window cut to 8 keys (so it binds
    on this 24-token prompt) the unedited reference equals the stock forward."""
    narrowed = copy.deepcopy(gemma64)
    narrowed.config.sliding_window = 8
    for layer in narrowed.model.layers:
        if layer.self_attn.sliding_window is not None:
            layer.self_attn.sliding_window = 8
    assert ids.numel() > 8
    stock = narrowed(input_ids=ids.view(1, -1)).logits[0]
    ref = reference_gemma3(narrowed, ids, RULE, alpha=0.0, relax_layers=[])
    assert (stock - ref.logits).abs().max().item() <= F64_TOL
    wide = gemma64(input_ids=ids.view(1, -1)).logits[0]
    assert (stock - wide).abs().max().item() > 1e-3, "the 8-key window changed nothing: it did not bind"


@pytest.mark.parametrize("layer", [[1, 2, 4], "auto"], ids=["layers1_2_4", "auto"])
@torch.no_grad()
def test_float64_outro_matches_reference(gemma64, ids, layer):
    stock = gemma64(input_ids=ids.view(1, -1)).logits[0]
    with OutRo(gemma64, MassiveActivation(100.0, 1000.0), alpha=3.0, temperature=0.1, layer=layer) as outro:
        logits = gemma64(input_ids=ids.view(1, -1)).logits[0]
        (diag,) = outro.take_sample_diagnostics()
    ref = reference_gemma3(gemma64, ids, RULE, alpha=3.0, relax_layers=reference_relax_layers(layer, 18))

    assert min(ref.sinks) == 1 and all(0 in found for found in ref.sinks.values())
    assert diag["sink_positions"] == ref.sink_positions()
    assert diag["relaxed"] == ref.relaxed_positions()
    assert 0 in ref.relaxed[1 if layer != "auto" else 2]  # token 0 relaxed at the first relaxation layer with sinks
    diff = (logits - ref.logits).abs().max().item()
    assert diff <= F64_TOL, f"max |OutRo - reference| = {diff:.3e} (float64)"
    assert (logits - stock).abs().max().item() > 1.0, "OutRo left the logits unchanged"


# Float32, padded vs unpadded sdpa shapes sum in another order: measured 5.7e-6 and 2.9e-5
# on these two prompts under OutRo (3.8e-6 and 2.1e-5 for the stock model).
BATCH_TOL = 1e-4


@torch.no_grad()
def test_left_padded_rows_under_outro_equal_their_solo_runs(gemma3):
    """Sinks, relaxations and next-token logits of each row do not depend on the batch."""
    loader, tokenizer, model = gemma3.loader, gemma3.tokenizer, gemma3.model
    prompts = [PROMPT, "Question: What do bees make?\nAnswer:"]

    def run(texts):
        with OutRo(model, MassiveActivation(), alpha=3.0, layer=[1, 2, 4]) as outro:
            logits = loader.answer_logits(gemma3, loader.inputs(tokenizer, texts, []))
            return logits, outro.take_sample_diagnostics()

    batch, batch_diag = run(prompts)
    stock = loader.answer_logits(gemma3, loader.inputs(tokenizer, prompts, []))
    assert (batch - stock).abs().max().item() > 0.1, "OutRo left the logits unchanged"
    for row, prompt in enumerate(prompts):
        alone, (alone_diag,) = run([prompt])
        assert batch_diag[row] == alone_diag
        assert 0 in alone_diag["relaxed"]["1"]  # the sink is relaxed at layer 1 already
        diff = (batch[row] - alone[0]).abs().max().item()
        assert diff <= BATCH_TOL, f"row {row}: max |batch - solo| = {diff:.2e}"

