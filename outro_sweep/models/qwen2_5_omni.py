"""Qwen2.5-Omni (3B / 7B): the Thinker hears the video's audio track and sees its frames.

Only the Thinker (vision tower + audio tower + text decoder) answers; the Talker (speech
output) is never built: a full ``qwen2_5_omni`` checkpoint is loaded with
``enable_audio_output=False`` and its ``.thinker`` is returned, a thinker-only checkpoint
(``qwen2_5_omni_thinker``) is loaded as is.

Audio: with ``model.use_audio=true`` each clip's own track is decoded to 16 kHz mono (the
Whisper feature extractor's rate) and the processor interleaves audio and video tokens in
2-second chunks (``load_audio_from_video``); the thinker is then called with
``use_audio_in_video=True`` so its rotary positions interleave the same way. A clip without
an audio track is fed the same length of silence, and its record says so.

The Omni processor takes ONE fps for all videos of a batch (it sets the temporal position
step); with ``model.fps`` set every clip is sampled at that rate, so it is exact. With
uniform sampling (``num_frames``), clips of different lengths have different rates and the
batch's first clip's rate is used: prefer ``fps`` for this family (its config does).
"""

from __future__ import annotations

import numpy as np

from outro_sweep.models.video_lm import VideoLMLoader, VisionSinkReadout
from outro_sweep.media.decode import DecodedVideo

AUDIO_SAMPLE_RATE = 16000  # Hz: WhisperFeatureExtractor's rate in every Qwen2.5-Omni checkpoint


class Qwen2_5Omni(VideoLMLoader):
    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    derives_positions = True  # M-RoPE: positions from the prefill's rope deltas
    family = "qwen2_5_omni"
    model_types = ("qwen2_5_omni_thinker",)
    towers = ("visual", "audio_tower")
    vision_sinks = VisionSinkReadout("visual", "merger_input", window_permuted=True)
    supports_audio = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.use_audio:
            self.sampling = type(self.sampling)(**{**self.sampling.__dict__, "audio_sample_rate": AUDIO_SAMPLE_RATE})

    def text_config(self, config):
        # The full model nests the thinker's config; the thinker's own nests the text decoder.
        config = getattr(config, "thinker_config", config)
        return config.text_config

    def _load_model(self):
        import transformers

        config = self._config()
        if config.model_type == "qwen2_5_omni":  # full checkpoint: thinker + talker + token2wav
            full = transformers.Qwen2_5OmniForConditionalGeneration.from_pretrained(
                self.path, dtype=self.dtype, attn_implementation=self.attn_implementation, enable_audio_output=False
            )
            return full.thinker
        return super()._load_model()

    @staticmethod
    def audio_track(clip: DecodedVideo) -> np.ndarray:
        """(N,) float32 mono at 16 kHz: the clip's own track, or silence as long as the clip."""
        if clip.audio is not None and clip.audio.size > 0:
            return clip.audio.astype(np.float32, copy=False)
        return np.zeros(max(1, int(round(clip.duration_s * AUDIO_SAMPLE_RATE))), dtype=np.float32)

    def videos_kwargs(self, clips: list[DecodedVideo]) -> dict:
        kwargs = super().videos_kwargs(clips)
        if clips:
            kwargs["fps"] = self.metadata(clips[0]).sampled_fps
        return kwargs

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        if not self.use_audio:
            return super().processor_inputs(processor, texts, clips)
        encoded = processor(
            text=texts,
            videos=[clip.frames for clip in clips],
            audio=[self.audio_track(clip) for clip in clips],
            # audio i is video i's own track: interleaved with its frames in 2 s chunks
            audio_from_video_indices=list(range(len(clips))),
            load_audio_from_video=True,
            padding=True,
            return_tensors="pt",
            videos_kwargs=self.videos_kwargs(clips),
        )
        return dict(encoded)

    def generate_kwargs(self) -> dict:
        return {"use_audio_in_video": self.use_audio}
