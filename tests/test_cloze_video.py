"""Cloze scoring of video questions: a tiny random-weight Qwen2.5-VL (M-RoPE, real processor
files) behind a left-padded batch of two video chats.

The options continue each row's video prefill; the model derives its rotary positions from the
prefill's rope deltas (``derives_positions``). Each row's option log-likelihoods equal the plain
loop on that row alone: its prefill, then one decode step per option token (float64, 1e-12).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tiny_vlms  # noqa: E402

from outro_sweep.models.base import LoadedModel  # noqa: E402
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL  # noqa: E402
from outro_sweep.predict.cloze import cloze_options, option_loglikelihoods  # noqa: E402

F64_TOL = 1e-12
PROMPTS = ("Question: What does the person hold in the video?\nAnswer:", "Question: Where is it?\nAnswer:")
OPTIONS = ((" a cup", " a red ball", " nothing"), (" in a kitchen", " outdoors"))


def processor_batch(processor, texts: list[str], videos) -> dict:
    from transformers.video_utils import VideoMetadata

    metadata = [VideoMetadata(total_num_frames=tiny_vlms.FRAMES, fps=2.0, frames_indices=list(range(tiny_vlms.FRAMES)))
                for _ in texts]
    return dict(processor(text=texts, videos=videos, video_metadata=metadata, return_tensors="pt", padding=True))


@pytest.fixture(scope="module")
def qwen64():
    model, processor = tiny_vlms.build("qwen2_5_vl", 2)
    return model.to(torch.float64).eval(), processor


def reference(model, inputs: dict, options) -> list[float]:
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        first = out.logits[0, -1].log_softmax(-1)
        sums = []
        for tokens in options:
            cache, dist, total = copy.deepcopy(out.past_key_values), first, 0.0
            for token in tokens:
                total += float(dist[token])
                # no padding: the model counts the position on from its cache (plus its rope deltas)
                dist = model(input_ids=torch.tensor([[token]]), past_key_values=cache,
                             use_cache=True).logits[0, -1].log_softmax(-1)
            sums.append(total)
    return sums


def test_video_options_are_scored_as_decode_steps_row_by_row(qwen64):
    model, processor = qwen64
    assert Qwen2_5VL.derives_positions
    chats = [processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": p}]}],
                                           tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    rows = [cloze_options(processor.tokenizer, chat, options, special_tokens=False)
            for chat, options in zip(chats, OPTIONS)]
    assert all(chat.endswith("\n") and row.context == chat.rstrip() for chat, row in zip(chats, rows))
    videos = tiny_vlms.make_videos(len(PROMPTS))
    inputs = processor_batch(processor, [row.context for row in rows], videos)
    assert inputs["attention_mask"].sum(1).unique().numel() == 2  # left padding in play
    loader = Qwen2_5VL.__new__(Qwen2_5VL)  # only its class-level position rule is read
    loaded = LoadedModel(model, processor, loader, "tiny_qwen2_5_vl")
    with torch.no_grad():
        got = option_loglikelihoods(loaded, inputs, rows)
    for index, row in enumerate(rows):
        alone = processor_batch(processor, [row.context], [videos[index]])
        expected = reference(model, alone, row.tokens)
        assert len(got[index]) == len(expected)
        for a, b in zip(got[index], expected):
            assert abs(a - b) <= F64_TOL, f"row {index}: batched {a!r} vs alone, one token at a time {b!r}"
