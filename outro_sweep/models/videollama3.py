"""VideoLLaMA3 (2B / 7B): SigLIP-based NaViT (patch 14, any resolution, 2x2 merge) + Qwen2.5
decoder; the prompt carries each frame's timestamp (``Time 1.5s:``) from ``VideoMetadata``.

The native transformers classes (``VideoLlama3ForConditionalGeneration``, model_type
``video_llama_3``) need a checkpoint in that format; the original DAMO-NLP-SG repositories
are remote-code checkpoints (model_type ``videollama3_qwen2``) that these classes do not read,
so such a path is rejected with a ConfigError saying so.

Pixel limits: ``VideoLlama3VideoProcessor`` takes ``size["shortest_edge"]`` as a per-frame
floor but ``size["longest_edge"]`` as a budget for the WHOLE clip (each frame gets
``longest_edge // num_frames``; temporal patch 1, so the division is exact). Here
``model.min_pixels`` / ``model.max_pixels`` both mean pixels PER FRAME: the cap is multiplied
by each clip's frame count. When ``max_pixels`` is set and the batch's clips differ in length,
every row is processed on its own and merged (``encode_by_row``). A limit left null is the
processor's own (its clip budget is split over the clip's own frames: batch-independent).

Token compression (``use_token_compression``, on in every checkpoint) drops a frame's patches
that barely differ from the previous frame's, clip by clip; the processor writes the kept
count into the prompt and the model applies the same mask.
"""

from __future__ import annotations

from outro_sweep.errors import ConfigError
from outro_sweep.models.row_batching import encode_by_row
from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout, call_processor
from outro_sweep.media.decode import DecodedVideo

NATIVE_MODEL_TYPE = "video_llama_3"
REMOTE_CODE_MODEL_TYPES = ("videollama3_qwen2",)  # DAMO-NLP-SG/VideoLLaMA3-{2B,7B}[-Image]


class VideoLLaMA3(VideoLMLoader):
    model_class = "VideoLlama3ForConditionalGeneration"
    family = "videollama3"
    model_types = ("video_llama_3",)
    towers = ("vision_model",)
    vision_sinks = VisionSinkReadout("vision_model", "pooled_tower")

    def _config(self):
        try:
            return super()._config()
        except ConfigError:
            model_type = self._raw_model_type()
            if model_type in REMOTE_CODE_MODEL_TYPES:
                raise ConfigError(
                    f"model.path={self.path!r} is the original remote-code VideoLLaMA3 checkpoint (model_type "
                    f"{model_type}), which transformers' native classes cannot load: valid values are a checkpoint "
                    f"converted to model_type {NATIVE_MODEL_TYPE} (a local folder or a cached hub id)"
                ) from None
            raise

    def _raw_model_type(self) -> str | None:
        """model_type from config.json without resolving its class (None if unreadable)."""
        from transformers import PretrainedConfig

        try:
            config_dict, _ = PretrainedConfig.get_config_dict(self.path)
        except (OSError, ValueError):
            return None
        return config_dict.get("model_type")

    def clip_size(self, num_frames: int, default: dict) -> dict:
        """``size`` for one clip: per-frame floor as is, per-frame cap times the clip's frames."""
        size = {"shortest_edge": default.get("shortest_edge"), "longest_edge": default.get("longest_edge")}
        if self.min_pixels is not None:
            size["shortest_edge"] = self.min_pixels
        if self.max_pixels is not None:
            size["longest_edge"] = self.max_pixels * num_frames
        return size

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        if self.min_pixels is None and self.max_pixels is None:
            return super().processor_inputs(processor, texts, clips)
        default = dict(processor.video_processor.size)

        def encode(texts_, clips_):
            (frames,) = {clip.num_frames for clip in clips_}
            kwargs = {**self.videos_kwargs(clips_), "size": self.clip_size(frames, default)}
            return call_processor(self, processor, texts_, clips_, kwargs)

        if self.max_pixels is None:  # only the per-frame floor is ours: one size fits every clip
            kwargs = {**self.videos_kwargs(clips), "size": self.clip_size(1, default)}
            return call_processor(self, processor, texts, clips, kwargs)
        return encode_by_row(processor, texts, clips, encode)
