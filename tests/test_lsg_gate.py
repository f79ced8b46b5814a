"""LSG's oracle gate (outro_sweep/interventions/lsg.py) on real decoders.

The gate takes its V-sink and visual positions from a provider; here the test gives them
explicitly (per row, positions in the padded prefill): that is the input the method takes, not
a mock of it. SmolLM2-135M (real weights, offline) stands in for the text decoder with chosen
"visual" positions; the tiny random Qwen2.5-VL of tiny_vlms.py runs a real left-padded video
batch with its video tokens as the visual positions.

- rho_vsink = 0.5 with scale=two_rho is the identity: logits bit-identical to stock;
- the attention output of layer l+1 matches a plain-loop reference written here from spec §6
  (RoPE, scaled keys, causal softmax, values; per head, per query, per key; float64) to 1e-5;
  layers up to l are untouched;
- rope=before and rope=after give the same numbers (bit for bit where the scales are 0 and 2,
  to float32 rounding otherwise), at prefill and at decode steps;
- the rows of a left-padded batch equal their solo runs (to float32 rounding);
- a bad rho, layer or scale is refused in one line before the model loads.
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outro_sweep.errors import ConfigError  # noqa: E402
from outro_sweep.interventions.decoder import find_decoder  # noqa: E402
from outro_sweep.interventions.lsg import LayerSinkGate, group_scale  # noqa: E402
from outro_sweep.preflight.command_line import preflight  # noqa: E402
from tests.reference_ops import linear, rotate_half  # noqa: E402

TOL = 1e-5
# float32 logits after SmolLM2's 30 layers: rounding of mathematically equal computations (a
# padded vs a solo row; RoPE before vs after a scale) grows to ~5e-5 on logits of size ~15; the
# same bound as OutRo's batch invariance (test_outro_invariants.BATCH_TOL_F32).
LOGITS_TOL_F32 = 3e-4
PROMPTS = ["The capital of France is a large old city on the river called", "Two plus two equals, said the"]
GATE_LAYER = 2  # keys scaled at layer 3


class Explicit:
    """A positions provider with fixed positions: per row, LongTensors of padded positions."""

    def __init__(self, vsinks: list[list[int]], visual: list[list[int]]) -> None:
        self.vsinks = [torch.tensor(p, dtype=torch.long) for p in vsinks]
        self.visual = [torch.tensor(p, dtype=torch.long) for p in visual]

    def __call__(self, model):
        return nullcontext(self)

    def vsink_positions(self):
        return self.vsinks

    def visual_positions(self):
        return self.visual


def chosen_positions(mask: torch.Tensor) -> Explicit:
    """'Visual' tokens: real tokens 1..5 of each row; 'V-sinks': real tokens 2 and 4."""
    vsinks, visual = [], []
    for row in mask.bool():
        first = int(row.long().argmax())
        visual.append([first + i for i in range(1, 6)])
        vsinks.append([first + 2, first + 4])
    return Explicit(vsinks, visual)


@pytest.fixture(scope="module")
def batch(smollm2):
    return smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def logits(model, inputs, **gate) -> torch.Tensor:
    with torch.no_grad():
        if not gate:
            return model(**inputs).logits
        with LayerSinkGate(model, [GATE_LAYER], **gate):
            return model(**inputs).logits


# ---- the identity ------------------------------------------------------------------------
@pytest.mark.parametrize("rope", ["after", "before"])
def test_half_and_half_with_two_rho_is_bit_identical_to_stock(smollm2, batch, rope):
    model = smollm2.model
    stock = logits(model, batch)
    gated = logits(model, batch, rho_vsink=0.5, scale="two_rho", rope=rope,
                   positions=chosen_positions(batch["attention_mask"]))
    assert torch.equal(gated, stock)
    assert torch.equal(logits(model, batch), stock)  # and the model is stock again after the with block
    assert model.config._attn_implementation == "sdpa"


def test_half_and_half_with_rho_scale_changes_the_logits(smollm2, batch):
    stock = logits(smollm2.model, batch)
    gated = logits(smollm2.model, batch, rho_vsink=0.5, scale="rho", positions=chosen_positions(batch["attention_mask"]))
    assert (gated - stock).abs().max() > 1e-3


# ---- the plain-loop reference --------------------------------------------------------------
def reference_attention(attn, hidden, cos, sin, real, scales):
    """Spec §6 for one row of one layer: Attn(Q, diag(s) K, V) then W_O, in float64 with loops.

    hidden (S, D): the attention's input (after the layer norm); cos, sin (S, d): the rotary
    tables the model computed; real (S,) bool; scales (S,) the key scale per position.
    Returns (S, D); rows of padding are zeros.
    """
    heads, kv_heads, dim = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim
    length = hidden.shape[0]
    hidden, cos, sin = hidden.double(), cos.double(), sin.double()
    q = linear(hidden, attn.q_proj).view(length, heads, dim)
    k = linear(hidden, attn.k_proj).view(length, kv_heads, dim)
    v = linear(hidden, attn.v_proj).view(length, kv_heads, dim)
    q = q * cos[:, None] + rotate_half(q) * sin[:, None]
    k = k * cos[:, None] + rotate_half(k) * sin[:, None]
    out = torch.zeros(length, heads, dim, dtype=torch.float64)
    for head in range(heads):
        group = head // (heads // kv_heads)
        for i in range(length):
            if not real[i]:
                continue
            keys = [j for j in range(i + 1) if real[j]]
            scores = [float(q[i, head] @ (float(scales[j]) * k[j, group])) * attn.scaling for j in keys]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            total = sum(weights)
            for j, w in zip(keys, weights):
                out[i, head] += (w / total) * v[j, group]
    return linear(out.reshape(length, heads * dim), attn.o_proj)


def capture_attention(model, layer: int, inputs, gate: LayerSinkGate | None):
    """(input hidden, cos, sin, output) of layer ``layer``'s attention in one forward."""
    attn = find_decoder(model).layers[layer].self_attn
    seen = {}

    def hook(module, args, kwargs, output):
        seen["hidden"] = kwargs["hidden_states"]
        seen["cos"], seen["sin"] = kwargs["position_embeddings"]
        seen["out"] = output[0]

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), gate or nullcontext():
            model(**inputs)
    finally:
        handle.remove()
    return seen


def expected_scales(provider: Explicit, rho: float, scale: str, shape) -> torch.Tensor:
    scales = torch.ones(shape, dtype=torch.float64)
    for row in range(shape[0]):
        scales[row, provider.visual[row]] = group_scale(1 - rho, scale)
        scales[row, provider.vsinks[row]] = group_scale(rho, scale)
    return scales


def check_against_reference(model, inputs, provider, rho, scale):
    gate = LayerSinkGate(model, [GATE_LAYER], rho, scale=scale, positions=provider)
    seen = capture_attention(model, GATE_LAYER + 1, inputs, gate)
    stock = capture_attention(model, GATE_LAYER + 1, inputs, None)
    assert torch.equal(seen["hidden"], stock["hidden"])  # layers up to l are untouched
    assert (seen["out"] - stock["out"]).abs().max() > 10 * TOL  # the gate does act, beyond the tolerance
    attn = find_decoder(model).layers[GATE_LAYER + 1].self_attn
    mask = inputs["attention_mask"].bool()
    scales = expected_scales(provider, rho, scale, mask.shape)
    for row in range(mask.shape[0]):
        table = row if seen["cos"].shape[0] > 1 else 0  # one rotary table for the batch without position ids
        with torch.no_grad():
            expected = reference_attention(attn, seen["hidden"][row], seen["cos"][table], seen["sin"][table],
                                           mask[row], scales[row])
        real = mask[row]
        error = (seen["out"][row][real].double() - expected[real]).abs().max()
        assert error < TOL, f"row {row}: {error}"


@pytest.mark.parametrize("rho,scale", [(0.8, "two_rho"), (0.1, "rho")])
def test_the_gate_matches_the_plain_loop_reference_on_smollm2(smollm2, batch, rho, scale):
    check_against_reference(smollm2.model, batch, chosen_positions(batch["attention_mask"]), rho, scale)


def test_the_gate_matches_the_plain_loop_reference_on_a_qwen2_5_vl_video_batch():
    import tiny_vlms

    model, processor = tiny_vlms.build("qwen2_5_vl", 4)
    inputs = tiny_vlms.video_batch("qwen2_5_vl", processor)
    video = inputs["input_ids"] == model.config.video_token_id  # (B, S) the video tokens
    visual = [row.nonzero().flatten().tolist() for row in video]
    assert all(len(v) > 4 for v in visual) and inputs["attention_mask"].sum(1).unique().numel() == 2  # padded
    provider = Explicit([v[1:4] for v in visual], visual)
    check_against_reference(model, inputs, provider, 0.0, "two_rho")


# ---- rope before / after ---------------------------------------------------------------------
@pytest.mark.parametrize("rho,exact", [(0.0, True), (0.3, False)])
def test_scaling_before_or_after_rope_gives_the_same_numbers(smollm2, batch, rho, exact):
    provider = chosen_positions(batch["attention_mask"])
    after = logits(smollm2.model, batch, rho_vsink=rho, rope="after", positions=provider)
    before = logits(smollm2.model, batch, rho_vsink=rho, rope="before", positions=provider)
    assert (after - logits(smollm2.model, batch)).abs().max() > 1e-3
    if exact:  # scales 0 and 2: every product is exact, RoPE commutes bit for bit
        assert torch.equal(after, before)
    else:
        assert (after - before).abs().max() < LOGITS_TOL_F32


def test_decode_steps_attend_to_the_scaled_prompt_keys_either_way(smollm2, batch):
    """Greedy generation: rope=after rescales the cached prompt keys at each step, rope=before
    caches scaled keys; the generated tokens and their scores agree."""
    provider = chosen_positions(batch["attention_mask"])
    runs = {}
    for rope in ("after", "before"):
        with torch.no_grad(), LayerSinkGate(smollm2.model, [GATE_LAYER], 0.0, rope=rope, positions=provider):
            runs[rope] = smollm2.model.generate(**batch, max_new_tokens=4, do_sample=False, output_scores=True,
                                                return_dict_in_generate=True, pad_token_id=smollm2.tokenizer.pad_token_id)
    assert torch.equal(runs["after"].sequences, runs["before"].sequences)
    for a, b in zip(runs["after"].scores, runs["before"].scores):
        assert torch.equal(a, b)


# ---- batch independence ----------------------------------------------------------------------
def test_rows_of_a_left_padded_batch_equal_their_solo_runs(smollm2, batch):
    mask = batch["attention_mask"]
    together = logits(smollm2.model, batch, rho_vsink=0.9, positions=chosen_positions(mask))
    for row, prompt in enumerate(PROMPTS):
        solo_inputs = smollm2.tokenizer([prompt], return_tensors="pt")
        solo = logits(smollm2.model, solo_inputs, rho_vsink=0.9,
                      positions=chosen_positions(solo_inputs["attention_mask"]))
        real = mask[row].bool()
        assert (together[row][real] - solo[0]).abs().max() < LOGITS_TOL_F32


# ---- one-line refusals before the model loads --------------------------------------------------
@pytest.mark.parametrize("overrides,needles", [
    (["lsg.rho_vsink=1.5"], ["lsg.rho_vsink=1.5", "[0, 1]"]),
    (["lsg.rho_vsink=-0.1"], ["lsg.rho_vsink=-0.1", "[0, 1]"]),
    (["lsg.layer=29"], ["lsg.layer=29", "0..28"]),
    (["lsg.layer=[3,29]"], ["lsg.layer=[3, 29]", "0..28"]),
    (["lsg.scale=bogus"], ["lsg.scale=bogus", "two_rho", "rho"]),
    (["lsg.rope=middle"], ["lsg.rope=middle", "after", "before"]),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, overrides, needles):
    out = tmp_path / "outputs"
    with pytest.raises(ConfigError) as err:
        preflight(["outro=off", "lsg=oracle", *overrides, f"paths.output_dir={out}"])
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not out.exists()
