"""The atlas by modality on a tiny random Qwen2.5-VL (tests/tiny_vlms.py) with its real
processor files, on real NExT-QA questions over generated clips. A massive activation is
planted in the LLM's stream at the row's first visual token (a forward hook on decoder layer
0, so it enters layer 1 on): the atlas must report it as visual, and as an L-sink (the rule
flags it, the vision tower does not)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from outro_sweep.atlas import run
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from tests import tiny_vlms

LIMIT = 2
SPIKE = 1e4  # the tiny model's |h| is ~1: far beyond the massive-activation rule's max(100, 1000 x median)
DIM = 3


def plant_in_first_visual_token(loaded) -> None:
    model = loaded.model
    video_id = model.config.video_token_id
    seen: dict = {}

    def remember(_module, args, kwargs):
        seen["ids"] = kwargs.get("input_ids", args[0] if args else None)

    def spike(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        first = int((seen["ids"][0] == video_id).nonzero()[0])
        hidden = hidden.clone()
        hidden[0, first, DIM] += SPIKE
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    model.register_forward_pre_hook(remember, with_kwargs=True)
    model.model.language_model.layers[0].register_forward_hook(spike)


@pytest.fixture(scope="module")
def atlas(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas_vlm")
    folder = tiny_vlms.save("qwen2_5_vl", tmp / "model")
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp, LIMIT + 1)
    clips = sorted(video_dir.rglob("*.mp4"))
    assert len(clips) == LIMIT + 1  # the first rows of NExT-QA val ask about different videos
    clips[-1].write_bytes(b"not a video")  # one question whose clip cannot be decoded: left out, listed
    overrides = ["model=qwen2_5_vl_7b", f"model.path={folder}", "model.num_frames=4", "model.fps=null",
                 "model.min_pixels=784", "model.max_pixels=3136", "model.dtype=float32", "benchmark=nextqa_mc",
                 f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}", f"benchmark.limit={LIMIT + 1}",
                 f"paths.output_dir={tmp / 'out'}", f"paths.cache_dir={tmp / 'cache'}", "logger.mode=disabled"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("atlas", overrides=overrides)
    load = Qwen2_5VL.load

    def planted_load(self):
        loaded = load(self)
        plant_in_first_visual_token(loaded)
        return loaded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Qwen2_5VL, "load", planted_load)
        result = run.run_atlas(cfg)
    assert not result.cached
    return result.atlas


def test_planted_visual_activation_is_reported_as_visual(atlas):
    modality = atlas["modality"]
    assert modality["measured"] and modality["prompts"] == LIMIT == atlas["prompts"]
    assert len(atlas["failed"]) == 1
    assert modality["tokens"]["visual"] > 0 and modality["tokens"]["text"] > 0 and modality["tokens"]["audio"] == 0
    layers = atlas["layers"]
    # Layer 0 (the embeddings) holds no spike; every later layer's top-1 |h| is the visual token.
    assert modality["top"]["visual"][0] < 1 and modality["sinks"]["visual"][0] == 0.0
    for layer in range(1, layers):
        assert modality["carrier"]["visual"][layer] == 1.0, layer
        assert modality["top"]["visual"][layer] > SPIKE / 2 > modality["top"]["text"][layer], layer
        # The massive-activation rule flags that one visual token, no text token, and it is an L-sink.
        assert modality["sinks"]["visual"][layer] == 1.0 and modality["sinks"]["text"][layer] == 0.0, layer
        assert modality["lsinks"][layer] == 1.0
    assert modality["vsinks"] == 0.0  # nothing planted in the vision tower
    assert atlas["rules"]["rules"]["massive_activation"]["rate"][1] == 1.0
    assert "modality.png" in atlas["figures"]


def test_omni_audio_tokens_are_their_own_modality(shared_data, tmp_path):
    """Qwen2.5-Omni's thinker (tiny, random) hears each clip's track: the generated 2 s clips
    have none, so the loader feeds 2 s of silence, which its audio tower turns into 50 tokens
    (25 per second); the 4 frames are 8 merged visual tokens, as for Qwen2.5-VL."""
    folder = tiny_vlms.save("qwen2_5_omni_thinker", tmp_path / "model")
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp_path, LIMIT)
    overrides = ["model=qwen2_5_omni_3b", f"model.path={folder}", "model.num_frames=4", "model.fps=null",
                 "model.min_pixels=784", "model.max_pixels=3136", "model.dtype=float32", "benchmark=nextqa_mc",
                 f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}", f"benchmark.limit={LIMIT}",
                 f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}",
                 "logger.mode=disabled"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        atlas = run.run_atlas(compose("atlas", overrides=overrides)).atlas
    tokens = atlas["modality"]["tokens"]
    assert (tokens["visual"], tokens["audio"]) == (8, 50) and tokens["text"] > 0, tokens
    assert "modality.png" in atlas["figures"]


def test_text_model_has_no_modality_numbers():
    from outro_sweep.atlas.modality import ByModality
    from outro_sweep.interventions.sinks.first_k import FirstK

    assert ByModality(2, FirstK()).result() == {"measured": False}
