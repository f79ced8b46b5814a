"""What every video/omni LLM loader shares: offline loading, frame sampling settings, and
turning decoded clips plus a question into the model's own processor inputs.

A family (Qwen2.5-VL, LLaVA-OneVision, ...) is one subclass in its own module that sets
``model_class`` and overrides only what its processor needs differently; the prompt always
goes through the processor's own chat template, the pixels through its own video processor.

Frames are sampled by ``outro_sweep.media`` (PyAV, cached on disk), never by the processor:
``do_sample_frames=False`` is passed so the processor uses exactly the frames given, and the
clip's real frame indices and fps go along as ``VideoMetadata`` (Qwen3-VL and VideoLLaMA3
write timestamps into the prompt from them).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch

from outro_sweep.config.schema import NonEmpty, Range, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.models.base import LoadedModel, ModelLoader, ModelPath, left_padding
from outro_sweep.media.decode import DecodedVideo, VideoSampling


@dataclass(frozen=True)
class VisionSinkReadout:
    """Where a family's vision-tower output can be read before its projector, and how it maps to
    LLM tokens (``interventions.vision_sinks`` reads V-sinks there).

    ``module``: the hooked submodule of the inner ``model`` (e.g. "visual");
    ``point``: "merger_input" (the tower's output, ``spatial_merge_size ** 2`` consecutive patches
    per LLM token), "projector_input" (what the projector receives, one entry per frame) or
    "pooled_tower" (the tower pools patches itself after its final LayerNorm, VideoLLaMA3);
    ``window_permuted``: the tower permutes merge blocks for window attention (Qwen2.5), undone
    before mapping; ``projector_tokens`` (projector_input only): "one_to_one" (a row per token),
    "pixel_shuffle" (4 patches side by side in a token's channels) or "pooled_frames" (each
    frame's grid bilinearly pooled to half its side, one newline token per clip);
    ``width_key``: the vision config key of the recorded output's width.
    """

    module: str
    point: Literal["merger_input", "projector_input", "pooled_tower"]
    window_permuted: bool = False
    projector_tokens: Literal["one_to_one", "pixel_shuffle", "pooled_frames"] | None = None
    width_key: str = "hidden_size"


class VideoLMLoader(ModelLoader):
    """Base class for video LLM loaders: subclasses set ``model_class`` (a transformers class name)."""

    model_class = "AutoModelForImageTextToText"
    family = "video_lm"  # for messages: "model=<name> (family <family>) ..."
    supports_audio = False  # True where the model hears the video's audio track (Qwen2.5-Omni)
    #: Where V-sinks are read in this family (None: not supported).
    vision_sinks: ClassVar[VisionSinkReadout | None] = None

    def __init__(
        self,
        path: ModelPath,
        name: str,
        num_frames: Annotated[int, Range(ge=1)] | None = 8,
        fps: Annotated[float, Range(gt=0, finite=True)] | None = None,
        max_frames: Annotated[int, Range(ge=1)] | None = None,
        max_side: Annotated[int, Range(ge=1)] | None = None,
        min_pixels: Annotated[int, Range(ge=1)] | None = None,
        max_pixels: Annotated[int, Range(ge=1)] | None = None,
        use_audio: bool = False,
        system_prompt: str | None = None,
        vsink_dims: Literal["auto"] | Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()] = "auto",
        vsink_tau: Annotated[float, Range(gt=0, finite=True)] = 20.0,
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        check_arguments(VideoLMLoader, locals(), self.config_key)
        self.path = os.path.expanduser(str(path))
        self.sampling = self._sampling(num_frames, fps, max_frames, max_side)
        if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
            raise ConfigError(
                f"model.min_pixels={min_pixels} is above model.max_pixels={max_pixels}: valid values have min <= max"
            )
        if use_audio and not self.supports_audio:
            raise ConfigError(
                f"model.use_audio=true, but model={name} has no audio input: valid values are use_audio=false, "
                "or an omni model (qwen2_5_omni_3b, qwen2_5_omni_7b)"
            )
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.use_audio = use_audio
        self.system_prompt = system_prompt
        # V-sinks (LSG): the vision tower's sink dimensions (indices into its output width, before
        # the projector) and threshold; ``auto`` finds the dims per clip
        # (outro_sweep.interventions.vision_sinks).
        self.vsink_dims = vsink_dims if vsink_dims == "auto" else list(vsink_dims)
        self.vsink_tau = float(vsink_tau)
        self.processor_size: dict = {}  # the video processor's own ``size``, read at load()
        if use_audio:
            self.sampling = VideoSampling(**{**self.sampling.__dict__, "audio": True})

    @staticmethod
    def _sampling(num_frames, fps, max_frames, max_side) -> VideoSampling:
        """``fps`` set -> one frame every 1/fps s (at most max_frames); else ``num_frames`` uniform."""
        try:
            if fps is not None:
                return VideoSampling(mode="fps", fps=fps, max_frames=max_frames, max_side=max_side)
            return VideoSampling(mode="uniform", num_frames=num_frames, max_side=max_side)
        except ConfigError as err:  # VideoSampling names its fields; say which model keys they are
            raise ConfigError(f"model.{str(err).removeprefix('video ')}") from None

    # ------------------------------------------------------------------ config without weights

    def _config(self):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"model.path={self.path!r} is neither a model folder nor a hub id in the local HF cache "
                f"(the hub is never contacted): {str(err).splitlines()[0]}"
            ) from None

    def text_config(self, config):
        """The language decoder's config (nested one level deeper for the Omni thinker)."""
        return config.get_text_config(decoder=True)

    def num_layers(self) -> int:
        return int(self.text_config(self._config()).num_hidden_layers)

    def hidden_size(self) -> int:
        return int(self.text_config(self._config()).hidden_size)

    def folder(self) -> str:
        return self.path

    # ------------------------------------------------------------------ weights

    def _model_class(self):
        import transformers

        return getattr(transformers, self.model_class)

    def _load_model(self):
        return self._model_class().from_pretrained(
            self.path, dtype=self.dtype, attn_implementation=self.attn_implementation
        )

    def load_processor(self):
        from transformers import AutoProcessor

        processor = left_padding(AutoProcessor.from_pretrained(self.path))
        # The video processor's own size limits, for pixel_size() to keep where a limit is null.
        self.processor_size = dict(getattr(getattr(processor, "video_processor", None), "size", None) or {})
        return processor

    def load(self) -> LoadedModel:
        processor = self.load_processor()
        model = self._load_model()
        model.eval()
        return LoadedModel(model, processor, self, self.name, self.sink_dims)

    # ------------------------------------------------------------------ inputs

    def messages(self, prompt: str) -> list[dict]:
        """One user turn: the video, then the question text (the order the model cards use)."""
        turns = []
        if self.system_prompt:
            turns.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        turns.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]})
        return turns

    def render(self, processor, prompt: str, template: bool = True) -> str:
        """The exact text the model reads, placeholders included (before video tokens expand);
        always templated, since the video's placeholder lives in the chat turn."""
        return processor.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)

    @staticmethod
    def metadata(clip: DecodedVideo):
        from transformers.video_utils import VideoMetadata

        height, width = clip.frames.shape[1:3]
        return VideoMetadata(
            total_num_frames=int(clip.source_num_frames),
            fps=float(clip.source_fps),
            width=int(width),
            height=int(height),
            duration=float(clip.duration_s),
            frames_indices=[int(i) for i in clip.frame_indices],
        )

    def videos_kwargs(self, clips: list[DecodedVideo]) -> dict:
        """Settings for the processor's video processor: no resampling, this model's pixel limits."""
        kwargs: dict = {"do_sample_frames": False}
        if self.min_pixels is not None or self.max_pixels is not None:
            kwargs["size"] = self.pixel_size()
        return kwargs

    def pixel_size(self) -> dict:
        """``model.min_pixels``/``max_pixels`` in the processor's ``size`` form (Qwen style:
        pixels per frame); a limit left null keeps the processor's own value (the Qwen
        processors need both). Families whose processors resize differently override this."""
        size = dict(self.processor_size)
        if self.min_pixels is not None:
            size["shortest_edge"] = self.min_pixels
        if self.max_pixels is not None:
            size["longest_edge"] = self.max_pixels
        return size

    def processor_inputs(self, processor, texts: list[str], clips: list[DecodedVideo]) -> dict:
        """``processor(...)`` for a batch: rendered chats, one clip each, left-padded tensors."""
        return call_processor(self, processor, texts, clips, self.videos_kwargs(clips))

    def inputs(self, processor, texts: list[str], clips: list[DecodedVideo], template: bool = True) -> dict:
        return self.processor_inputs(processor, texts, clips)  # a video prompt is always templated

    def continuation_position_ids(self, model: torch.nn.Module, real: torch.Tensor, length: int) -> torch.Tensor:
        """M-RoPE families (``derives_positions``): the text positions shifted by the rope deltas
        the prefill left on the model, as (3, B, T), what ``generate`` gives a decode step (the
        model's own derivation from a 2-D mask covers the whole cached sequence, not the new
        tokens). Other families: as a text model."""
        text = super().continuation_position_ids(model, real, length)  # (B, T)
        if not self.derives_positions:
            return text
        # Qwen2-VL / 2.5-VL / 3-VL keep the deltas on the inner model, Omni's thinker on itself
        holder = next(m for m in (model, getattr(model, "model", None)) if getattr(m, "rope_deltas", None) is not None)
        return (text + holder.rope_deltas.to(text.device))[None].expand(3, -1, -1)

    def answer_logits(self, loaded: LoadedModel, inputs: dict):
        """(B, V) raw next-token logits (before any logits processor) from one greedy step:
        generate() derives the rotary positions (M-RoPE for Qwen) from the attention mask."""
        out = loaded.model.generate(**inputs, max_new_tokens=1, do_sample=False, temperature=None, top_p=None,
                                    top_k=None, pad_token_id=loaded.tokenizer.pad_token_id, output_logits=True,
                                    return_dict_in_generate=True, **self.generate_kwargs())
        return out.logits[0].float()


def reject_pixel_limits(loader: VideoLMLoader, why: str) -> None:
    """ConfigError when ``model.min_pixels`` / ``model.max_pixels`` is set on a fixed-resolution family."""
    for key in ("min_pixels", "max_pixels"):
        value = getattr(loader, key)
        if value is not None:
            raise ConfigError(
                f"model.{key}={value!r} cannot apply to model={loader.name} (family {loader.family}): {why}; "
                "valid values are null"
            )


def call_processor(loader: VideoLMLoader, processor, texts: list[str], clips: list[DecodedVideo],
                   videos_kwargs: dict) -> dict:
    """The base loader's processor call, with explicit ``videos_kwargs``."""
    encoded = processor(
        text=texts,
        videos=[clip.frames for clip in clips],
        video_metadata=[loader.metadata(clip) for clip in clips],
        padding=True,
        return_tensors="pt",
        videos_kwargs=videos_kwargs,
    )
    return dict(encoded)


class AutoVideoLM(VideoLMLoader):
    """Any video LLM that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load as is."""

    family = "auto"


def family_classes() -> list[type[VideoLMLoader]]:
    """Every video loader class of this package, each family's module imported to find it."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")
    found, pending = [], list(VideoLMLoader.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def family_of(model_type: str) -> type[VideoLMLoader] | None:
    """The loader class of the family whose models have this transformers ``model_type``; None
    if none of this package's loaders loads it."""
    return next((cls for cls in family_classes() if model_type in cls.model_types), None)


def supported_families() -> list[str]:
    """The ``family`` names of the loaders whose V-sinks can be read (``vision_sinks`` set)."""
    return sorted({cls.family for cls in family_classes() if cls.vision_sinks is not None})
