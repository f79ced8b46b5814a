"""OutRo on the TEXT decoder of tiny random video-language models (tiny_vlms.py).

For every family, on a left-padded batch of two 8-frame videos with prompts of different
lengths:
- OutRo with alpha = 0 and no relaxation is bit-identical to the stock model, and so is the
  model after the ``with`` block;
- OutRo (first_k k=1, alpha 3, one relaxation layer) changes the logits and matches the
  independent loop reference (reference_outro.py) run on the text decoder, row by row, fed
  the inputs_embeds and position ids the text decoder really received (captured by a forward
  pre-hook on the language model), to 1e-5 in final hidden states and logits; the reference
  itself reproduces the stock decoder when it edits nothing;
- the vision (and audio) towers' outputs are bit-identical with and without OutRo, and every
  non-text config keeps its attention implementation while OutRo is active.

Depth: the builders default to 2 text layers, but with 2 layers spec §1 scans no layer at
all (sinks are searched at layers 0 .. L-3), so OutRo is the identity there
(``test_two_layer_models_have_no_scanned_layer``). The OutRo cases use 4 text layers: sinks at
layers 0 and 1, relaxation at layer 0 or 1.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_vlms  # noqa: E402
from reference_outro import reference_outro_embeds  # noqa: E402

from outro_sweep.interventions.outro import OutRo  # noqa: E402
from outro_sweep.interventions.sinks.first_k import FirstK  # noqa: E402

TOL = 1e-5
LAYERS = 4
ALPHA = 3.0
RULE = {"name": "first_k", "k": 1}

# family -> relaxation layer; both layers are covered across the families.
RELAX = {
    "qwen2_vl": 1,
    "qwen2_5_vl": 0,
    "qwen3_vl": 1,
    "llava_onevision": 1,
    "llava_next_video": 0,
    "qwen2_5_omni_thinker": 1,
    "internvl": 0,
    "videollama3": 1,
}
# Every family runs in the default suite: one family costs 2.5-5 s here (build, four forwards,
# four reference passes), all eight about 35 s.
FAMILIES = list(tiny_vlms.FAMILIES)


# ---- capture ------------------------------------------------------------------------------------


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor in a module output (tensor, tuple/list, ModelOutput), in order, detached."""
    if isinstance(output, torch.Tensor):
        return [output.detach().clone()]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def non_text_impls(model, text_config) -> dict[str, str]:
    """Attention implementation of every config in the model except the text tower's:
    sub-configs (recursively) and the configs the encoder modules themselves read."""
    out = {"": model.config._attn_implementation}
    queue = [("", model.config)]
    while queue:
        prefix, config = queue.pop(0)
        for key in config.sub_configs:
            child = getattr(config, key, None)
            if child is None or child is text_config:
                continue
            out[prefix + key] = child._attn_implementation
            queue.append((prefix + key + ".", child))
    for name, module in tiny_vlms.encoders(model).items():
        out[f"module:{name}"] = module.config._attn_implementation
    return out


@torch.no_grad()
def forward(model, enc) -> dict:
    """One forward; returns logits, the text decoder's inputs and output, and encoder outputs."""
    decoder = model.model.language_model
    seen: dict = {"encoders": {}}

    def pre(module, args, kwargs):
        seen["text_in"] = {
            key: (value.detach().clone() if isinstance(value, torch.Tensor) else value)
            for key, value in kwargs.items()
            if key in ("inputs_embeds", "position_ids", "attention_mask", "visual_pos_masks",
                       "deepstack_visual_embeds")
        }

    def post(module, args, kwargs, output):
        seen["text_out"] = output.last_hidden_state.detach().clone()

    handles = [decoder.register_forward_pre_hook(pre, with_kwargs=True),
               decoder.register_forward_hook(post, with_kwargs=True)]
    for name, module in tiny_vlms.encoders(model).items():
        handles.append(module.register_forward_hook(
            lambda m, a, o, name=name: seen["encoders"].setdefault(name, []).append(_tensors(o))))
    try:
        seen["logits"] = model(**enc).logits.detach().clone()
    finally:
        for handle in handles:
            handle.remove()
    return seen


# ---- the reference on one row of the text decoder ---------------------------------------------------


def rope_position_ids(decoder, captured: dict) -> torch.Tensor:
    """The position ids the text decoder feeds its rotary module, (3, B, S) for mrope or (B, S)."""
    embeds = captured["inputs_embeds"]
    batch, seq = embeds.shape[:2]
    pos = captured.get("position_ids")
    mrope = hasattr(decoder.rotary_emb, "mrope_section")
    if pos is None:
        pos = torch.arange(seq).view(1, -1).expand(batch, -1)
    if mrope:
        if pos.dim() == 2:
            pos = pos[None].expand(3, batch, -1)
        elif pos.shape[0] == 4:  # text positions prepended for mask building
            pos = pos[1:]
    return pos


def row_reference(model, captured: dict, row: int, alpha: float, relax: list[int]):
    """reference_outro_embeds on the real tokens of one batch row."""
    decoder = model.model.language_model
    real = captured["attention_mask"][row].bool()
    pos = rope_position_ids(decoder, captured)
    pos = pos[:, row : row + 1, real] if pos.dim() == 3 else pos[row : row + 1, real]
    embeds = captured["inputs_embeds"][row, real]

    after_layer = None
    deep = captured.get("deepstack_visual_embeds")
    if deep is not None:  # Qwen3-VL adds visual features to the residual stream after the first layers
        visual = captured["visual_pos_masks"]
        offset = int(visual[:row].sum())
        count = int(visual[row].sum())
        where = visual[row, real]

        def after_layer(layer_idx, x):
            if layer_idx >= len(deep):
                return x
            x = x.clone()
            x[0, where] = x[0, where] + deep[layer_idx][offset : offset + count].to(x.dtype)
            return x

    ref = reference_outro_embeds(decoder, embeds, pos, RULE, alpha=alpha, temperature=0.1, relax_layers=relax,
                                 after_layer=after_layer)
    ref.logits = model.lm_head(ref.final_hidden[None])[0]
    return ref, real


# ---- one computation per family, shared by the tests -----------------------------------------------


run_enc: dict[str, dict] = {}  # family -> the processor batch family_run used


@functools.cache
def family_run(family: str) -> dict:
    model, processor = tiny_vlms.build(family, LAYERS)
    enc = tiny_vlms.video_batch(family, processor)
    run_enc[family] = enc
    lengths = enc["attention_mask"].sum(1).tolist()
    assert lengths[0] < lengths[1] and enc["attention_mask"][0, 0] == 0, lengths  # left padding
    text_config = model.model.language_model.config
    impl_before = non_text_impls(model, text_config)

    stock = forward(model, enc)
    with OutRo(model, FirstK(RULE["k"]), alpha=0.0, layer=None):
        identity = forward(model, enc)
    relax = [RELAX[family]]
    with OutRo(model, FirstK(RULE["k"]), alpha=ALPHA, temperature=0.1, layer=relax) as outro:
        impl_during = non_text_impls(model, text_config)
        text_impl_during = text_config._attn_implementation
        edited = forward(model, enc)
        diagnostics = outro.take_sample_diagnostics()
    after = forward(model, enc)
    impl_after = non_text_impls(model, text_config)

    references = [row_reference(model, edited["text_in"], row, ALPHA, relax) for row in range(len(lengths))]
    plain = [row_reference(model, stock["text_in"], row, 0.0, []) for row in range(len(lengths))]
    return dict(
        model=model, stock=stock, identity=identity, edited=edited, after=after, relax=relax,
        impl_before=impl_before, impl_during=impl_during, impl_after=impl_after,
        text_impl_during=text_impl_during, diagnostics=diagnostics, references=references, plain=plain,
    )


@pytest.fixture(params=FAMILIES)
def run(request):
    return family_run(request.param)


# ---- tests ----------------------------------------------------------------------------------------------


def test_off_and_identity_settings_are_bit_identical(run):
    stock = run["stock"]["logits"]
    assert torch.equal(run["identity"]["logits"], stock), "alpha=0, layer=None changed the logits"
    assert torch.equal(run["after"]["logits"], stock), "the model is not stock after the with block"
    assert torch.equal(run["identity"]["text_out"], run["stock"]["text_out"])


def test_outro_changes_logits_and_matches_reference(run):
    edited, stock = run["edited"], run["stock"]
    # The text decoder saw the same inputs (the towers and the embedding are untouched).
    assert torch.equal(edited["text_in"]["inputs_embeds"], stock["text_in"]["inputs_embeds"])
    for row, ((ref, real), plain) in enumerate(zip(run["references"], run["plain"])):
        plain_ref, _ = plain
        # The reference itself reproduces the stock text decoder when it edits nothing.
        assert (plain_ref.final_hidden - stock["text_out"][row, real]).abs().max().item() <= TOL
        assert (plain_ref.logits - stock["logits"][row, real]).abs().max().item() <= TOL
        # Sinks at both scanned layers (0 .. L-3), the chosen layer relaxed, as in the implementation.
        assert ref.sinks == {0: [0], 1: [0]}
        assert ref.relaxed == {run["relax"][0]: [0]}
        diag = run["diagnostics"][row]
        assert diag["sink_positions"] == ref.sink_positions()
        assert diag["relaxed"] == ref.relaxed_positions()
        hidden_diff = (edited["text_out"][row, real] - ref.final_hidden).abs().max().item()
        logit_diff = (edited["logits"][row, real] - ref.logits).abs().max().item()
        assert hidden_diff <= TOL, f"row {row}: max |OutRo - reference| hidden = {hidden_diff:.3e}"
        assert logit_diff <= TOL, f"row {row}: max |OutRo - reference| logits = {logit_diff:.3e}"
        moved = (edited["logits"][row, real] - stock["logits"][row, real]).abs().max().item()
        assert moved > 0.05, f"row {row}: OutRo left the logits (almost) unchanged: {moved:.3e}"


def test_encoders_untouched(run):
    stock, edited = run["stock"]["encoders"], run["edited"]["encoders"]
    assert stock and set(stock) == set(edited)
    for name in stock:
        assert len(stock[name]) == len(edited[name]) >= 1
        for calls_stock, calls_edited in zip(stock[name], edited[name]):
            assert len(calls_stock) == len(calls_edited) >= 1
            for a, b in zip(calls_stock, calls_edited):
                assert torch.equal(a, b), f"{name} output changed under OutRo"


def test_only_the_text_tower_switches_attention(run):
    assert run["text_impl_during"] == "outro_sdpa"
    assert run["impl_during"] == run["impl_before"] == run["impl_after"]
    assert any(key.startswith("module:") for key in run["impl_before"])


@torch.no_grad()
def test_two_layer_models_have_no_scanned_layer():
    """With the default 2 text layers spec §1 scans no layer (0 .. L-3 is empty): no sink, no
    edit, bit-identical logits even at alpha 3 with a relaxation layer."""
    model, processor = tiny_vlms.build("llava_onevision")
    assert len(model.model.language_model.layers) == 2
    enc = tiny_vlms.video_batch("llava_onevision", processor)
    stock = model(**enc).logits
    with OutRo(model, FirstK(1), alpha=ALPHA, layer=[0]) as outro:
        edited = model(**enc).logits
        diagnostics = outro.take_sample_diagnostics()
    assert torch.equal(edited, stock)
    assert all(d["sink_positions"] == {} and d["relaxed"] == {"0": []} for d in diagnostics)


@torch.no_grad()
def test_full_omni_model_switches_only_the_thinker_text_tower():
    """Qwen2.5-Omni's full model (talker off) has no top-level text_config: OutRo must address
    thinker_config.text_config, leave the vision and audio configs alone, and edit exactly as
    it does on the Thinker class."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    family = "qwen2_5_omni_thinker"
    thinker_run = family_run(family)
    thinker = thinker_run["model"]
    config = Qwen2_5OmniConfig(thinker_config=thinker.config.to_dict(), enable_audio_output=False)
    full = Qwen2_5OmniForConditionalGeneration(config).eval()
    full.thinker.load_state_dict(thinker.state_dict())
    full.set_attn_implementation("sdpa")
    inner = full.thinker.config

    def impls():
        return (full.config._attn_implementation, inner._attn_implementation, inner.vision_config._attn_implementation,
                inner.audio_config._attn_implementation)

    before = impls()
    with OutRo(full, FirstK(RULE["k"]), alpha=ALPHA, layer=RELAX[family]):
        during = impls()
        assert inner.text_config._attn_implementation == "outro_sdpa"
        logits = full.thinker(**run_enc[family]).logits
    assert during == before == impls()
    assert inner.text_config._attn_implementation == "sdpa"
    assert torch.equal(logits, thinker_run["edited"]["logits"])
