"""Invariants of the OutRo intervention that need no reference forward (spec §1-4).

- alpha = 0 with no relaxation is bit-identical to the stock model (sdpa and eager), and the
  model is stock again after the ``with`` block;
- a left-padded batch gives every row what it gets alone (logits, sinks, relaxations, tokens);
- SmolLM2's massive-activation sinks are token 0 at layers 12..27 and nothing else;
- decode steps are rotated only when ``rotate_decode`` is on; "official" leaves SmolLM2's
  decode steps alone (its sinks are always position 0);
- bad ``outro.*`` values raise one-line ConfigErrors naming the key.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.attention_hook import ACTIVE_EDITORS
from outro_sweep.interventions.outro import OutRo, OutRoIntervention, relaxation_layers
from outro_sweep.interventions.sinks.attention_mass import AttentionMass
from outro_sweep.interventions.sinks.first_k import FirstK
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from tests.reference_outro import left_pad

PROMPTS = [
    "Hello there",
    "The capital of France is",
    "Question: which of these animals can fly? A) dog B) eagle C) cat D) fish. Answer:",
]
SMOL_SINKS = {str(layer): [0] for layer in range(12, 28)}  # spec §1 on SmolLM2-135M-Instruct

# Float32 batch-vs-solo tolerance on the 30-layer SmolLM2. Measured on these prompts: the STOCK
# model alone already differs by up to 1.04e-4 between the padded batch and the solo run at the
# same real positions (sdpa over different shapes), and OutRo (alpha 3, auto) by 7.6e-5; so the
# 1e-4 figure sits on the float32 noise floor. 3e-4 is used here, and the row independence is
# checked tightly on a float64 copy, where the edits run in float64 too (stock: 4e-14;
# OutRo: 5.0e-14).
BATCH_TOL_F32 = 3e-4
BATCH_TOL_F64 = 1e-12


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch, as the predict loop and generate() build them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def hook_state(model: torch.nn.Module) -> dict:
    """Every non-empty hook dict of every submodule, by module name."""
    kinds = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
    return {
        (name, kind): len(getattr(module, kind))
        for name, module in model.named_modules()
        for kind in kinds
        if len(getattr(module, kind, {}))
    }


def editors_of(model) -> list:
    return [layer.self_attn for layer in model.model.layers if id(layer.self_attn) in ACTIVE_EDITORS]


@pytest.fixture(scope="module")
def batch(smollm2):
    tok = smollm2.tokenizer
    assert tok.padding_side == "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    lengths = enc.attention_mask.sum(1).tolist()
    assert lengths[0] < lengths[1] < lengths[2] and lengths[2] >= 4 * lengths[0], lengths
    assert enc.attention_mask[0, 0] == 0  # left padding
    return enc


@pytest.fixture(scope="module")
def solos(smollm2):
    return [smollm2.tokenizer(p, return_tensors="pt") for p in PROMPTS]


@pytest.fixture(scope="module")
def smol_eager(smollm2):
    """A separate SmolLM2 instance on the eager attention path (the shared one stays sdpa)."""
    model = copy.deepcopy(smollm2.model)
    model.set_attn_implementation("eager")
    assert smollm2.model.config._attn_implementation == "sdpa"
    return model


# ---- identity and restoration ---------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@torch.no_grad()
def test_alpha0_without_relaxation_is_bit_identical(smollm2, smol_eager, batch, impl):
    model = smollm2.model if impl == "sdpa" else smol_eager
    assert model.config._attn_implementation == impl
    stock = model(**batch).logits
    stock_ids = model.generate(**batch, max_new_tokens=4, do_sample=False)
    rules = [MassiveActivation()] + ([AttentionMass()] if impl == "eager" else [])
    for rule in rules:
        with OutRo(model, rule, alpha=0.0, layer=None) as outro:
            assert model.config._attn_implementation == f"outro_{impl}"  # the edit path is live
            logits = model(**batch).logits
            diagnostics = outro.take_sample_diagnostics()
            ids = model.generate(**batch, max_new_tokens=4, do_sample=False)
        # Sinks were found, so the rotation was reachable; alpha = 0 skips it entirely.
        assert all(row["sink_positions"] for row in diagnostics)
        assert torch.equal(logits, stock), f"{rule.name}: max diff {(logits - stock).abs().max().item():.3e}"
        assert torch.equal(ids, stock_ids)
        assert model.config._attn_implementation == impl


@torch.no_grad()
def test_model_is_stock_again_after_exit(smollm2, batch):
    model = smollm2.model
    hooks_before = hook_state(model)
    stock = model(**batch).logits
    with OutRo(model, MassiveActivation(), alpha=3.0, layer="auto"):
        assert hook_state(model) != hooks_before
        assert len(editors_of(model)) == 30
        edited = model(**batch).logits
    assert (edited - stock).abs().max().item() > 1.0  # the edit was real
    assert model.config._attn_implementation == "sdpa"
    assert hook_state(model) == hooks_before
    assert editors_of(model) == []
    assert torch.equal(model(**batch).logits, stock)

    # Leaving through an exception, with a rule that switches the model to eager.
    with pytest.raises(RuntimeError, match="inside the block"):
        with OutRo(model, AttentionMass(), alpha=3.0, layer="auto"):
            assert model.config._attn_implementation == "outro_eager"
            model(**batch)
            raise RuntimeError("inside the block")
    assert model.config._attn_implementation == "sdpa"
    assert hook_state(model) == hooks_before
    assert editors_of(model) == []
    assert torch.equal(model(**batch).logits, stock)


# ---- batch independence ---------------------------------------------------------------------------


@torch.no_grad()
def check_batch_independence(model, batch, solos, rule_factory, tol, **outro_kwargs):
    with OutRo(model, rule_factory(), **outro_kwargs) as outro:
        batched = model(**batch, position_ids=positions(batch["attention_mask"])).logits
        batch_diag = outro.take_sample_diagnostics()
        for row, solo in enumerate(solos):
            alone = model(**solo).logits[0]
            solo_diag = outro.take_sample_diagnostics()
            n = alone.shape[0]
            assert batch["attention_mask"][row, -n:].all() and not batch["attention_mask"][row, :-n].any()
            diff = (batched[row, -n:] - alone).abs().max().item()
            assert diff <= tol, f"row {row}: batch vs solo max diff {diff:.3e}"
            assert batch_diag[row] == solo_diag[0], f"row {row}: diagnostics depend on the batch"
    return batch_diag


def test_batch_independence_smollm2(smollm2, batch, solos):
    diag = check_batch_independence(
        smollm2.model, batch, solos, MassiveActivation, BATCH_TOL_F32, alpha=3.0, layer="auto"
    )
    for row in diag:
        assert row["sink_positions"] == SMOL_SINKS
        assert row["relaxed"] == {"0": [], "4": [], "8": [], "12": [0], "16": [], "20": [], "24": []}


def test_batch_independence_smollm2_float64(smollm2, batch, solos):
    model = copy.deepcopy(smollm2.model).to(torch.float64)
    check_batch_independence(model, batch, solos, MassiveActivation, BATCH_TOL_F64, alpha=3.0, layer="auto")


from tests.test_outro_reference import TINY  # noqa: E402  (one tiny-model config for all method tests)


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    model.set_attn_implementation("sdpa")
    return model.eval()


@pytest.fixture(scope="module")
def tiny_batch():
    generator = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, 128, (n,), generator=generator) for n in (3, 8, 14)]
    ids, mask = left_pad(rows)
    solos = [{"input_ids": r.view(1, -1), "attention_mask": torch.ones(1, len(r), dtype=torch.long)} for r in rows]
    return {"input_ids": ids, "attention_mask": mask}, solos


@pytest.mark.parametrize(
    "rule_factory",
    [lambda: FirstK(1), lambda: FirstK(2), lambda: AttentionMass(0.15)],
    ids=["first_k1", "first_k2", "attention_mass"],
)
def test_batch_independence_tiny(tiny_llama, tiny_batch, rule_factory):
    batch, solos = tiny_batch
    diag = check_batch_independence(tiny_llama, batch, solos, rule_factory, 1e-5, alpha=3.0, layer="auto")
    assert all(row["sink_positions"] for row in diag)


@torch.no_grad()
def test_batched_generate_matches_solo(smollm2, batch, solos):
    model = smollm2.model
    width = batch["input_ids"].shape[1]
    with OutRo(model, MassiveActivation(), alpha=3.0, layer="auto"):
        batched = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, width:]
        alone = [
            model.generate(**solo, max_new_tokens=5, do_sample=False)[0, solo["input_ids"].shape[1] :]
            for solo in solos
        ]
    stock = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, width:]
    for row, tokens in enumerate(alone):
        assert batched[row].tolist() == tokens.tolist(), f"row {row}"
    assert not torch.equal(batched, stock), "OutRo changed no generated token (weak test)"


# ---- SmolLM2 sinks --------------------------------------------------------------------------------


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
@pytest.mark.parametrize("alpha, layer", [(0.0, None), (3.0, "auto")], ids=["detect_only", "outro"])
@torch.no_grad()
def test_smollm2_massive_activation_sinks(smollm2, chat, alpha, layer):
    tok = smollm2.tokenizer
    text = "The quick brown fox jumps over the lazy dog because it was bored."
    if chat:
        messages = [{"role": "user", "content": text}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt")
    with OutRo(smollm2.model, MassiveActivation(), alpha=alpha, layer=layer) as outro:
        smollm2.model(**enc)
        (diag,) = outro.take_sample_diagnostics()
    # Token 0 and only token 0 at every scanned layer 12..27; nothing at 0..11; layers 28 and
    # 29 are never scanned.
    assert diag["sink_positions"] == SMOL_SINKS
    assert diag["first_sink_layer"] == 12
    if layer == "auto":
        assert diag["relax_layers_without_sinks"] == [0, 4, 8]
        assert diag["relaxed"]["12"] == [0]


# ---- decoding -------------------------------------------------------------------------------------


@torch.no_grad()
def test_rotate_decode_changes_only_decode_steps(smollm2, batch):
    model = smollm2.model
    runs = {}
    for rotate in (True, False, "official"):
        with OutRo(model, MassiveActivation(), alpha=3.0, layer="auto", rotate_decode=rotate):
            runs[rotate] = model.generate(
                **batch,
                max_new_tokens=3,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
    on, off = runs[True], runs[False]
    # Step 0 is the prefill's last position: identical, so the same first token is fed back.
    assert torch.equal(on.logits[0], off.logits[0])
    first = batch["input_ids"].shape[1] + 1
    assert torch.equal(on.sequences[:, :first], off.sequences[:, :first])
    # Step 1 is the first decode step: rotated vs not, for every row (all rows have sinks).
    per_row = (on.logits[1] - off.logits[1]).abs().amax(dim=-1)
    assert (per_row > 1e-2).all(), per_row
    # The released decode rule skips the new token at every layer whose sinks hold the row's
    # first token: on SmolLM2 that is every sink layer, so it is the plain decode, bit for bit.
    official = runs["official"]
    assert torch.equal(official.sequences, off.sequences)
    assert all(torch.equal(a, b) for a, b in zip(official.logits, off.logits))


# ---- validation -----------------------------------------------------------------------------------


def test_relaxation_layers_schedule():
    assert relaxation_layers("auto", 30) == [0, 4, 8, 12, 16, 20, 24]
    assert relaxation_layers("auto", 36) == [0, 5, 10, 15, 20, 25, 30]  # 3B: first sinks at 5
    assert relaxation_layers("auto", 28) == [0, 4, 8, 12, 16, 20, 24]  # 7B: first sinks at 4
    assert relaxation_layers("auto", 6) == [0, 1, 2, 3]  # k = max(1, 6 // 7) = 1, below L - 2
    assert relaxation_layers(None, 30) == []
    assert relaxation_layers(12, 30) == [12]
    assert relaxation_layers([14, 12, 12], 30) == [12, 14]
    assert relaxation_layers([0, 29], 30) == [0, 29]


@pytest.mark.parametrize("layer", [30, -1, [3, 30]])
def test_relaxation_layer_out_of_range(layer):
    with pytest.raises(ConfigError) as info:
        relaxation_layers(layer, 30)
    message = str(info.value)
    assert "\n" not in message
    assert "outro.layer" in message and "0..29" in message


# What a layer is (not its range) is the annotation's, checked when the intervention is built.
@pytest.mark.parametrize("layer", ["first", True, 2.5, [1.0], [], -1])
def test_bad_layer_syntax_is_refused_on_construction(layer):
    with pytest.raises(ConfigError) as info:
        OutRoIntervention(layer=layer)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("outro.layer=") and "auto" in message and "null" in message


def test_outro_rejects_bad_layer_before_touching_the_model(smollm2):
    model = smollm2.model
    hooks_before = hook_state(model)
    with pytest.raises(ConfigError, match=r"outro\.layer.*0\.\.29"):
        OutRo(model, MassiveActivation(), layer=30)
    assert model.config._attn_implementation == "sdpa"
    assert hook_state(model) == hooks_before


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"alpha": -1.0}, "outro.alpha"),
        ({"alpha": math.nan}, "outro.alpha"),
        ({"alpha": math.inf}, "outro.alpha"),
        ({"temperature": 0.0}, "outro.temperature"),
        ({"temperature": -0.1}, "outro.temperature"),
        ({"temperature": math.nan}, "outro.temperature"),
    ],
)
def test_bad_strengths_raise_config_error(smollm2, kwargs, key):
    with pytest.raises(ConfigError) as info:
        OutRo(smollm2.model, MassiveActivation(), **kwargs)
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message
    assert smollm2.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("value", [True, False, "official"])
def test_rotate_decode_accepts_its_three_values(value):
    assert OutRoIntervention(rotate_decode=value).rotate_decode == value


# "no"/"maybe" arrive as strings from a Hydra override and must not count as truthy; 1/0 are not bools.
@pytest.mark.parametrize("value", ["maybe", "no", "yes", "true", "Official", "", None, 1, 0, 1.0])
def test_bad_rotate_decode_raises_config_error(smollm2, value):
    with pytest.raises(ConfigError) as info:
        OutRoIntervention(rotate_decode=value)
    message = str(info.value)
    assert message.startswith("outro.rotate_decode=") and "\n" not in message
    assert "true, false, official" in message
    hooks_before = hook_state(smollm2.model)
    with pytest.raises(ConfigError, match=r"^outro\.rotate_decode="):
        OutRo(smollm2.model, MassiveActivation(), rotate_decode=value)
    assert smollm2.model.config._attn_implementation == "sdpa"
    assert hook_state(smollm2.model) == hooks_before
