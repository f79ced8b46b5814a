"""LLaVA-OneVision (0.5B / 7B / 72B, ``llava-hf/llava-onevision-qwen2-*-ov-hf``): SigLIP
so400m (384 px, patch 14) + Qwen2 decoder; each frame's 27x27 patch features are bilinearly
pooled to 14x14 (196 tokens per frame) and ONE learned newline token closes each clip; no
timestamps (``video_metadata`` is accepted and unused).

Fixed resolution: ``LlavaOnevisionVideoProcessor`` resizes every frame to the tower's input
size (``size={"height": 384, "width": 384}``); a pixel floor or cap cannot apply, so
``model.min_pixels`` / ``model.max_pixels`` must stay null (ConfigError at construction).

Clips of different frame counts: the processor returns ``pixel_values_videos`` as one
(batch, frames, C, H, W) tensor and cannot stack them, and the model's
``get_video_features`` takes only that shape (it appends the newline per batch entry, so the
clips cannot simply be joined into one). Such a batch is processed row by row and its
``pixel_values_videos`` is a LIST of (1, T_i, C, H, W) tensors; ``load()`` gives the loaded
model's inner module a ``get_video_features`` that encodes a list clip by clip with the
stock method and concatenates the results in order (a tensor goes to the stock method
untouched). Both ``forward`` and ``generate`` (which pre-encodes videos through
``base_model.get_video_features``) use it.
"""

from __future__ import annotations

from outro_sweep.models.row_batching import encode_by_row
from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout, reject_pixel_limits
from outro_sweep.media.decode import DecodedVideo


class RaggedVideoFeatures:
    """``get_video_features`` for a ``LlavaOnevisionModel`` that also takes a list of clips.

    A module-level callable (not a closure) so a loaded model still pickles; it calls the
    class's own method, so it never wraps itself.
    """

    def __init__(self, module) -> None:
        self.module = module

    def __call__(self, pixel_values_videos, vision_feature_layer=None, vision_feature_select_strategy=None,
                 **kwargs):
        stock = type(self.module).get_video_features
        if vision_feature_layer is not None:
            kwargs["vision_feature_layer"] = vision_feature_layer
        if vision_feature_select_strategy is not None:
            kwargs["vision_feature_select_strategy"] = vision_feature_select_strategy
        if not isinstance(pixel_values_videos, (list, tuple)):
            return stock(self.module, pixel_values_videos, **kwargs)

        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        device = self.module.image_newline.device
        kwargs["return_dict"] = True
        pooled = [stock(self.module, clip.to(device), **kwargs).pooler_output for clip in pixel_values_videos]
        # (1, T_i * 196 + 1, D) each -> (1, sum, D): forward flattens dims 0-1 and scatters in order.
        return BaseModelOutputWithPooling(pooler_output=torch.cat(pooled, dim=1))


class LlavaOnevision(VideoLMLoader):
    model_class = "LlavaOnevisionForConditionalGeneration"
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    towers = ("vision_tower",)
    vision_sinks = VisionSinkReadout("multi_modal_projector", "projector_input", projector_tokens="pooled_frames")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        reject_pixel_limits(self, "its processor resizes every frame to a fixed size (384x384)")

    def _load_model(self):
        model = super()._load_model()
        model.model.get_video_features = RaggedVideoFeatures(model.model)
        return model

    @staticmethod
    def join(key: str, values: list):
        import torch

        if key == "pixel_values_videos":  # (1, T_i, C, H, W) of different T_i: kept apart
            return list(values)
        return torch.cat(values, dim=0)

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        return encode_by_row(
            processor, texts, clips, lambda t, c: super(LlavaOnevision, self).processor_inputs(processor, t, c),
            join=self.join,
        )
