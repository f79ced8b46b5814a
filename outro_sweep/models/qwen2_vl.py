"""Qwen2-VL (2B / 7B / 72B Instruct): ViT (patch 14, 2x2 merge) + Qwen2 decoder with M-RoPE.

Served exactly like Qwen2.5-VL, whose processor classes it shares (``Qwen2VLVideoProcessor``):
pixel limits as ``size={"shortest_edge": min_pixels, "longest_edge": max_pixels}`` in pixels
per frame, ``do_sample_frames=False`` and ``video_metadata`` accepted, frames of different
counts batch as one flat patch list (``video_grid_thw`` per clip). Unlike Qwen2.5-VL the
processor emits no ``second_per_grid_ts``: the temporal M-RoPE step is one position per
2-frame grid, whatever the clip's fps. The decoder depth is ``text_config.num_hidden_layers``.
"""

from __future__ import annotations

from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout


class Qwen2VL(VideoLMLoader):
    model_class = "Qwen2VLForConditionalGeneration"
    derives_positions = True  # M-RoPE: positions from the prefill's rope deltas
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    towers = ("visual",)
    vision_sinks = VisionSinkReadout("visual", "merger_input", width_key="embed_dim")
