"""The sink taxonomy of visual tokens (LSG): V-sinks from the vision tower, L-sinks from the LLM.

V-sinks. While a ``VisionSinkProbe`` is attached, every prefill's vision-tower output BEFORE
the projector is recorded (one (n_patches, C) tensor per clip), and a patch is a V-sink by
the sink-dimension rule (``sinks.sink_dims.SinkDims``, Kang et al.):

    x = h / RMS(h)   per patch, no gain;   V-sink if max over dims D of |x[d]| > tau

``dims`` and ``tau`` are model settings (``model.vsink_dims``, ``model.vsink_tau``).
``vsink_dims: auto`` finds D per clip from that clip's patches: with x as above,

    count[d] = #{patches t : |x[t, d]| > tau}
    D = {d : 1 <= count[d] <= max(1, floor(auto_share * n_patches))}

i.e. the dimensions that are massive (above tau) on a few patches and not on most of them (a
dimension above tau everywhere is an offset, not a sink dimension). ``auto_share`` defaults to
0.1. Being decided per clip, a row's V-sinks do not depend on the rest of its batch.

Mapping to the LLM. The projected features are scattered, in order, into the positions of
the video placeholder tokens of ``input_ids`` (row-major over the batch), as each model's
``get_placeholder_mask`` does. Where the projector merges or pools patches, ONE LLM token
stands for several patches, and it is a V-sink if ANY patch that feeds it is:
- Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen2.5-Omni: the merger joins each 2x2 block of patches
  (``spatial_merge_size ** 2`` consecutive rows of the tower output) into one token; Qwen2.5's
  window attention permutes those blocks inside the tower, and the permutation is undone here
  exactly as the tower undoes it after its merger.
- LLaVA-OneVision: the projector runs per patch, then each frame's grid is bilinearly pooled
  to half its side; a pooled token is a V-sink if a V-sink patch has a nonzero weight in it
  (the pooling is applied to the 0/1 sink map). Each clip ends with ONE learned newline
  token: visual, never a V-sink. One clip per row (as the loaders build batches).
- LLaVA-NeXT-Video: the tower's patches are average-pooled before the projector, so the
  projector's input is one row per LLM token; it is the recorded output.
- InternVL: each frame is an image of ``<IMG_CONTEXT>`` placeholders; the tower's patches are
  pixel-shuffled (0.5) before the projector, so each LLM token's input is 4 patches' vectors
  side by side in its channels; they are split back into patches.
- VideoLLaMA3: the tower itself pools each merge block bilinearly after its final LayerNorm
  (a pooled spike is diluted by its neighbours), so the recorded output is that LayerNorm's,
  per patch, and the tower's own ``pixel_unshuffle`` maps the 0/1 sink map to features (a
  feature is a V-sink if a V-sink patch has a nonzero weight in it); the model then drops the
  features that ``video_compression_mask`` (from the processor) marks False, and so does the
  mapping here.
Any other family is refused with a one-line ConfigError (``require_supported``).

L-sinks: visual tokens that a decoder-side sink rule (``outro_sweep.interventions.sinks``)
flags at a layer and that are not V-sinks, re-detected at every layer (``lsink_counts``).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.sinks.base import SinkRule
from outro_sweep.interventions.sinks.sink_dims import SinkDims
from outro_sweep.models.video_lm import VisionSinkReadout, family_of, supported_families

AUTO_SHARE = 0.1


def require_supported(family: str) -> None:
    """ConfigError unless V-sinks can be read from ``family``'s vision tower (a loader family name)."""
    supported = supported_families()
    if family not in supported:
        raise ConfigError(
            f"V-sink detection does not support model family {family} (its vision tower's output is not mapped "
            f"to LLM positions): valid families are "
            f"{', '.join(supported)}"
        )


def check_before_load(loader) -> None:
    """The model-free checks of a video loader's V-sink settings (ConfigError, one line): the
    family is supported and ``model.vsink_dims`` lie inside the tower's output width (its config only)."""
    require_supported(loader.family)
    if loader.vsink_dims == "auto":
        return
    config = loader._config()
    vision = getattr(config, "vision_config", None) or config.thinker_config.vision_config
    width = getattr(vision, type(loader).vision_sinks.width_key)  # the recorded output's width
    if max(loader.vsink_dims) >= width:
        raise ConfigError(f"model.vsink_dims={loader.vsink_dims} is out of range: valid values are 0..{width - 1} "
                          f"for the vision tower of model={loader.name}")


def vsink_patches(features: torch.Tensor, dims: Literal["auto"] | list[int], tau: float,
                  auto_share: float = AUTO_SHARE) -> torch.Tensor:
    """features: (n, C) one clip's tower output before the projector -> (n,) bool V-sinks."""
    h = features.detach().float()
    width = h.shape[-1]
    if dims == "auto":
        x = h / h.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (n, C)
        count = (x.abs() > tau).sum(dim=0)  # (C,) patches above tau, per dimension
        few = max(1, math.floor(auto_share * h.shape[0]))
        chosen = ((count >= 1) & (count <= few)).nonzero().flatten().tolist()
    else:
        if max(dims) >= width:
            raise ConfigError(
                f"model.vsink_dims={list(dims)} is out of range: valid values are 0..{width - 1} for this vision tower"
            )
        chosen = list(dims)
    if not chosen:
        return torch.zeros(h.shape[0], dtype=torch.bool, device=h.device)
    return SinkDims(dims=chosen, tau=tau).from_hidden(h)


class VisionSinkProbe:
    """Context manager over a loaded video model: records each prefill's vision-tower output
    (before the projector) and the prefill's ``input_ids``; then ``vsink_positions()`` and
    ``visual_positions()`` give, per batch row, LLM sequence positions (indices into input_ids).

    ``model``: a ``LoadedModel`` (its loader's ``vsink_dims`` / ``vsink_tau`` are the defaults)
    or the transformers ``...ForConditionalGeneration`` (the Omni thinker for Qwen2.5-Omni).
    Works under ``model(...)`` and ``model.generate(...)`` (which encodes the video before the
    prefill); decode steps are ignored. The positions are ready once the vision tower has run,
    so hooks inside the decoder of the same forward may ask for them. Videos only: a prefill
    that also holds images is not mapped.
    """

    def __init__(self, model, dims: Literal["auto"] | list[int] | None = None, tau: float | None = None,
                 auto_share: float = AUTO_SHARE) -> None:
        loader = getattr(model, "loader", None)
        self.model = getattr(model, "model", model) if loader is not None else model
        self.model_type = self.model.config.model_type
        family = family_of(self.model_type)
        require_supported(family.family if family is not None else self.model_type)
        self.readout: VisionSinkReadout = family.vision_sinks
        self.dims = dims if dims is not None else getattr(loader, "vsink_dims", "auto")
        self.tau = float(tau if tau is not None else getattr(loader, "vsink_tau", 20.0))
        self.auto_share = auto_share
        config = self.model.config
        # The placeholder a video's features fill (InternVL feeds frames as images).
        self.video_token_id = next(getattr(config, key) for key in ("video_token_id", "video_token_index",
                                                                    "image_token_id")
                                   if getattr(config, key, None) is not None)
        self._handles: list = []
        self._clips: list[tuple[torch.Tensor, object]] = []  # (features (n, C), to_llm(flags) -> (m,) bool)
        # LLaVA / InternVL: projector inputs (frames, P, C) in call order; VideoLLaMA3: its (n_patches, C)
        self._frames: list[torch.Tensor] = []
        self._input_ids: torch.Tensor | None = None
        self._closed = False
        self._vsinks: list[torch.LongTensor] | None = None  # computed once per prefill
        self._kept: torch.Tensor | None = None  # VideoLLaMA3: (n_features,) bool, the features the model keeps

    # ------------------------------------------------------------------ hooks

    def __enter__(self) -> "VisionSinkProbe":
        read_at = self.model.model.get_submodule(self.readout.module)
        self._handles.append(self.model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(self._after_forward))
        if self.readout.point == "merger_input":
            self._handles.append(read_at.register_forward_hook(self._merger_input, with_kwargs=True))
        elif self.readout.point == "pooled_tower":
            self._handles.append(read_at.post_layernorm.register_forward_hook(self._patches))
            self._handles.append(read_at.register_forward_hook(self._pooled_tower, with_kwargs=True))
        else:
            self._handles.append(read_at.register_forward_pre_hook(self._projector_input))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _reset(self) -> None:
        self._clips, self._frames, self._input_ids, self._closed = [], [], None, False
        self._vsinks = self._kept = None

    def _before_forward(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or not bool((input_ids == self.video_token_id).any()):
            return  # a decode step (or a text-only call): nothing to map
        if any(key.startswith("pixel_values") and value is not None for key, value in kwargs.items()):
            self._reset()  # the tower runs inside this forward
        self._input_ids = input_ids.detach()
        self._kept = kwargs.get("video_compression_mask")
        self._closed = False
        self._vsinks = None

    def _after_forward(self, module, args, output) -> None:
        if self._input_ids is not None:
            self._closed = True  # the next tower call starts a new prefill

    def _tower_call(self) -> None:
        if self._closed:
            self._reset()
        self._vsinks = None

    def _merger_input(self, module, args, kwargs, output) -> None:
        """Qwen towers: ``last_hidden_state`` (n_patches, C) is the merger's input."""
        self._tower_call()
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)  # (clips, 3) t, h, w in patches
        hidden = output.last_hidden_state.detach()
        unit = module.spatial_merge_size ** 2
        if self.readout.window_permuted:  # undo the window permutation of 2x2 blocks
            from transformers.vision_utils import get_vision_window_index

            window_index, _ = get_vision_window_index(grid, module.spatial_merge_size, module.window_size,
                                                      module.patch_size)
            blocks = hidden.reshape(-1, unit, hidden.shape[-1])
            restored = torch.empty_like(blocks)
            restored[window_index.to(blocks.device)] = blocks
            hidden = restored.reshape(hidden.shape)
        sizes = [int(t * h * w) for t, h, w in grid.tolist()]
        for clip in torch.split(hidden, sizes):
            self._clips.append((clip, lambda flags, unit=unit: flags.reshape(-1, unit).any(dim=-1)))

    def _patches(self, module, args, output) -> None:
        """VideoLLaMA3: the final LayerNorm's output (n_patches, C), before the tower pools it."""
        self._tower_call()
        self._frames = [output.detach()]

    def _pooled_tower(self, module, args, kwargs, output) -> None:
        """VideoLLaMA3: split the recorded patches by clip; the tower's pooling maps them to features."""
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)  # (clips, 3) t, h, w in patches
        merge = kwargs.get("merge_sizes", args[2] if len(args) > 2 else None)  # (clips,)
        patches, self._frames = self._frames[0], []
        for clip, one_grid, one_merge in zip(torch.split(patches, grid.prod(dim=1).tolist()), grid, merge):
            def to_llm(flags, one_grid=one_grid[None], one_merge=one_merge[None]):
                return module.pixel_unshuffle(flags.float()[:, None], one_grid, one_merge).flatten() > 0
            self._clips.append((clip, to_llm))

    def _projector_input(self, module, args) -> None:
        self._tower_call()
        self._frames.append(args[0].detach())  # (frames, P, C)

    # ------------------------------------------------------------------ positions

    def _placeholders(self) -> torch.Tensor:
        if self._input_ids is None:
            raise RuntimeError("VisionSinkProbe has recorded no prefill with a video: run the model inside it first")
        return self._input_ids == self.video_token_id  # (B, S)

    def visual_positions(self) -> list[torch.LongTensor]:
        """Per row, the positions of all the row's visual tokens (the video placeholders)."""
        return [row.nonzero().flatten() for row in self._placeholders()]

    def _projector_clips(self, mask: torch.Tensor) -> None:
        frames = torch.cat(self._frames)  # (F, P, C)
        inner = self.model.model
        if self.readout.projector_tokens == "one_to_one":
            self._clips = [(frames.reshape(-1, frames.shape[-1]), lambda flags: flags)]
            return
        if self.readout.projector_tokens == "pixel_shuffle":  # (F, P, 4 C): 4 patches per token, C channels each
            group = round(1 / inner.config.downsample_ratio ** 2)
            patches = frames.reshape(-1, inner.config.vision_config.hidden_size)  # (F * P * 4, C)
            self._clips = [(patches, lambda flags: flags.reshape(-1, group).any(dim=-1))]
            return
        side = inner.config.vision_config.image_size // inner.config.vision_config.patch_size
        pooled = math.ceil(side / 2) ** 2  # tokens per frame after the 2x bilinear pooling
        counts = [int(n) for n in mask.sum(dim=1).tolist() if n]  # one clip per row: T * pooled + 1
        lengths = [(n - 1) // pooled for n in counts]
        if sum(lengths) != frames.shape[0] or any((n - 1) % pooled for n in counts):
            raise RuntimeError(f"video tokens per row {counts} do not match {frames.shape[0]} frames of {pooled} "
                               "tokens plus one newline each: one clip per row is expected")

        def to_llm(flags: torch.Tensor, length: int) -> torch.Tensor:
            sink_map = flags.float().reshape(length, -1, 1)  # (T, P, 1)
            pooled_map = inner.apply_pooling(sink_map).reshape(-1) > 0  # (T * pooled,)
            return torch.cat([pooled_map, pooled_map.new_zeros(1)])  # the newline is never a V-sink

        self._clips = [(clip.reshape(-1, clip.shape[-1]), lambda flags, t=t: to_llm(flags, t))
                       for clip, t in zip(torch.split(frames, lengths), lengths)]

    def vsink_positions(self) -> list[torch.LongTensor]:
        """Per row, the positions of the V-sink tokens (a subset of ``visual_positions()``)."""
        if self._vsinks is None:
            self._vsinks = self._find_vsinks()
        return self._vsinks

    def _find_vsinks(self) -> list[torch.LongTensor]:
        mask = self._placeholders()
        if self.readout.point == "projector_input" and self._frames:
            self._projector_clips(mask)
        flags = [to_llm(vsink_patches(clip, self.dims, self.tau, self.auto_share)).to(mask.device)
                 for clip, to_llm in self._clips]
        stream = torch.cat(flags) if flags else mask.new_zeros(0)
        if self._kept is not None:
            stream = stream[self._kept.to(stream.device)]
        if stream.numel() != int(mask.sum()):
            raise RuntimeError(f"{stream.numel()} visual features for {int(mask.sum())} video tokens")
        sinks = torch.zeros_like(mask)
        sinks[mask] = stream  # row-major, as the model scatters its features
        return [row.nonzero().flatten() for row in sinks]

    # ------------------------------------------------------------------ L-sinks

    def lsink_positions(self, hidden: torch.Tensor, rule: SinkRule,
                        attention_mask: torch.Tensor | None = None) -> list[torch.LongTensor]:
        """hidden: (B, S, D) residual stream entering one decoder layer. Per row, the positions of
        visual tokens that ``rule`` flags (on the row's real tokens) and that are not V-sinks."""
        visual, vsinks = self.visual_positions(), self.vsink_positions()
        found = []
        for row in range(hidden.shape[0]):
            real = (attention_mask[row].bool() if attention_mask is not None
                    else torch.ones(hidden.shape[1], dtype=torch.bool, device=hidden.device))
            flagged = torch.zeros(hidden.shape[1], dtype=torch.bool, device=hidden.device)
            flagged[real] = rule.from_hidden(hidden[row][real])
            keep = flagged[visual[row].to(flagged.device)].to(visual[row].device)
            found.append(visual[row][keep & ~torch.isin(visual[row], vsinks[row])])
        return found

    def lsink_counts(self, hidden_states_by_layer: Sequence[torch.Tensor], rule: SinkRule,
                     attention_mask: torch.Tensor | None = None,
                     layers: Sequence[int] | None = None) -> torch.LongTensor:
        """(len(layers), B) L-sink counts. ``hidden_states_by_layer[l]``: (B, S, D) entering layer l
        (e.g. ``output_hidden_states``); ``layers`` defaults to every entry given."""
        chosen = range(len(hidden_states_by_layer)) if layers is None else layers
        return torch.tensor([[len(p) for p in self.lsink_positions(hidden_states_by_layer[l], rule, attention_mask)]
                             for l in chosen], dtype=torch.long)
