"""InternVL 3 / 3.5 (``OpenGVLab/InternVL3-*-hf``): InternViT (448 px, patch 14, pixel shuffle
0.5: 256 tokens per frame) + Qwen2.5 decoder. A video is a list of frames, each written into
the prompt as ``Frame{i}: <img><IMG_CONTEXT>*256</img>`` and encoded like one image tile; no
timestamps (``video_metadata`` is accepted and unused).

Fixed resolution: ``InternVLVideoProcessor`` resizes every frame to 448x448
(``size={"height": 448, "width": 448}``); a pixel floor or cap cannot apply, so
``model.min_pixels`` / ``model.max_pixels`` must stay null (ConfigError at construction).

Clips of different frame counts: the processor stacks a batch's clips into one (batch,
frames, ...) tensor before flattening them into ``pixel_values`` (one row per frame), so it
cannot take them together; each row is processed on its own and the rows merged
(``pixel_values`` concatenated in row order: what the model reads either way).
"""

from __future__ import annotations

from outro_sweep.models.row_batching import encode_by_row
from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout, reject_pixel_limits
from outro_sweep.media.decode import DecodedVideo


class InternVL(VideoLMLoader):
    model_class = "InternVLForConditionalGeneration"
    family = "internvl"
    model_types = ("internvl",)
    towers = ("vision_tower",)
    vision_sinks = VisionSinkReadout("multi_modal_projector", "projector_input", projector_tokens="pixel_shuffle")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        reject_pixel_limits(self, "its processor resizes every frame to a fixed size (448x448)")

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        return encode_by_row(
            processor, texts, clips, lambda t, c: super(InternVL, self).processor_inputs(processor, t, c)
        )
