"""Qwen3-VL (2B / 4B / 8B / 32B Instruct, dense): ViT (patch 16, 2x2 merge, DeepStack) + Qwen3
decoder with interleaved M-RoPE; the prompt carries each 2-frame grid's timestamp
(``<1.5 seconds>``), computed from ``VideoMetadata`` (the clip's real frame indices / fps).

Pixel limits: ``Qwen3VLVideoProcessor`` counts ``size["shortest_edge"]`` /
``size["longest_edge"]`` over ALL frames of a clip (``smart_resize(num_frames, h, w)`` checks
``t * h * w``), with resize factor 32 (patch 16 x merge 2). Here ``model.min_pixels`` /
``model.max_pixels`` mean pixels PER FRAME, as for the other Qwen families; each clip's
processor call gets them multiplied by its frame count (``clip_size``). A clip with a
different frame count therefore needs its own ``size``: when limits are set and the batch's
clips differ in length, every row is processed on its own and the rows are merged into one
left-padded batch (``encode_by_row``), so a row's tensors never depend on its batch mates.
A limit left null is the processor's own (a whole-clip budget, batch-independent). With
limits set, ``cap_pixels_per_frame=False`` is passed so the processor adds no budget of its
own on top of them.

The processor rejects 1-frame clips (``t:1 must be larger than temporal_factor:2``); such a
clip is fed with its frame twice, which is what the processor's own temporal padding (repeat
the last frame, repeat the last index for the timestamp) would have produced.

Row-wise processing: ``outro_sweep.models.row_batching``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from outro_sweep.models.row_batching import encode_by_row
from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout, call_processor
from outro_sweep.media.decode import DecodedVideo


class Qwen3VL(VideoLMLoader):
    model_class = "Qwen3VLForConditionalGeneration"
    derives_positions = True  # M-RoPE: positions from the prefill's rope deltas
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    towers = ("visual",)
    vision_sinks = VisionSinkReadout("visual", "merger_input")

    TEMPORAL_PATCH = 2  # frames per temporal grid step in every Qwen3-VL checkpoint

    def clip_size(self, num_frames: int, default: dict) -> dict:
        """``size`` for one clip of ``num_frames`` frames: per-frame limits times the frames the
        processor counts. It checks ``t' * h * w`` (t' = num_frames rounded to a multiple of 2)
        and shrinks by sqrt(num_frames * h * w / limit), so a cap of ``max_pixels * min(n, t')``
        and a floor of ``min_pixels * max(n, t')`` keep every frame within [min, max] pixels
        (exact for even counts; odd counts land a little inside the range)."""
        rounded = round(num_frames / self.TEMPORAL_PATCH) * self.TEMPORAL_PATCH
        size = {"shortest_edge": default.get("shortest_edge"), "longest_edge": default.get("longest_edge")}
        if self.min_pixels is not None:
            size["shortest_edge"] = self.min_pixels * max(num_frames, rounded)
        if self.max_pixels is not None:
            size["longest_edge"] = self.max_pixels * min(num_frames, rounded)
        return size

    @staticmethod
    def two_frames_at_least(clip: DecodedVideo) -> DecodedVideo:
        if clip.num_frames >= 2:
            return clip
        return dataclasses.replace(
            clip,
            frames=np.repeat(clip.frames, 2, axis=0),
            timestamps_s=np.repeat(clip.timestamps_s, 2),
            frame_indices=np.repeat(clip.frame_indices, 2),
        )

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        clips = [self.two_frames_at_least(clip) for clip in clips]
        if self.min_pixels is None and self.max_pixels is None:
            return super().processor_inputs(processor, texts, clips)
        default = dict(processor.video_processor.size)

        def encode(texts_, clips_):
            (frames,) = {clip.num_frames for clip in clips_}
            kwargs = {**self.videos_kwargs(clips_), "size": self.clip_size(frames, default),
                      "cap_pixels_per_frame": False}
            return call_processor(self, processor, texts_, clips_, kwargs)

        return encode_by_row(processor, texts, clips, encode)
