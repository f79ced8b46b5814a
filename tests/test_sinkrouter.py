"""SinkRouter (outro_sweep/interventions/sinkrouter.py) on real decoders, at decode steps.

SmolLM2-135M (real weights, offline; 9 query heads over 3 KV groups) and tiny random Llama
(4 heads over 1 KV group) and Qwen2 (4 heads over 2 KV groups, biased projections) decoders:

- a threshold above 1 skips nothing: logits bit-identical to stock at every decode step;
- against a plain-loop reference written here from spec §6 (float64; per layer, decode step,
  row and KV group: RoPE, the cosine of each query head to the row's first real key, their mean,
  the skip decision, then causal softmax over the real keys or zero): the cosines, the decisions
  and the per-head attention output (W_O's input) match to 1e-5, with both skipped and kept
  groups present;
- the rows of a left-padded batch equal their solo runs (constant and target_skip thresholds);
- the kernel really gets only the kept groups: a spy on the stock sdpa kernel's inputs sees, at
  each decode step, exactly the keys and values of the kept (row, group) pairs, and none at a
  layer where every group is skipped;
- target_skip holds its share on the prompt it was fitted on.
"""

from __future__ import annotations

import math

import pytest
import torch

from outro_sweep.interventions import attention_hook
from outro_sweep.interventions.decoder import find_decoder
from outro_sweep.interventions.sinkrouter import SinkRouter, SinkRouting, fit_cubic
from tests.reference_ops import linear, rotate_half

TOL = 1e-5
# float32 logits after SmolLM2's 30 layers: a padded and a solo row differ by rounding, as for
# OutRo's and LSG's batch invariance (test_outro_invariants.BATCH_TOL_F32).
LOGITS_TOL_F32 = 3e-4
PROMPTS = ["The capital of France is a large old city on the river called", "Two plus two equals, said the"]
NEW_TOKENS = 5  # 1 prefill + 4 decode steps


def build_tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=5, num_attention_heads=4,
                  max_position_embeddings=128, initializer_range=0.08, pad_token_id=0, eos_token_id=None)
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, **common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, use_sliding_window=False, **common))
    model.set_attn_implementation("sdpa")
    return model.eval()


def tiny_batch() -> dict:
    """Two rows, the second left-padded by 5."""
    ids = torch.randint(1, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[1, :5], mask[1, :5] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def batch(smollm2):
    return smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def generate(model, inputs, router: SinkRouting | None = None):
    """Greedy decoding; returns the generate output with every step's logits."""
    with torch.no_grad():
        if router is None:
            return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True, pad_token_id=0)
        with router:
            return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True, pad_token_id=0)


# ---- nothing skipped is the stock model ------------------------------------------------------
def test_a_threshold_above_one_is_bit_identical_to_stock_at_every_decode_step(smollm2, batch):
    model = smollm2.model
    stock = generate(model, batch)
    router = SinkRouting(model, threshold=1.0001)
    routed = generate(model, batch, router)
    assert len(routed.logits) == NEW_TOKENS
    for step, (a, b) in enumerate(zip(routed.logits, stock.logits)):
        assert torch.equal(a, b), f"decode step {step}"
    rows = router.take_sample_diagnostics()
    assert [row["skip_rate"] for row in rows] == [0.0, 0.0]
    assert rows[0]["decode_steps"] == NEW_TOKENS - 1
    sums = router.running_sums()
    assert sums["considered_l2"] == (NEW_TOKENS - 1) * 2 * 3 and sums["considered_l1"] == 0.0
    assert model.config._attn_implementation == "sdpa"  # and the model is stock again after the with block


def test_a_low_threshold_changes_the_decode_steps_only(smollm2, batch):
    """The prefill is untouched (its logits are bit-identical); the decode steps change."""
    stock = generate(smollm2.model, batch)
    routed = generate(smollm2.model, batch, SinkRouting(smollm2.model, threshold=0.3))
    assert torch.equal(routed.logits[0], stock.logits[0])
    assert max((a - b).abs().max() for a, b in zip(routed.logits[1:], stock.logits[1:])) > 1e-2


# ---- the plain-loop reference ------------------------------------------------------------------
def reference_decode_step(attn, hidden, cos, sin, real, query_at, threshold, may_skip):
    """Spec §6 for one row, one layer, one decode step, in float64 with loops.

    hidden (S, D): the attention's input at every position so far (prompt and decoded tokens);
    cos, sin (S, d): the rotary tables the model used; real (S,) bool; query_at: the new
    token's position. Returns (cosines (H_kv,), skips (H_kv,), output (H * d,), W_O's input).
    """
    heads, kv_heads, dim = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim
    n_rep = heads // kv_heads
    length = query_at + 1
    hidden, cos, sin = hidden[:length].double(), cos[:length].double(), sin[:length].double()
    q = linear(hidden[query_at], attn.q_proj).view(heads, dim)
    q = q * cos[query_at] + rotate_half(q) * sin[query_at]
    k = linear(hidden, attn.k_proj).view(length, kv_heads, dim)
    v = linear(hidden, attn.v_proj).view(length, kv_heads, dim)
    k = k * cos[:, None] + rotate_half(k) * sin[:, None]
    first = int(real.long().argmax())
    cosines, skips = [], []
    out = torch.zeros(heads, dim, dtype=torch.float64)
    for group in range(kv_heads):
        sink = k[first, group]
        per_head = [float(q[h] @ sink) / (float(q[h].norm()) * float(sink.norm()))
                    for h in range(group * n_rep, (group + 1) * n_rep)]
        cosine = sum(per_head) / n_rep
        skip = may_skip and cosine >= threshold
        cosines.append(cosine)
        skips.append(skip)
        if skip:
            continue  # the group's heads output zero
        for head in range(group * n_rep, (group + 1) * n_rep):
            keys = [j for j in range(length) if real[j]]
            scores = [float(q[head] @ k[j, group]) * attn.scaling for j in keys]
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            total = sum(weights)
            for j, w in zip(keys, weights):
                out[head] += (w / total) * v[j, group]
    return torch.tensor(cosines), torch.tensor(skips), out.reshape(heads * dim)


def record_run(model, inputs, router: SinkRouting) -> dict[int, list[dict]]:
    """Per layer, every call of its attention in one generate: its input hidden states, rotary
    tables and per-head output (W_O's input, (B, S_q, H * d)), and (decode steps of layers >=
    first_layer) the router's cosines and decisions of that step."""
    parts = find_decoder(model)
    calls: dict[int, list[dict]] = {i: [] for i in range(len(parts.layers))}
    handles = []

    def hook(index):
        def on_input(module, args, kwargs):
            calls[index].append({"hidden": kwargs["hidden_states"], "cos": kwargs["position_embeddings"][0],
                                 "sin": kwargs["position_embeddings"][1]})

        def on_output(module, args, kwargs, output):
            calls[index][-1].update(cosines=router.last_cosines.get(index), skips=router.last_skips.get(index))

        def on_heads(module, args):
            calls[index][-1]["out"] = args[0]
        return on_input, on_output, on_heads

    for index, layer in enumerate(parts.layers):
        on_input, on_output, on_heads = hook(index)
        handles.append(layer.self_attn.register_forward_pre_hook(on_input, with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(on_output, with_kwargs=True))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(on_heads))
    try:
        generate(model, inputs, router)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def middle_threshold(model, inputs) -> float:
    """A threshold between two neighbouring aggregated cosines near the median of a run that
    skips nothing: some groups pass it and some do not, none within 1e-4 of it."""
    router = SinkRouting(model, threshold=2.0)
    calls = record_run(model, inputs, router)
    values = torch.cat([c["cosines"].flatten() for layer in calls.values() for c in layer if c["cosines"] is not None])
    values = values.sort().values
    middle = len(values) // 2
    for offset in range(len(values) // 4):
        low, high = values[middle + offset - 1], values[middle + offset]
        if high - low > 2e-4:
            return float((low + high) / 2)
    raise AssertionError("no gap between neighbouring cosines")


def check_against_reference(model, inputs, layers=None, first_layer=2):
    threshold = middle_threshold(model, inputs)
    router = SinkRouting(model, threshold=threshold, first_layer=first_layer)
    calls = record_run(model, inputs, router)
    attention = find_decoder(model).layers
    mask = inputs["attention_mask"].bool()
    decisions = {True: 0, False: 0}
    for layer in layers if layers is not None else range(len(attention)):
        attn = attention[layer].self_attn
        steps = calls[layer]
        assert len(steps) == NEW_TOKENS
        hidden = torch.cat([c["hidden"] for c in steps], dim=1)  # (B, S + steps, D)
        cos = torch.cat([c["cos"] for c in steps], dim=1)
        sin = torch.cat([c["sin"] for c in steps], dim=1)
        real = torch.cat([mask, torch.ones(mask.shape[0], NEW_TOKENS - 1, dtype=torch.bool)], dim=1)
        for step, call in enumerate(steps[1:]):
            at = mask.shape[1] + step
            for row in range(mask.shape[0]):
                table = row if cos.shape[0] > 1 else 0
                with torch.no_grad():
                    cosines, skips, expected = reference_decode_step(
                        attn, hidden[row], cos[table], sin[table], real[row], at, threshold, layer >= first_layer)
                if layer >= first_layer:
                    assert (call["cosines"][row].double() - cosines).abs().max() < TOL
                    assert torch.equal(call["skips"][row].cpu(), skips)
                    for skip in skips.tolist():
                        decisions[skip] += 1
                else:
                    assert call["cosines"] is None  # layers below first_layer are never looked at
                error = (call["out"][row, 0].double() - expected).abs().max()
                assert error < TOL, f"layer {layer} step {step} row {row}: {error}"
    assert decisions[True] > 0 and decisions[False] > 0, decisions  # both branches were checked


@pytest.mark.parametrize("kind,attention", [("llama", "sdpa"), ("qwen2", "sdpa"), ("qwen2", "eager")])
def test_the_router_matches_the_plain_loop_reference_on_tiny_models(kind, attention):
    model = build_tiny(kind)
    model.set_attn_implementation(attention)
    check_against_reference(model, tiny_batch())
    assert model.config._attn_implementation == attention


def test_the_router_matches_the_plain_loop_reference_on_smollm2(smollm2, batch):
    check_against_reference(smollm2.model, batch, layers=[0, 1, 2, 3, 8, 15, 22, 29])


def test_first_layer_moves_where_skipping_starts():
    check_against_reference(build_tiny("qwen2"), tiny_batch(), first_layer=3)


# ---- batch independence ----------------------------------------------------------------------
@pytest.mark.parametrize("settings", [{"threshold": 0.3}, {"mode": "target_skip", "target_skip": 0.6}])
def test_rows_of_a_left_padded_batch_equal_their_solo_runs(smollm2, batch, settings):
    model = smollm2.model
    router = SinkRouting(model, **settings)
    together = generate(model, batch, router)
    rows = router.take_sample_diagnostics()
    assert min(row["skip_rate"] for row in rows) > 0.2
    width = batch["input_ids"].shape[1]
    for row, prompt in enumerate(PROMPTS):
        solo_inputs = smollm2.tokenizer([prompt], return_tensors="pt")
        solo_router = SinkRouting(model, **settings)
        solo = generate(model, solo_inputs, solo_router)
        assert torch.equal(together.sequences[row, width:], solo.sequences[0, solo_inputs["input_ids"].shape[1]:])
        for a, b in zip(together.logits, solo.logits):
            assert (a[row] - b[0]).abs().max() < LOGITS_TOL_F32
        assert solo_router.take_sample_diagnostics()[0]["skip_rate_per_layer"] == rows[row]["skip_rate_per_layer"]


# ---- the kernel gets only the kept groups --------------------------------------------------------
class KernelSpy:
    """Wraps the stock sdpa kernel that attention_hook calls; records the keys and values of
    every decode-step call (a single query position) per layer."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        if query.shape[2] == 1:
            self.calls.append((module.layer_idx, key.clone(), value.clone()))
        return self.kernel(module, query, key, value, attention_mask, **kwargs)


@pytest.fixture
def spy(monkeypatch):
    spy = KernelSpy(attention_hook.sdpa_attention_forward)
    monkeypatch.setattr(attention_hook, "sdpa_attention_forward", spy)
    return spy


def test_a_layer_that_skips_every_group_gives_the_kernel_no_keys_or_values(smollm2, batch, spy):
    model = smollm2.model
    router = SinkRouting(model, threshold=-1.0)  # every cosine is >= -1: every group of layers >= 2 skipped
    generate(model, batch, router)
    assert router.take_sample_diagnostics()[0]["skip_rate"] == 1.0
    layers = [layer for layer, _, _ in spy.calls]
    assert layers and set(layers) == {0, 1}  # the decode steps reached the kernel at layers 0-1 only
    assert len(layers) == 2 * (NEW_TOKENS - 1)


def test_the_kernel_gets_exactly_the_kept_groups(smollm2, batch, spy):
    """A wrapper of run_kernel notes the full keys and values each layer had and the router's
    decisions; every key and value handed to the kernel in between is matched to its (row,
    group): the kept pairs are exactly the ones handed over, each once."""
    model = smollm2.model
    router = SinkRouting(model, threshold=0.3)
    run_kernel = router.run_kernel
    seen = []

    def noting(module, kernel, query, key, value, attention_mask, **kwargs):
        start = len(spy.calls)
        result = run_kernel(module, kernel, query, key, value, attention_mask, **kwargs)
        if query.shape[2] == 1:
            seen.append((module.layer_idx, key, value, router.last_skips[module.layer_idx].cpu(), spy.calls[start:]))
        return result

    router.run_kernel = noting
    generate(model, batch, router)
    partly = 0
    for layer, key, value, skips, calls in seen:
        handed = []
        for called_layer, k, v in calls:
            # one KV group per call, or all of them in one stock call where nothing is skipped
            assert called_layer == layer and k.shape[1] == v.shape[1] in (1, key.shape[1])
            assert k.shape[1] == 1 or not skips.any()
            for part_k, part_v in zip(k.flatten(0, 1), v.flatten(0, 1)):
                pairs = [(row, group) for row in range(key.shape[0]) for group in range(key.shape[1])
                         if torch.equal(key[row, group], part_k) and torch.equal(value[row, group], part_v)]
                assert len(pairs) == 1
                handed += pairs
        kept = [(row, group) for row in range(skips.shape[0]) for group in range(skips.shape[1])
                if not skips[row, group]]
        assert sorted(handed) == kept, f"layer {layer}"
        partly += 0 < len(kept) < skips.numel()
    assert partly > 10  # many layers and steps kept some groups and skipped others


def test_two_kernel_runners_on_one_model_are_refused_and_leave_it_stock():
    model = build_tiny("qwen2")
    inputs = tiny_batch()
    stock = generate(model, inputs)
    with SinkRouting(model, threshold=0.0):
        with pytest.raises(RuntimeError, match="two editors run the attention kernel"):
            SinkRouting(model, threshold=0.5).__enter__()
    for a, b in zip(generate(model, inputs).logits, stock.logits):
        assert torch.equal(a, b)
    assert not attention_hook.ACTIVE_EDITORS


# ---- target_skip ---------------------------------------------------------------------------
def test_target_skip_holds_its_share_on_the_prompt_it_was_fitted_on(smollm2):
    """A long prompt and target 0.6: the decode steps right after it skip about 60% of the
    (layer >= 2, group) pairs."""
    text = " ".join(["The old lighthouse keeper walked along the shore every morning before dawn."] * 12)
    inputs = smollm2.tokenizer([text], return_tensors="pt")
    router = SinkRouting(smollm2.model, mode="target_skip", target_skip=0.6)
    generate(smollm2.model, inputs, router)
    rate = router.take_sample_diagnostics()[0]["skip_rate"]
    assert 0.45 < rate < 0.75, rate


def test_the_cubic_fit_recovers_a_cubic_of_quantiles():
    """Per position, 9 values whose 0.4 quantile is known: the fit gives back that cubic."""
    prompt = 40
    x = torch.arange(2, prompt + 1, dtype=torch.float64) / prompt
    truth = torch.tensor([0.1, 0.5, -0.3, 0.2], dtype=torch.float64)
    centre = truth[0] + truth[1] * x + truth[2] * x ** 2 + truth[3] * x ** 3  # (n,)
    spread = torch.linspace(-0.4, 0.4, 9, dtype=torch.float64)[:, None]  # 9 "(layer, group)" values
    # 3 left pads, the first real token's own column (not used: it has no sink before it), the rest
    cosines = torch.cat([torch.zeros(9, 3), torch.full((9, 1), 5.0), centre + spread], dim=1)  # (9, 43)
    fitted = fit_cubic(cosines, first=3, target_skip=0.6)
    quantile_shift = torch.quantile(spread[:, 0], 0.4)
    assert torch.allclose(fitted, truth + torch.tensor([quantile_shift, 0, 0, 0]), atol=1e-9)
    assert math.isinf(fit_cubic(torch.zeros(9, 4), first=3, target_skip=0.6)[0])  # one token: no data


# ---- the plug-in -------------------------------------------------------------------------------
def test_the_plug_in_attaches_to_a_loaded_model_and_summarises_its_cell(smollm2, batch):
    router = SinkRouter(group="sinkrouter", threshold=0.3)
    with router.attach(smollm2, None) as editor:
        generate(smollm2.model, batch, None)
        samples = editor.take_sample_diagnostics()
        sums = editor.running_sums()
    summary = router.summarise(samples, sums)
    skipped = sum(v for k, v in sums.items() if k.startswith("skipped_"))
    considered = sum(v for k, v in sums.items() if k.startswith("considered_"))
    assert considered == (NEW_TOKENS - 1) * 2 * 28 * 3  # steps x rows x layers 2..29 x groups
    assert summary["skip_rate"] == pytest.approx(skipped / considered) and 0 < summary["skip_rate"] < 1
    assert len(summary["skip_rate_per_layer"]) == 30 and summary["skip_rate_per_layer"][:2] == [0.0, 0.0]
    # the per-sample rates pool to the cell's: every row ran the same number of steps
    assert summary["skip_rate"] == pytest.approx(sum(s["skip_rate"] for s in samples) / len(samples))
    assert summary["samples"] == 2 and summary["mean_decode_steps"] == NEW_TOKENS - 1
