"""LLaVA-NeXT-Video (7B / 34B, ``llava-hf/*-hf``): CLIP ViT-L/14-336 + Vicuna (Llama-2) decoder;
each frame's 24x24 patch features are average-pooled 2x2 (144 tokens per frame), no newline
tokens, no timestamps (``video_metadata`` is accepted and unused).

Fixed resolution: ``LlavaNextVideoVideoProcessor`` resizes every frame's shorter side to 336
and centre-crops 336x336 (``size={"shortest_edge": 336}``, ``crop_size``): a pixel floor or cap
cannot apply, so ``model.min_pixels`` / ``model.max_pixels`` must stay null (ConfigError at
construction otherwise).

Clips of different frame counts: the processor returns ``pixel_values_videos`` as one
(batch, frames, C, H, W) tensor and cannot stack them. The model flattens the batch and frame
dims, encodes every frame on its own and scatters the features in order into the prompt's
video tokens, so the frames of all clips are joined as ONE (1, sum of frames, C, H, W) clip:
bit for bit the same features, in the same order, as separate clips would give.
"""

from __future__ import annotations

from outro_sweep.models.row_batching import encode_by_row
from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout, reject_pixel_limits
from outro_sweep.media.decode import DecodedVideo


class LlavaNextVideo(VideoLMLoader):
    model_class = "LlavaNextVideoForConditionalGeneration"
    family = "llava_next_video"
    model_types = ("llava_next_video",)
    towers = ("vision_tower",)
    vision_sinks = VisionSinkReadout("multi_modal_projector", "projector_input", projector_tokens="one_to_one")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        reject_pixel_limits(self, "its processor resizes and crops every frame to a fixed size (336x336)")

    @staticmethod
    def join(key: str, values: list):
        import torch

        if key == "pixel_values_videos":  # (1, T_i, C, H, W) each -> one (1, sum T_i, C, H, W) clip
            return torch.cat(values, dim=1)
        return torch.cat(values, dim=0)

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        return encode_by_row(
            processor, texts, clips, lambda t, c: super(LlavaNextVideo, self).processor_inputs(processor, t, c),
            join=self.join,
        )
