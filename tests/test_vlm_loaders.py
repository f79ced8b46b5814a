"""The video-LLM loaders (outro_sweep.models.*) on tiny random-weight checkpoints saved to disk.

For each of the 8 families, ``tiny_vlms.save(family, folder, text_layers=4)`` writes a model and
its processor once per session; the family's loader then reads that folder like a real
``model.path``. Checked per family:
- ``num_layers()`` reads 4 from the config without loading weights; ``load()`` gives an
  eval-mode model and a left-padding tokenizer;
- two ``Item``s, clips of 8 and 4 frames (32x32 noise; the Omni thinker's with a 16 kHz
  audio track as long as the clip) and prompts of different lengths, go through
  ``Collator``: the shorter row is left-padded, each row's tokens are its tokens alone,
  and each row's next-token logits from ``generate`` match the row run alone;
- OutRo with alpha 0 and no relaxation is bit-identical to stock on that batch; alpha 1 with a
  relaxation layer changes the logits;
- pixel limits reach the processor (a larger ``max_pixels`` gives more video tokens) where
  they apply, and are refused with a one-line ConfigError where the processor has a fixed
  resolution; ``fps`` sampling settings reach ``loader.sampling``.

Everything is float32 on the CPU; the saved models and every forward are computed once per
family and shared by the tests.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_vlms

from outro_sweep.benchmarks.base import ask
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.outro import OutRo
from outro_sweep.models.internvl import InternVL
from outro_sweep.models.llava_next_video import LlavaNextVideo
from outro_sweep.models.llava_onevision import LlavaOnevision
from outro_sweep.models.qwen2_5_omni import Qwen2_5Omni
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from outro_sweep.models.qwen2_vl import Qwen2VL
from outro_sweep.models.qwen3_vl import Qwen3VL
from outro_sweep.models.videollama3 import VideoLLaMA3
from outro_sweep.predict.data import Collator, Item
from outro_sweep.interventions.sinks.first_k import FirstK
from outro_sweep.media.decode import DecodedVideo

LAYERS = 4
AUDIO_RATE = 16000
SOURCE_FPS = 8.0
FRAMES = (8, 4)  # row 0, row 1: clips of different lengths
PROMPTS = tiny_vlms.PROMPTS  # row 0 short, row 1 long
# Batch row vs the row alone, next-token logits, float32: the measured max |difference| over
# all families and rows is 1.5e-7 (qwen2_5_vl, the Omni thinker, videollama3; 0 to 1.2e-7 for
# the others): padding changes only the shapes the kernels reduce over.
TOL = 1e-6

# tiny_vlms family -> (loader class, loader settings for the batch tests). Pixel limits are
# set where they apply, small enough for the tiny towers (and, for Qwen3-VL and VideoLLaMA3,
# so that the per-frame limits take the row-by-row path for clips of different lengths).
FAMILIES = {
    "qwen2_vl": (Qwen2VL, {"min_pixels": 28 * 28, "max_pixels": 56 * 56}),
    "qwen2_5_vl": (Qwen2_5VL, {"min_pixels": 28 * 28, "max_pixels": 56 * 56}),
    "qwen3_vl": (Qwen3VL, {"min_pixels": 32 * 32, "max_pixels": 64 * 64}),
    "llava_onevision": (LlavaOnevision, {}),
    "llava_next_video": (LlavaNextVideo, {}),
    "qwen2_5_omni_thinker": (Qwen2_5Omni, {"use_audio": True, "min_pixels": 28 * 28, "max_pixels": 56 * 56}),
    "internvl": (InternVL, {}),
    "videollama3": (VideoLLaMA3, {"min_pixels": 28 * 28, "max_pixels": 56 * 56}),
}
FIXED_RESOLUTION = ("llava_onevision", "llava_next_video", "internvl")
PIXEL_LIMITED = [family for family in FAMILIES if family not in FIXED_RESOLUTION]
# Resize factor (patch x merge) of each pixel-limited family: the unit of a frame's side.
FACTOR = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32, "qwen2_5_omni_thinker": 28, "videollama3": 28}
RELAX = {family: [i % 2] for i, family in enumerate(FAMILIES)}  # both scanned layers are covered

assert set(FAMILIES) == set(tiny_vlms.FAMILIES)


# ---- data ------------------------------------------------------------------------------------------


def make_clip(rng: np.random.Generator, frames: int, size: int = 32, audio: bool = False) -> DecodedVideo:
    """``frames`` noise frames, every 2nd frame of a ``2 * frames``-frame clip at 8 fps (so every
    clip is sampled at 4 fps: the Omni processor takes one fps per batch)."""
    indices = np.arange(0, 2 * frames, 2, dtype=np.int64)
    duration = 2 * frames / SOURCE_FPS
    track = None
    if audio:
        track = (rng.standard_normal(round(duration * AUDIO_RATE)) * 0.1).astype(np.float32)
    return DecodedVideo(
        frames=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
        timestamps_s=indices / SOURCE_FPS,
        frame_indices=indices,
        source_num_frames=2 * frames,
        source_fps=SOURCE_FPS,
        duration_s=duration,
        audio=track,
        audio_sample_rate=AUDIO_RATE if audio else None,
    )


def make_items(audio: bool, size: int = 32) -> list[Item]:
    rng = np.random.default_rng(tiny_vlms.SEED)
    items = []
    for index, (frames, prompt) in enumerate(zip(FRAMES, PROMPTS)):
        question = ask(id=f"q{index}", video=f"v{index}.mp4", question=prompt, options=(), answer="x",
                       kind="open")
        items.append(Item(index, question, make_clip(rng, frames, size, audio), cache="decoded"))
    return items


def make_loader(family: str, path, **overrides):
    cls, settings = FAMILIES[family]
    return cls(path=str(path), name=f"tiny_{family}", **{**settings, **overrides})


# ---- shared computation ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_vlms")


@functools.cache
def saved(root: Path, family: str) -> Path:
    """The tiny ``family`` model + processor, written once per session."""
    return Path(tiny_vlms.save(family, root / family, text_layers=LAYERS))


@torch.no_grad()
def next_logits(loaded, inputs: dict) -> torch.Tensor:
    """(B, V) raw next-token logits, as the loader's ``answer_logits`` gets them for logits scoring."""
    out = loaded.model.generate(
        **inputs,
        max_new_tokens=1,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=loaded.tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
        **loaded.loader.generate_kwargs(),
    )
    return out.logits[0].float()


@functools.cache
def family_run(root: Path, family: str) -> dict:
    loader = make_loader(family, saved(root, family))
    loaded = loader.load()
    items = make_items(audio=loader.use_audio)
    collate = Collator(loaded)
    batch = collate(items)
    alone = [collate([item]) for item in items]
    stock = next_logits(loaded, batch["inputs"])
    with OutRo(loaded.model, FirstK(1), alpha=0.0, temperature=0.1, layer=None):
        identity = next_logits(loaded, batch["inputs"])
    with OutRo(loaded.model, FirstK(1), alpha=1.0, temperature=0.1, layer=RELAX[family]):
        edited = next_logits(loaded, batch["inputs"])
    return {
        "loader": loader, "loaded": loaded, "batch": batch, "alone": alone,
        "stock": stock, "identity": identity, "edited": edited,
        "alone_logits": [next_logits(loaded, row["inputs"]) for row in alone],
    }


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def run(tiny_root, family) -> dict:
    return family_run(tiny_root, family)


# ---- loading ---------------------------------------------------------------------------------------


def test_num_layers_from_config_alone(tiny_root, family, monkeypatch):
    loader = make_loader(family, saved(tiny_root, family))

    def no_weights(*args, **kwargs):
        raise AssertionError("num_layers() loaded weights")

    monkeypatch.setattr(type(loader), "_load_model", no_weights)
    assert loader.num_layers() == LAYERS


def test_load_gives_eval_model_and_left_padding(run):
    loaded = run["loaded"]
    assert not loaded.model.training
    assert all(not module.training for module in loaded.model.modules())
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.loader is run["loader"]


# ---- batching --------------------------------------------------------------------------------------


def test_collated_batch_is_left_padded(run):
    batch, alone = run["batch"], run["alone"]
    assert [item.clip.num_frames for item in batch["usable"]] == list(FRAMES) and batch["failed"] == []
    ids, mask = batch["inputs"]["input_ids"], batch["inputs"]["attention_mask"]
    lengths = [row["inputs"]["input_ids"].shape[1] for row in alone]
    assert ids.shape == (2, max(lengths)) and lengths[0] != lengths[1]
    pad_id = run["loaded"].tokenizer.pad_token_id
    for row, length in enumerate(lengths):
        pad = ids.shape[1] - length  # leading pad tokens expected in this row
        assert mask[row, :pad].eq(0).all() and mask[row, pad:].eq(1).all(), f"row {row}"
        assert ids[row, :pad].eq(pad_id).all(), f"row {row}: padding is not the pad token"
        assert torch.equal(ids[row, pad:], alone[row]["inputs"]["input_ids"][0]), f"row {row}: tokens differ alone"
    assert sum(int(mask[row, 0] == 0) for row in range(2)) == 1  # exactly the shorter row is padded


def test_batch_rows_match_rows_alone(run):
    stock = run["stock"]
    assert stock.shape[0] == 2
    for row, alone in enumerate(run["alone_logits"]):
        diff = (stock[row] - alone[0]).abs().max().item()
        assert diff <= TOL, f"row {row}: max |batch - alone| next-token logit = {diff:.3e}"


def test_outro_identity_is_bit_identical_and_alpha_moves_logits(run):
    assert torch.equal(run["identity"], run["stock"]), "OutRo alpha=0, layer=None changed the logits"
    moved = (run["edited"] - run["stock"]).abs().max().item()
    assert moved > 1e-4, f"OutRo alpha=1 with a relaxation layer left the logits unchanged ({moved:.3e})"


# ---- settings --------------------------------------------------------------------------------------


def video_tokens(loaded, inputs: dict) -> int:
    processor = loaded.processor
    video_id = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    return int(inputs["input_ids"].eq(video_id).sum())


@pytest.mark.parametrize("family", PIXEL_LIMITED)
def test_max_pixels_reaches_the_processor(tiny_root, family):
    """64x64 frames: a cap of 1 resize unit squared per frame vs 4 gives 4x the video tokens."""
    loaded = family_run(tiny_root, family)["loaded"]  # its processor; settings come from each loader
    unit = FACTOR[family] ** 2
    items = make_items(audio=family == "qwen2_5_omni_thinker", size=64)
    texts = [item.question.prompt for item in items]
    counts, grids = [], []
    for max_pixels in (unit, 4 * unit):
        loader = make_loader(family, saved(tiny_root, family), min_pixels=unit, max_pixels=max_pixels)
        processor_texts = [loader.render(loaded.processor, text) for text in texts]
        inputs = loader.processor_inputs(loaded.processor, processor_texts, [item.clip for item in items])
        counts.append(video_tokens(loaded, inputs))
        grids.append(inputs["video_grid_thw"][:, 1:].tolist())
    assert counts[1] > counts[0], f"max_pixels did not change the video tokens: {counts}"
    # Per-frame meaning: the 8-frame and the 4-frame clip get the same frame size.
    assert grids[0] == [[2, 2], [2, 2]] and grids[1] == [[4, 4], [4, 4]], grids


@pytest.mark.parametrize("family", FIXED_RESOLUTION)
@pytest.mark.parametrize("key", ["min_pixels", "max_pixels"])
def test_fixed_resolution_refuses_pixel_limits(family, key):
    cls, _ = FAMILIES[family]
    with pytest.raises(ConfigError) as err:
        cls(path="unused", name=f"tiny_{family}", **{key: 100352})
    message = str(err.value)
    assert "\n" not in message and f"model.{key}=100352" in message and "null" in message


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fps_sampling_reaches_loader(family):
    cls, settings = FAMILIES[family]
    kwargs = {"use_audio": True} if settings.get("use_audio") else {}
    loader = cls(path="unused", name=f"tiny_{family}", fps=2.0, max_frames=32, max_side=448, **kwargs)
    sampling = loader.sampling
    assert (sampling.mode, sampling.fps, sampling.max_frames, sampling.max_side) == ("fps", 2.0, 32, 448)
    assert sampling.audio == bool(kwargs)


def test_videollama3_remote_code_checkpoint_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "videollama3_qwen2", "num_hidden_layers": 28}))
    with pytest.raises(ConfigError) as err:
        VideoLLaMA3(path=str(tmp_path), name="videollama3_7b").num_layers()
    assert "remote-code" in str(err.value) and "video_llama_3" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("limits", [True, False], ids=["limits", "no_limits"])
def test_qwen3_vl_takes_one_frame_clips(tiny_root, limits):
    """Qwen3-VL's processor refuses 1-frame clips (t must be >= its temporal patch 2): the loader
    feeds the frame twice, as the processor's own temporal padding would."""
    loaded = family_run(tiny_root, "qwen3_vl")["loaded"]
    overrides = {} if limits else {"min_pixels": None, "max_pixels": None}
    loader = make_loader("qwen3_vl", saved(tiny_root, "qwen3_vl"), **overrides)
    rng = np.random.default_rng(1)
    clips = [make_clip(rng, 1), make_clip(rng, 8)]
    texts = [loader.render(loaded.processor, prompt) for prompt in PROMPTS]
    inputs = loader.processor_inputs(loaded.processor, texts, clips)
    assert inputs["video_grid_thw"][:, 0].tolist() == [1, 4]
    assert inputs["input_ids"].shape[0] == 2
