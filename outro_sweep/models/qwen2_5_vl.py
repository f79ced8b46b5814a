"""Qwen2.5-VL (3B / 7B / 32B / 72B Instruct): ViT with window attention + Qwen2.5 decoder, M-RoPE.

The processor takes the pixel limits as ``size={"shortest_edge": min_pixels, "longest_edge":
max_pixels}`` (pixels per frame); the temporal position step (``second_per_grid_ts``) comes
from the clip's real sampled fps, which ``VideoLMLoader.metadata`` hands over.
"""

from __future__ import annotations

from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout


class Qwen2_5VL(VideoLMLoader):
    model_class = "Qwen2_5_VLForConditionalGeneration"
    derives_positions = True  # M-RoPE: positions from the prefill's rope deltas
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    towers = ("visual",)
    vision_sinks = VisionSinkReadout("visual", "merger_input", window_permuted=True)
