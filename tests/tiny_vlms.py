"""Tiny random-weight video-language models, built offline (no Hugging Face Hub).

Each ``build_<family>()`` returns ``(model, processor)``: the real transformers architecture
with a small config (2 text layers by default, hidden 64, 4 query / 2 KV heads, a 2-layer
vision tower of width 32, a 1-layer audio tower for the Omni thinker), weights drawn from a
fixed seed without disturbing the global RNG, float32, sdpa everywhere, eval mode.

Processors. Qwen2.5-VL and Qwen3-VL get their checkpoints' REAL processor: the tokenizer
(151,665 / 151,669 tokens), chat template and image/video processor settings from
``../shared/data/hf_configs`` (no weights there), copied at test time into a temporary folder
and read by ``AutoProcessor.from_pretrained`` as a downloaded checkpoint's would be; the tiny
model takes the real vocabulary size and the real special token ids, so its embedding has a
row for every real token. Without that folder, building these two families skips the test
with the reason. The other families (whose real processor files are not there) get a
processor assembled here from their own image/video processor classes (small pixel limits),
a byte-level BPE tokenizer trained on a few sentences with the family's special tokens, and
a hand-written chat template.

``build(family, text_layers)`` caches one instance per family and depth for the whole test
session, so that several test modules share them; ``video_batch(family, processor)`` makes a
left-padded batch of two 8-frame 32x32 videos (numpy noise, the Omni thinker's with a 1 s audio
track) with prompts of different lengths; ``encoders(model)`` are the vision (and audio)
towers whose outputs OutRo must leave alone; ``save(family, folder)`` writes a model folder
that a loader reads like a real ``model.path``.

Families: qwen2_vl, qwen2_5_vl, qwen3_vl, llava_onevision (Qwen2 text), llava_next_video
(Llama text), qwen2_5_omni_thinker (video with an audio track; Thinker class, no talker),
internvl (Qwen2 text), videollama3 (Qwen2 text). All exist in transformers 5.23.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

SEED = 0
TEXT_LAYERS = 2
HIDDEN = 64
VOCAB = 320
FRAMES = 8
FRAME_SIZE = 32  # frames are generated at 32x32; processors resize to what they accept

# Two prompts of clearly different lengths, so the shorter row is left-padded.
PROMPTS = (
    "What happens?",
    "Describe what happens in this clip, step by step, and name the colours you see in it.",
)

CORPUS = [
    "Describe the video. What happens in this clip? Answer with one word.",
    "The quick brown fox jumps over the lazy dog while a red ball rolls by.",
    "Name the colours you see: red, green, blue, yellow, black and white.",
    "system user assistant: step by step, what is shown in the video and the audio?",
]

# The text tower's shape, shared by every family.
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    bos_token_id=None,
    eos_token_id=None,
)
HEAD_DIM = HIDDEN // 4  # 16: Qwen mrope_section must sum to HEAD_DIM / 2 = 8
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _template(video: str, image: str) -> str:
    """A Qwen-style chat template with the family's own placeholders."""
    return (
        QWEN_TEMPLATE.replace("<|vision_start|><|video_pad|><|vision_end|>", video).replace(
            "<|vision_start|><|image_pad|><|vision_end|>", image
        )
    )


def train_tokenizer(special: list[str], named: dict[str, str], **kwargs):
    """A byte-level BPE tokenizer (VOCAB entries) trained on CORPUS, wrapped for transformers.

    ``special`` lists every special token (ids 0..len-1 in that order); ``named`` exposes some
    of them as ``tokenizer.<name>`` / ``tokenizer.<name>_id`` (``extra_special_tokens``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=named, padding_side="left", **kwargs)
    assert len(fast) <= VOCAB, len(fast)
    return fast


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]


def _qwen_tokenizer():
    names = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
             "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
    return train_tokenizer(QWEN_SPECIAL, names, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _finish(model):
    model.set_attn_implementation("sdpa")
    return model.eval()


def _seeded(build):
    """Build with weights drawn from SEED, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


# ---- Qwen2-VL (hf_configs holds only its preprocessor config: no tokenizer or chat template) -----

QWEN_PIXELS = dict(min_pixels=28 * 28, max_pixels=56 * 56)  # 32x32 frames -> 28x28 -> 2x2 patches of 14
QWEN_VIDEO = dict(QWEN_PIXELS, cap_pixels_per_frame=False)


def _qwen_vl_ids(tok) -> dict:
    return dict(
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )


def build_qwen2_vl(text_layers: int = TEXT_LAYERS):
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tok = _qwen_tokenizer()
    config = Qwen2VLConfig(
        text_config=dict(TEXT, num_hidden_layers=text_layers, rope_parameters=dict(MROPE)),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2),
        **_qwen_vl_ids(tok),
    )
    model = _finish(_seeded(lambda: Qwen2VLForConditionalGeneration(config)))
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**QWEN_PIXELS),
        video_processor=Qwen2VLVideoProcessor(**QWEN_VIDEO),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )
    return model, processor


# ---- Qwen2.5-VL / Qwen3-VL: the checkpoints' real processor files ---------------------------------

# Read only, never copied into the repository: each test copies them into a folder of its own.
HF_CONFIGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hf_configs"
QWEN2_5_VL_FILES = "Qwen__Qwen2.5-VL-7B-Instruct"
QWEN3_VL_FILES = "Qwen__Qwen3-VL-8B-Instruct"
# family -> {file name: the hf_configs folder it comes from}. The Qwen3-VL folder has no
# vocab.json / merges.txt: they are byte-identical to Qwen2.5-VL's (hf_configs/SOURCES.md).
# generation_config.json carries the checkpoint's stop tokens (<|im_end|>, <|endoftext|>).
REAL_FILES = {
    "qwen2_5_vl": dict.fromkeys(
        ("chat_template.json", "tokenizer_config.json", "vocab.json", "merges.txt", "preprocessor_config.json",
         "generation_config.json"),
        QWEN2_5_VL_FILES,
    ),
    "qwen3_vl": {
        **dict.fromkeys(
            ("chat_template.json", "tokenizer_config.json", "preprocessor_config.json",
             "video_preprocessor_config.json", "generation_config.json"),
            QWEN3_VL_FILES,
        ),
        "vocab.json": QWEN2_5_VL_FILES,
        "merges.txt": QWEN2_5_VL_FILES,
    },
}
# The checkpoint whose config.json gives the family's real vocabulary size.
REAL_CONFIG = {"qwen2_5_vl": QWEN2_5_VL_FILES, "qwen3_vl": QWEN3_VL_FILES}


def copy_real_files(family: str, folder) -> Path:
    """Copy ``family``'s real processor/tokenizer/chat-template files into ``folder``; skip the
    calling test when ../shared/data/hf_configs does not hold them."""
    folder = Path(folder)
    sources = {name: HF_CONFIGS / source / name for name, source in REAL_FILES[family].items()}
    missing = [path for path in sources.values() if not path.is_file()]
    if missing:
        pytest.skip(f"the real {family} processor files are not all in {HF_CONFIGS} (the shared data folder is "
                    f"absent or incomplete): {missing[0]} is missing")
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in sources.items():
        shutil.copyfile(path, folder / name)  # a writable copy: the sources are read-only
    return folder


def real_processor(family: str):
    """``family``'s real processor, read by AutoProcessor from a temporary copy of its files;
    left padding, as the loaders set it."""
    from transformers import AutoProcessor

    with tempfile.TemporaryDirectory(prefix=f"real_{family}_") as folder:
        processor = AutoProcessor.from_pretrained(copy_real_files(family, folder))
    processor.tokenizer.padding_side = "left"
    return processor


def _real_config(family: str) -> dict:
    return json.loads((HF_CONFIGS / REAL_CONFIG[family] / "config.json").read_text())


def _real_ids(family: str, tok) -> dict:
    """The vision special token ids, read from the real tokenizer; the checkpoint's config agrees."""
    ids = _qwen_vl_ids(tok)
    config = _real_config(family)
    assert ids == {key: config[key] for key in ids}, (family, ids)
    return ids


def _real_text(family: str, tok, text_layers: int, **extra) -> dict:
    """The tiny text tower over the checkpoint's vocabulary (its embedding rows: a little above
    the tokenizer's length, as in the real model) with the real stop/pad token ids."""
    vocab = _real_config(family)
    vocab = vocab.get("text_config", vocab)["vocab_size"]
    assert vocab >= len(tok), (family, vocab, len(tok))
    return dict(TEXT, vocab_size=vocab, num_hidden_layers=text_layers,
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, **extra)


def build_qwen2_5_vl(text_layers: int = TEXT_LAYERS):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    processor = real_processor("qwen2_5_vl")
    tok = processor.tokenizer
    config = Qwen2_5_VLConfig(
        text_config=_real_text("qwen2_5_vl", tok, text_layers, rope_parameters=dict(MROPE)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                           fullatt_block_indexes=[1], window_size=56),
        tie_word_embeddings=True,  # one 152k x 64 table, not two: it would be most of the model
        **_real_ids("qwen2_5_vl", tok),
    )
    model = _finish(_seeded(lambda: Qwen2_5_VLForConditionalGeneration(config)))
    return model, processor


def build_qwen3_vl(text_layers: int = TEXT_LAYERS):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    processor = real_processor("qwen3_vl")
    tok = processor.tokenizer
    rope = dict(MROPE, mrope_interleaved=True)
    config = Qwen3VLConfig(
        text_config=_real_text("qwen3_vl", tok, text_layers, head_dim=HEAD_DIM, rope_parameters=rope),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                           patch_size=16, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        tie_word_embeddings=True,  # one 152k x 64 table, not two: it would be most of the model
        **_real_ids("qwen3_vl", tok),
    )
    model = _finish(_seeded(lambda: Qwen3VLForConditionalGeneration(config)))
    return model, processor


# ---- LLaVA-OneVision (SigLIP + Qwen2) / LLaVA-NeXT-Video (CLIP + Llama) -------------------------

LLAVA_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
LLAVA_TEMPLATE = _template(video="<video>", image="<image>")


def _llava_tokenizer():
    return train_tokenizer(LLAVA_SPECIAL, {"image_token": "<image>", "video_token": "<video>"},
                           eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_llava_onevision(text_layers: int = TEXT_LAYERS):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tok = _llava_tokenizer()
    # SigLIP 32x32 / patch 8 = 4x4 patches per frame, pooled to 2x2: 8 frames -> 32 tokens + 1 newline.
    config = LlavaOnevisionConfig(
        text_config=dict(TEXT, num_hidden_layers=text_layers, model_type="qwen2"),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, vision_use_head=False),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[32, 32]],
    )
    model = _finish(_seeded(lambda: LlavaOnevisionForConditionalGeneration(config)))
    size = {"height": 32, "width": 32}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[32, 32]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


def build_llava_next_video(text_layers: int = TEXT_LAYERS):
    from transformers import (LlavaNextImageProcessor, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration,
                              LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor)

    tok = _llava_tokenizer()
    # CLIP 32x32 / patch 8 = 16 patches (+CLS, dropped), average-pooled by 2: 4 tokens per frame.
    config = LlavaNextVideoConfig(
        text_config=dict(TEXT, num_hidden_layers=text_layers, model_type="llama"),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[32, 32]],
        image_seq_length=16,
        video_seq_length=32,
    )
    model = _finish(_seeded(lambda: LlavaNextVideoForConditionalGeneration(config)))
    # The default video processor emits 224x224 frames: resize and crop to the tower's 32x32.
    frames = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**frames),
        image_processor=LlavaNextImageProcessor(image_grid_pinpoints=[[32, 32]], **frames),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
    )
    return model, processor


# ---- Qwen2.5-Omni Thinker (video + its audio track; the talker is never built) -------------------

OMNI_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_bos|>", "<|vision_eos|>",
                "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>"]
OMNI_TEMPLATE = _template(video="<|vision_bos|><|VIDEO|><|vision_eos|>", image="<|vision_bos|><|IMAGE|><|vision_eos|>")
AUDIO_RATE = 16000
AUDIO_SECONDS = 1.0  # 100 mel frames -> 25 audio tokens


def build_qwen2_5_omni_thinker(text_layers: int = TEXT_LAYERS):
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLVideoProcessor,
                              WhisperFeatureExtractor)

    named = {"image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "audio_token": "<|AUDIO|>",
             "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
             "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    tok = train_tokenizer(OMNI_SPECIAL, named, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = tok.convert_tokens_to_ids
    mel = 16
    config = Qwen2_5OmniThinkerConfig(
        text_config=dict(TEXT, num_hidden_layers=text_layers, rope_parameters=dict(MROPE), tie_word_embeddings=False),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                           fullatt_block_indexes=[1], window_size=56),
        audio_config=dict(num_mel_bins=mel, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=HIDDEN, max_source_positions=200, n_window=50),
        audio_token_index=ids("<|AUDIO|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=ids("<|im_start|>"),
    )
    model = _finish(_seeded(lambda: Qwen2_5OmniThinkerForConditionalGeneration(config)))
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**QWEN_PIXELS),
        video_processor=Qwen2VLVideoProcessor(**QWEN_VIDEO),
        feature_extractor=WhisperFeatureExtractor(feature_size=mel, sampling_rate=AUDIO_RATE, chunk_length=2),
        tokenizer=tok,
        chat_template=OMNI_TEMPLATE,
    )
    return model, processor


# ---- InternVL (InternViT + Qwen2) ------------------------------------------------------------------

INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>",
                    "<image>"]


def build_internvl(text_layers: int = TEXT_LAYERS):
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>", "image_token": "<image>"}
    tok = train_tokenizer(INTERNVL_SPECIAL, named, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    # 64x64 frames / patch 16 = 4x4 patches, pixel-shuffled by 0.5: 4 tokens per frame.
    config = InternVLConfig(
        text_config=dict(TEXT, num_hidden_layers=text_layers, model_type="qwen2"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[64, 64], patch_size=[16, 16]),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
    )
    model = _finish(_seeded(lambda: InternVLForConditionalGeneration(config)))
    size = {"height": 64, "width": 64}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=4,
        chat_template=_template(video="<video>", image="<image>"),
    )
    return model, processor


# ---- VideoLLaMA3 (SigLIP-style NaViT + Qwen2) --------------------------------------------------------

def build_videollama3(text_layers: int = TEXT_LAYERS):
    from transformers import (VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3ImageProcessor,
                              VideoLlama3Processor, VideoLlama3VideoProcessor)

    tok = _qwen_tokenizer()
    config = VideoLlama3Config(
        text_config=dict(TEXT, num_hidden_layers=text_layers, model_type="qwen2"),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           patch_size=14),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
    )
    model = _finish(_seeded(lambda: VideoLlama3ForConditionalGeneration(config)))
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(**QWEN_PIXELS),
        video_processor=VideoLlama3VideoProcessor(**QWEN_PIXELS),
        tokenizer=tok,
        chat_template=_template(video="<|video_pad|>", image="<|image_pad|>"),
    )
    return model, processor


FAMILIES = {
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen3_vl": build_qwen3_vl,
    "llava_onevision": build_llava_onevision,
    "llava_next_video": build_llava_next_video,
    "qwen2_5_omni_thinker": build_qwen2_5_omni_thinker,
    "internvl": build_internvl,
    "videollama3": build_videollama3,
}


@functools.cache
def build(family: str, text_layers: int = TEXT_LAYERS):
    """One (model, processor) per family and depth per process: built once, shared by every test."""
    return FAMILIES[family](text_layers)


def make_videos(count: int = 2, frames: int = FRAMES, size: int = FRAME_SIZE) -> list[np.ndarray]:
    """``count`` different (frames, size, size, 3) uint8 clips from a fixed seed."""
    rng = np.random.default_rng(SEED)
    return [rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for _ in range(count)]


def video_batch(family: str, processor, prompts=PROMPTS) -> dict:
    """Processor output for len(prompts) chats, each one video + a prompt; left padded."""
    from transformers.video_utils import VideoMetadata

    videos = make_videos(len(prompts))
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": p}]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]
    # Pre-sampled frames carry no timestamps: say they were sampled at 2 fps (Qwen3-VL and
    # VideoLLaMA3 write them into the prompt).
    metadata = [VideoMetadata(total_num_frames=FRAMES, fps=2.0, frames_indices=list(range(FRAMES))) for _ in prompts]
    kwargs = dict(video_metadata=metadata)
    if family in REAL_FILES:  # the real Qwen3-VL video processor resamples at 2 fps unless told not to
        kwargs["do_sample_frames"] = False  # the frames given are the clip, as the loaders pass them
    if family == "qwen2_5_omni_thinker":
        rng = np.random.default_rng(SEED + 1)
        audio = [rng.standard_normal(int(AUDIO_RATE * AUDIO_SECONDS)).astype(np.float32) * 0.1 for _ in prompts]
        # Each audio clip is video i's own track (interleaved with its frames in the prompt). The
        # Omni processor's class defaults would upscale frames to 128*28*28 pixels: keep them small.
        kwargs.update(audio=audio, audio_from_video_indices=list(range(len(prompts))), load_audio_from_video=True,
                      videos_kwargs={"size": {"shortest_edge": QWEN_PIXELS["min_pixels"],
                                              "longest_edge": QWEN_PIXELS["max_pixels"]}})
    enc = dict(processor(text=texts, videos=videos, return_tensors="pt", padding=True, **kwargs))
    if family == "qwen2_5_omni_thinker":
        enc["use_audio_in_video"] = True
    return enc


ENCODER_NAMES = ("visual", "vision_tower", "vision_model", "audio_tower")


def encoders(model) -> dict[str, torch.nn.Module]:
    """The non-text towers (vision, and audio for the Omni thinker) by attribute name: the
    modules whose outputs and attention implementation OutRo must leave alone."""
    found = {name: getattr(model.model, name) for name in ENCODER_NAMES if getattr(model.model, name, None) is not None}
    if not any(name != "audio_tower" for name in found):
        raise AttributeError(f"no vision tower found in {type(model).__name__}")
    return found


SAVED_AUDIO_WINDOW_S = 30  # the saved Omni processor's feature window: a whole 30 s clip, like the real one's


def save(family: str, folder, text_layers: int = 4):
    """Write a tiny ``family`` model and its processor to ``folder`` (what ``model.path`` takes).

    Qwen2.5-VL and Qwen3-VL get their checkpoint's real files copied in beside the weights
    (tokenizer, chat template, processor configs, generation config), byte for byte, so the
    loader reads exactly what it reads from a downloaded checkpoint. The saved Omni processor
    reads up to 30 s of audio (the in-memory one only 2 s, to keep the OutRo tests small), so
    pipeline tests can feed real clips' whole tracks.
    """
    import copy

    from transformers import WhisperFeatureExtractor

    model, processor = build(family, text_layers)
    model.save_pretrained(folder)
    if family in REAL_FILES:
        copy_real_files(family, folder)  # replaces the generation_config.json derived from the tiny config
        return folder
    if getattr(processor, "feature_extractor", None) is not None:
        processor = copy.copy(processor)
        processor.feature_extractor = WhisperFeatureExtractor(
            feature_size=processor.feature_extractor.feature_size, sampling_rate=AUDIO_RATE,
            chunk_length=SAVED_AUDIO_WINDOW_S,
        )
    processor.save_pretrained(folder)
    return folder


def nextqa_clips(shared_data: Path, folder: Path, limit: int, distinct: bool = False) -> tuple[Path, Path]:
    """The real NExT-QA annotation folder and a folder of generated clips (12 noise frames at
    6 fps, no audio) for its first ``limit`` validation rows, named as the real videos are;
    ``distinct``: each video's noise from its own seed (otherwise every clip has the same pixels).
    Returns (data_dir, video_dir): what ``benchmark.data_dir`` / ``benchmark.video_dir`` take."""
    import csv

    from tests.test_video_decode import write_mp4

    data_dir = shared_data / "video_qa" / "nextqa"
    mapping = json.loads((data_dir / "map_vid_vidorID.json").read_text())
    with open(data_dir / "val.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    video_dir = folder / "videos"
    for number, row in enumerate(rows):
        path = video_dir / (mapping[row["video"]] + ".mp4")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, audio=False, num_frames=12, fps=6, noise=True, seed=number if distinct else 0)
    return data_dir, video_dir
