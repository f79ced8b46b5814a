"""V-sinks and L-sinks on tiny random VLMs with their real processors (tests/tiny_vlms.py).

A massive activation is planted by a forward hook on the vision tower's PATCH EMBEDDING (its
output is in the processor's patch order, before any window permutation; for CLIP, which
normalises its embeddings first, on that LayerNorm's output), in one dimension of chosen
patches; the residual stream carries it to the tower's output. The expected LLM
positions are worked out by hand from the processor's layout: the k-th video placeholder of a
row takes the row's k-th projected token.
"""

from __future__ import annotations

import pytest
import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.interventions.vision_sinks import VisionSinkProbe, check_before_load, require_supported, vsink_patches
from outro_sweep.models.base import LoadedModel
from outro_sweep.models.llava_onevision import LlavaOnevision
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from outro_sweep.models.video_lm import AutoVideoLM
from outro_sweep.preflight.command_line import preflight
from tests import tiny_vlms

SPIKE = 1e4
DIM = 7  # vision-tower dimension the spike goes into (towers are 32 wide)
TAU = 4.0  # a 32-wide token with one dominant dim has |x| = sqrt(32) = 5.66 after RMS normalisation


def plant(module: torch.nn.Module, where: dict[int, list[int]] | list[int], dim: int = DIM):
    """Forward hook adding SPIKE to ``dim`` of chosen tokens of ``module``'s output: a list of rows
    of an (n, C) output (Qwen), or {frame: [patches]} of a (frames, P, C) one (LLaVA)."""
    places = list(where.items()) if isinstance(where, dict) else [(where,)]

    def hook(_module, _args, output):
        output = output.clone()
        for place in places:
            output[(*place, dim)] += SPIKE
        return output
    return module.register_forward_hook(hook)


def video_slots(inputs, token_id) -> list[torch.Tensor]:
    return [row.nonzero().flatten() for row in inputs["input_ids"] == token_id]


# ---- Qwen2.5-VL ------------------------------------------------------------------------------------

QWEN_SIDE = 112  # 112x112 frames -> 8x8 patches of 14 -> 4x4 merged tokens: 4 windows of 2x2, permuted


def qwen_inputs(processor, rows: tuple[int, ...] = (0, 1)) -> dict:
    """Row i: clip i of make_videos(2) and PROMPTS[i]."""
    from transformers.video_utils import VideoMetadata

    videos = [tiny_vlms.make_videos(2, size=QWEN_SIDE)[i] for i in rows]
    chats = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": tiny_vlms.PROMPTS[i]}]}]
             for i in rows]
    texts = [processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    meta = [VideoMetadata(total_num_frames=8, fps=2.0, frames_indices=list(range(8))) for _ in videos]
    pixels = QWEN_SIDE * QWEN_SIDE
    return dict(processor(text=texts, videos=videos, video_metadata=meta, padding=True, return_tensors="pt",
                          videos_kwargs={"do_sample_frames": False,
                                         "size": {"shortest_edge": pixels, "longest_edge": pixels}}))


def qwen_patch(t: int, block_h: int, block_w: int, i: int, j: int) -> int:
    """The processor's patch order within a clip of grid (4, 8, 8): t, block row, block col, 2x2."""
    return ((t * 4 + block_h) * 4 + block_w) * 4 + i * 2 + j


def test_qwen2_5_vl_vsinks_are_the_planted_patches():
    from transformers.vision_utils import get_vision_window_index

    model, processor = tiny_vlms.build("qwen2_5_vl")
    inputs = qwen_inputs(processor)
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[4, 8, 8], [4, 8, 8]]
    visual = model.model.visual
    window, _ = get_vision_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size)
    assert not torch.equal(window, torch.arange(window.numel()))  # the window permutation is exercised
    # Clip 0: t=1, block (2, 3), sub-patch (1, 0) -> merged token 1*16 + 2*4 + 3 = 27.
    # Clip 1 (patches 256..511): t=3, block (0, 1), sub-patch (0, 1) -> merged token 3*16 + 1 = 49;
    # and a second patch of the SAME block, sub (1, 1): still one token (a merged token is a
    # V-sink if any of its patches is).
    rows = [qwen_patch(1, 2, 3, 1, 0), 256 + qwen_patch(3, 0, 1, 0, 1), 256 + qwen_patch(3, 0, 1, 1, 1)]
    slots = video_slots(inputs, model.config.video_token_id)
    assert [len(s) for s in slots] == [64, 64]
    expected = [slots[0][[27]], slots[1][[49]]]
    handle = plant(visual.patch_embed, rows)
    try:
        for dims in ([DIM], "auto"):
            with torch.no_grad(), VisionSinkProbe(model, dims=dims, tau=TAU) as probe:
                model(**inputs)
                found = probe.vsink_positions()
                visual_positions = probe.visual_positions()
            assert [f.tolist() for f in found] == [e.tolist() for e in expected], dims
            assert [v.tolist() for v in visual_positions] == [s.tolist() for s in slots]
        # generate() encodes the video before its prefill: the same positions come out. The probe
        # over a LoadedModel takes model.vsink_dims / model.vsink_tau from its loader.
        loader = Qwen2_5VL(path="unused", name="tiny_qwen2_5_vl", vsink_dims=[DIM], vsink_tau=TAU)
        with torch.no_grad(), VisionSinkProbe(LoadedModel(model, processor, loader, loader.name)) as probe:
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
            assert [f.tolist() for f in probe.vsink_positions()] == [e.tolist() for e in expected]
    finally:
        handle.remove()
    with torch.no_grad(), VisionSinkProbe(model, dims=[DIM], tau=TAU) as probe:  # nothing planted: no V-sinks
        model(**inputs)
        assert [f.numel() for f in probe.vsink_positions()] == [0, 0]


def test_a_rows_vsinks_do_not_depend_on_its_batch():
    """The left-padded row 0 of the batch finds the V-sinks it finds alone, shifted by its padding."""
    model, processor = tiny_vlms.build("qwen2_5_vl")
    batch, solo = qwen_inputs(processor), qwen_inputs(processor, rows=(0,))
    pad = int((batch["attention_mask"][0] == 0).sum())
    assert pad > 0
    handle = plant(model.model.visual.patch_embed, [qwen_patch(2, 1, 1, 0, 0)])  # clip 0's patches come first
    try:
        found = {}
        for name, inputs in (("batch", batch), ("solo", solo)):
            with torch.no_grad(), VisionSinkProbe(model, dims="auto", tau=TAU) as probe:
                model(**inputs)
                found[name] = probe.vsink_positions()
    finally:
        handle.remove()
    assert found["solo"][0].numel() == 1 and found["batch"][1].numel() == 0
    assert (found["batch"][0] - pad).tolist() == found["solo"][0].tolist()


# ---- LLaVA-OneVision -------------------------------------------------------------------------------

def test_llava_onevision_vsinks_are_the_planted_patches():
    model, processor = tiny_vlms.build("llava_onevision")
    inputs = tiny_vlms.video_batch("llava_onevision", processor)
    # Frames are 32x32 / patch 8 = 4x4 patches (row-major), bilinearly pooled to 2x2 (pooled token
    # (r // 2, c // 2)); per clip 8 frames x 4 tokens + 1 newline = 33 placeholders.
    slots = video_slots(inputs, model.config.video_token_id)
    assert [len(s) for s in slots] == [33, 33]
    embeddings = model.model.vision_tower.embeddings  # (frames = 2 clips x 8, 16, 32)
    # Clip 0, frame 2, patch (3, 1) -> pooled (1, 0) -> token 2*4 + 1*2 + 0 = 10. Clip 1 (frames 8..15), frame 5,
    # patch (0, 2) -> pooled (0, 1) -> token 5*4 + 0*2 + 1 = 21.
    expected = [slots[0][[10]].tolist(), slots[1][[21]].tolist()]
    handle = plant(embeddings, {2: [3 * 4 + 1], 8 + 5: [0 * 4 + 2]})
    try:
        for dims in ([DIM], "auto"):
            with torch.no_grad(), VisionSinkProbe(model, dims=dims, tau=TAU) as probe:
                model(**inputs)
                assert [f.tolist() for f in probe.vsink_positions()] == expected, dims
                assert [v.tolist() for v in probe.visual_positions()] == [s.tolist() for s in slots]
        with torch.no_grad(), VisionSinkProbe(model, dims=[DIM], tau=TAU) as probe:  # generate() encodes first
            model.generate(**inputs, max_new_tokens=2, do_sample=False)
            assert [f.tolist() for f in probe.vsink_positions()] == expected
    finally:
        handle.remove()


# ---- L-sinks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_lsinks_are_the_planted_llm_token_and_never_a_vsink(family):
    model, processor = tiny_vlms.build(family)
    inputs = qwen_inputs(processor) if family == "qwen2_5_vl" else tiny_vlms.video_batch(family, processor)
    slots = video_slots(inputs, model.config.video_token_id)
    tower = model.model.visual.patch_embed if family == "qwen2_5_vl" else model.model.vision_tower.embeddings
    # Patch 0 of clip 0's first frame: the row's first video token is a V-sink.
    vision_handle = plant(tower, [0] if family == "qwen2_5_vl" else {0: [0]})
    lsink, vsink = int(slots[0][5]), int(slots[0][0])

    def llm_spike(_module, _args, output):  # decoder layer 0's output = the stream entering layer 1
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[0, [lsink, vsink], 3] += SPIKE
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    llm_handle = model.model.language_model.layers[0].register_forward_hook(llm_spike)
    rule = MassiveActivation()
    try:
        with torch.no_grad(), VisionSinkProbe(model, dims=[DIM], tau=TAU) as probe:
            out = model(**inputs, output_hidden_states=True)
            assert probe.vsink_positions()[0].tolist() == [vsink]
            real = inputs["attention_mask"][0].bool()
            flagged = real.nonzero().flatten()[rule.from_hidden(out.hidden_states[1][0][real])]
            assert {lsink, vsink} <= set(flagged.tolist())  # the rule sees both; only one is an L-sink
            counts = probe.lsink_counts(out.hidden_states, rule, inputs["attention_mask"], layers=[0, 1])
            positions = probe.lsink_positions(out.hidden_states[1], rule, inputs["attention_mask"])
    finally:
        vision_handle.remove()
        llm_handle.remove()
    assert counts.tolist() == [[0, 0], [1, 0]]
    assert [p.tolist() for p in positions] == [[lsink], []]


# ---- the other supported families --------------------------------------------------------------

# family: (tower module that plants, where, the planted token's index among row 0's placeholders).
# Qwen2-VL / Qwen2.5-Omni at 28x28 frames: grid (4, 2, 2), one 2x2 block per temporal slot, so patch
# 4*t + k is merged token t. Qwen3-VL: patch 16, 32x32 frames, grid (4, 2, 2) likewise. LLaVA-NeXT-
# Video: CLIP normalises its embeddings before the blocks, so the spike goes on that LayerNorm's
# output; a CLS row comes first (dropped), 4x4 patches are average-pooled to 2x2, no newline:
# frame 3's patch (2, 3) is token 3*4 + 1*2 + 1 = 15.
OTHERS = {
    "qwen2_vl": (lambda m: m.model.visual.patch_embed, [4 * 2 + 1], 2),
    "qwen3_vl": (lambda m: m.model.visual.patch_embed, [4 * 3 + 2], 3),
    "qwen2_5_omni_thinker": (lambda m: m.model.visual.patch_embed, [4 * 1 + 3], 1),
    "llava_next_video": (lambda m: m.model.vision_tower.pre_layrnorm, {3: [1 + 2 * 4 + 3]}, 15),
    # InternVL: CLS first (dropped), 4x4 patches pixel-shuffled to 2x2 tokens of 4 patches each; frames
    # are images of <IMG_CONTEXT> placeholders: frame 6's patch (1, 2) is token 6*4 + 0*2 + 1 = 25.
    "internvl": (lambda m: m.model.vision_tower.embeddings, {6: [1 + 1 * 4 + 2]}, 25),
    # VideoLLaMA3: 32x32 frames -> 28x28, 2x2 patches of 14 per frame in row-major order, pooled by
    # the tower to one token per frame: frame 5's patch (1, 0) is token 5 (no frame is compressed away).
    "videollama3": (lambda m: m.model.vision_model.embeddings, [4 * 5 + 2], 5),
}


@pytest.mark.parametrize("family", list(OTHERS))
def test_other_families_vsinks_are_the_planted_patch(family):
    model, processor = tiny_vlms.build(family)
    inputs = tiny_vlms.video_batch(family, processor)
    tower, where, token = OTHERS[family]
    slots = video_slots(inputs, model.config.video_token_id if family != "internvl" else model.config.image_token_id)
    handle = plant(tower(model), where)
    try:
        with torch.no_grad(), VisionSinkProbe(model, dims=[DIM], tau=TAU) as probe:
            model(**inputs)
            found = [f.tolist() for f in probe.vsink_positions()]
    finally:
        handle.remove()
    assert found == [[int(slots[0][token])], []]


# ---- unsupported layouts ----------------------------------------------------------------------------

def test_unsupported_family_is_one_line():
    with pytest.raises(ConfigError) as err:
        require_supported("auto")  # model=... with the generic AutoVideoLM loader: no known tower layout
    message = str(err.value)
    assert "\n" not in message and "family auto" in message and "qwen2_5_vl, " in message
    require_supported("videollama3")  # supported: no error


@pytest.mark.parametrize("override, needle", [
    ("model.vsink_dims=[-1]", "model.vsink_dims=[-1] is invalid: valid values are auto, or a non-empty list"),
    ("model.vsink_dims=abc", "model.vsink_dims=abc is invalid"),
    ("model.vsink_dims=[]", "model.vsink_dims=[] is invalid"),
    ("model.vsink_tau=0", "model.vsink_tau=0 is invalid: valid values are finite numbers > 0"),
])
def test_vsink_settings_are_refused_in_one_line(override, needle, tmp_path):
    with pytest.raises(ConfigError) as err:
        preflight(["model=qwen2_5_vl_7b", override, f"paths.output_dir={tmp_path / 'out'}"])
    assert "\n" not in str(err.value) and needle in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family, cls, width", [("qwen2_5_vl", Qwen2_5VL, 32), ("llava_onevision", LlavaOnevision, 32)])
def test_vsink_dims_beyond_the_tower_are_refused_before_the_weights_load(family, cls, width, tmp_path):
    folder = tiny_vlms.save(family, tmp_path / family, text_layers=2)
    check_before_load(cls(path=str(folder), name=family, vsink_dims=[width - 1]))
    with pytest.raises(ConfigError) as err:
        check_before_load(cls(path=str(folder), name=family, vsink_dims=[width]))
    assert str(err.value) == (f"model.vsink_dims=[{width}] is out of range: valid values are 0..{width - 1} "
                              f"for the vision tower of model={family}")
    with pytest.raises(ConfigError, match="family auto"):
        check_before_load(AutoVideoLM(path=str(folder), name="any_video_lm"))


def test_auto_dims_are_massive_on_a_few_patches_only():
    """Synthetic tower output (40 patches x 32 dims): dim 3 is large on EVERY patch (an offset,
    not a sink dimension), dim 5 is massive on patches 4 and 17 only."""
    features = torch.randn(40, 32, generator=torch.Generator().manual_seed(0))
    features[:, 3] += 30.0
    features[[4, 17], 5] += 1e4
    assert vsink_patches(features, "auto", tau=4.0).nonzero().flatten().tolist() == [4, 17]
    assert vsink_patches(features, [5], tau=4.0).nonzero().flatten().tolist() == [4, 17]
    # Named explicitly, the offset dim flags every patch but 4 and 17 (whose RMS the spike dominates).
    assert vsink_patches(features, [3], tau=4.0).sum() == 38
    # A share too small for two patches: dim 5 is no longer "a few" patches, nothing is found.
    assert not vsink_patches(features, "auto", tau=4.0, auto_share=0.025).any()


def test_vsink_settings_do_not_define_a_cell_that_reads_no_vsinks():
    """OutRo and the stock model read no V-sinks: their video cells keep the identity they had
    before model.vsink_* existed, whatever those say."""
    from omegaconf import OmegaConf

    from outro_sweep.cell.identity import identity_config
    from outro_sweep.config.compose import compose_config
    from outro_sweep.config.command_line import CONF_DIR

    def hashed(*overrides):
        config = compose_config(["model=qwen2_5_vl_7b", "benchmark=videomme", *overrides], CONF_DIR)
        plain = OmegaConf.to_container(config)
        plain.pop("hydra", None)  # not hashed; its run-time fields are unset outside a Hydra job
        return identity_config(OmegaConf.to_container(OmegaConf.create(plain), resolve=True))

    for outro in ("outro=off", "outro.layer=2"):
        assert hashed(outro) == hashed(outro, "model.vsink_dims=[3]", "model.vsink_tau=5")
        assert "vsink_dims" not in hashed(outro)["model"]


def test_videollama3_features_it_compresses_away_take_no_position():
    """VideoLLaMA3 drops the features its ``video_compression_mask`` marks False (the processor
    sets it for frames that repeat the previous one, and writes one placeholder per kept
    feature). Here the mask drops frame 3 of a one-clip batch (one feature per frame) and the
    prompt loses one placeholder, as the processor would write it; frame 5, planted, is then the
    5th kept feature."""
    model, processor = tiny_vlms.build("videollama3")
    inputs = tiny_vlms.video_batch("videollama3", processor, prompts=tiny_vlms.PROMPTS[:1])
    slots = video_slots(inputs, model.config.video_token_id)[0]
    assert len(slots) == 8 and inputs["video_compression_mask"].all()
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    keep[slots[3]] = False
    inputs = dict(inputs, input_ids=inputs["input_ids"][:, keep], attention_mask=inputs["attention_mask"][:, keep],
                  video_compression_mask=torch.tensor([True, True, True, False, True, True, True, True]))
    handle = plant(model.model.vision_model.embeddings, [4 * 5 + 2])
    try:
        with torch.no_grad(), VisionSinkProbe(model, dims=[DIM], tau=TAU) as probe:
            model(**inputs)
            found = probe.vsink_positions()
    finally:
        handle.remove()
    assert [f.tolist() for f in found] == [[int(video_slots(inputs, model.config.video_token_id)[0][4])]]
