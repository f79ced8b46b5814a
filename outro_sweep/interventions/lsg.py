"""LSG, "When Sinks Help or Hurt" (arXiv 2604.03316; spec §6): a gate at layer l scales the
KEYS of the visual tokens at layer l+1, one scalar for the V-sinks (s_v) and one for the other
visual tokens (s_r), the same on every head: Attn(Q, diag(s) K, V). Text tokens keep scale 1.

``lsg=oracle`` fixes the gate at (rho_vsink, rho_rest = 1 - rho_vsink) with no MLP: the paper's
layer x ratio analysis as a sweep. The setting ``scale`` maps a group's rho to its key scale:
``two_rho`` (s = 2 rho, the default: rho = 0.5 is the identity, as the paper's initial gate
must be) or ``rho`` (s = rho); which one the paper means is OPEN (spec §6), as is ``rope``:
``after`` scales the keys the attention kernel receives (after RoPE, through attention_hook's
``edit_key``); ``before`` scales the key projection's output (after the key norm where the
model has one, Qwen3's ``k_norm``) before RoPE. RoPE is linear in each token's key, so with one
scalar per token both give the same numbers up to rounding (bit for bit where s is 0 or a power
of two).

Prefill only: the scales are decided once per prompt and decode steps reuse the cache. With
``before`` the cache holds the scaled keys; with ``after`` it holds the stock keys and each
decode step scales the prompt's positions of the cached keys again, so a new token attends to
the same scaled visual keys either way; the new tokens themselves are text (scale 1).

Which tokens are visual and which are V-sinks comes from a positions provider: a context
manager over the loaded model whose object answers ``vsink_positions()`` and
``visual_positions()`` after the vision tower ran (per batch row, a LongTensor of positions in
the padded prefill). The default is ``VisionSinkProbe`` (vision_sinks.py); a caller (a test,
the gate's training) may pass its own.

Diagnostics (per sample): the gate's weights, the row's V-sink and visual token counts, and its
L-sink counts per layer: while the gate is attached, a forward pre-hook on each decoder layer
of ``lsink_layers`` reads the residual stream entering that layer at prefill (B, S, D) and
counts at once, per row, the visual tokens that the cell's sink rule flags and that are not
V-sinks (``VisionSinkProbe.lsink_counts``); no hidden state is kept and decode steps are not
looked at. A provider without ``lsink_counts`` (fixed positions) records no L-sink counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal, Protocol

import torch

from outro_sweep.config.schema import NonEmpty, Range, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.attention_hook import register_attention_functions
from outro_sweep.interventions.base import Editor, Intervention
from outro_sweep.interventions.decoder import attention_module

# lsg.layer: the gate's layer l (keys are scaled at l+1), or a list of them (stacked gates).
GateLayers = Annotated[int, Range(ge=0)] | Annotated[list[Annotated[int, Range(ge=0)]], NonEmpty()]
RhoVsink = Annotated[float, Range(ge=0, le=1)]
# lsg.scale (not "key_scale": a config key with the word "key" in its name is masked as a credential)
ScaleRule = Literal["two_rho", "rho"]
RopeOrder = Literal["after", "before"]
# lsg.lsink_layers: the decoder layers whose input is searched for L-sinks; auto = 0..the last gate layer.
LsinkLayers = Literal["auto"] | list[Annotated[int, Range(ge=0)]]


class SinkPositions(Protocol):
    def vsink_positions(self) -> list[torch.Tensor]: ...  # per row, LongTensor of V-sink positions

    def visual_positions(self) -> list[torch.Tensor]: ...  # per row, LongTensor of every visual token


PositionsProvider = Callable[[torch.nn.Module], AbstractContextManager]
# A trained gate of layer l: the last input token's hidden state (B, D) at layer l's output ->
# (B, 2) softmax weights (rho_vsink, rho_rest) per row (outro_sweep/fit/gate.py).
GateWeights = Callable[[torch.Tensor], torch.Tensor]


def vision_sink_probe(loaded) -> AbstractContextManager:
    """The default provider: the V-sink probe on the model's vision tower, with the model's own
    dims and tau (``loaded``: a LoadedModel, or a bare module with the probe's defaults). Imported
    here, so that the intervention's settings check without it."""
    from outro_sweep.interventions.vision_sinks import VisionSinkProbe  # deferred: settings check without it

    return VisionSinkProbe(loaded)


def gate_layers(layer: GateLayers) -> list[int]:
    return sorted(set(layer)) if isinstance(layer, (list, tuple)) else [layer]


def lsink_layer_list(lsink_layers: LsinkLayers, layer: GateLayers) -> list[int]:
    """``auto``: every layer up to and including the last gate layer (the early layers whose
    L-sinks the gate's keys then meet); a list as given, sorted."""
    if lsink_layers == "auto":
        return list(range(max(gate_layers(layer)) + 1))
    return sorted(set(lsink_layers))


def group_scale(rho: float, scale: ScaleRule) -> float:
    """The key scale of a group with gate weight rho."""
    return 2.0 * rho if scale == "two_rho" else rho


class LayerSinkGate(Editor):
    """Context manager that scales the visual keys at the layers after ``layers`` while inside
    ``with``; outside it the model is the stock model.

    ``weights``: trained gates by layer l (``GateWeights``), which replace the fixed rho_vsink:
    each reads the hidden state of the prompt's last token at layer l's output (the last
    position: prompts are left-padded) and decides its own rows' scales at l+1, differentiably,
    so that training reaches the gate through the scaled keys."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[int], rho_vsink: float, scale: ScaleRule = "two_rho",
                 rope: RopeOrder = "after", positions: PositionsProvider | None = None,
                 sink_rule: Any = None, lsink_layers: Sequence[int] = (),
                 weights: Mapping[int, GateWeights] | None = None) -> None:
        """sink_rule (a ``sinks.base.SinkRule``) and lsink_layers: the L-sinks counted per layer;
        none without a rule."""
        super().__init__(model)
        self.weights = dict(weights or {})
        if self.weights:
            layers = sorted(self.weights)
        self.scaled_layers = {layer + 1 for layer in layers}
        self.scale = scale
        self.rho_vsink = float(rho_vsink)
        self.scale_vsink = group_scale(self.rho_vsink, scale)
        self.scale_rest = group_scale(1.0 - self.rho_vsink, scale)
        self.rope = rope
        self.provider_factory = positions or vision_sink_probe
        self.provider: Any = None
        self._provider_cm: AbstractContextManager | None = None
        self.scales: torch.Tensor | None = None  # (B, S) key scale per prefill position; 1 for text and padding
        self.layer_scales: dict[int, torch.Tensor] = {}  # scaled layer l+1 -> its (B, S) scales
        self._masks: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, S) float: V-sinks, other visual
        self.counts: list[tuple[int, int]] = []  # per row of the last prefill: (V-sinks, visual tokens)
        self.sink_rule = sink_rule
        self.lsink_layers = sorted(set(lsink_layers)) if sink_rule is not None else []
        self.lsinks: dict[int, list[int]] = {}  # layer -> per row of the last prefill, its L-sink count
        self._mask: torch.Tensor | None = None  # (B, S) 1 for real tokens of the last prefill, or None
        # (B,) where each row's gate reads the hidden state; None: the last position (a prompt
        # alone). Training sets it to the prompt's last token when the answer follows it.
        self.query: torch.Tensor | None = None

    def unchanged_prefix(self, hidden: list, real: torch.Tensor) -> int:
        """Layers below the first scaled one are stock (the gates only read hidden states there,
        through hooks that a replayed prefix still runs; outro_sweep.group.prefix)."""
        return min(len(hidden), min(self.scaled_layers))

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        """The gates act in the prefill only; decode steps differ only where its cache does."""
        return prefill_depth

    def start(self, edits) -> None:
        register_attention_functions()
        self._provider_cm = self.provider_factory(self.model)
        self.provider = self._provider_cm.__enter__()
        if self.rope == "after":
            edits.route("lsg.rope=after")
        if self.lsink_layers and hasattr(self.provider, "lsink_counts"):
            for index in self.lsink_layers:
                edits.hook(self.parts.layers[index].register_forward_pre_hook(
                    lambda module, args, kwargs, index=index: self._count_lsinks(index, args, kwargs),
                    with_kwargs=True))
        for layer in self.weights:
            edits.hook(self.parts.layers[layer].register_forward_hook(self._gate_from_hidden(layer)))
        for index in sorted(self.scaled_layers):
            attention = attention_module(self.parts.layers[index])
            if self.rope == "after":
                edits.edit(attention, self)
            else:
                hook = self._scale_projected_keys(index)
                edits.hook(_key_output(attention).register_forward_hook(hook))

    def stop(self) -> None:
        if self._provider_cm is not None:
            self._provider_cm.__exit__(None, None, None)
            self._provider_cm = None

    # ---- per prefill ---------------------------------------------------------------------
    def on_prefill(self, call) -> None:
        batch, length, device = call.batch, call.length, call.tokens.device
        vsinks, visual = self.provider.vsink_positions(), self.provider.visual_positions()
        if len(vsinks) != batch or len(visual) != batch:
            raise RuntimeError(f"the sink positions cover {len(visual)} rows, the prefill has {batch}")
        scales = torch.ones(batch, length, dtype=torch.float32, device=device)
        vsink_mask = torch.zeros_like(scales)
        rest_mask = torch.zeros_like(scales)
        self.counts = []
        for row in range(batch):
            row_visual = visual[row].to(device)
            row_vsinks = vsinks[row].to(device)
            scales[row, row_visual] = self.scale_rest
            scales[row, row_vsinks] = self.scale_vsink  # V-sinks are visual tokens too
            rest_mask[row, row_visual] = 1.0
            rest_mask[row, row_vsinks] = 0.0
            vsink_mask[row, row_vsinks] = 1.0
            self.counts.append((int(row_vsinks.unique().numel()), int(row_visual.unique().numel())))
        self.scales = scales
        self._mask = call.padding_mask()
        self.lsinks = {}
        self._masks = (vsink_mask, rest_mask)
        self.layer_scales = {} if self.weights else dict.fromkeys(self.scaled_layers, scales)

    def _count_lsinks(self, index: int, args, kwargs) -> None:
        """Pre-hook of decoder layer ``index``: its input (B, S, D) at prefill -> L-sinks per row."""
        if not self.prefill:
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        counts = self.provider.lsink_counts({index: hidden}, self.sink_rule, self._mask, layers=[index])
        self.lsinks[index] = counts[0].tolist()
        return None

    def _gate_from_hidden(self, layer: int):
        """Forward hook on decoder layer ``layer``: at prefill, its trained gate turns the last
        position's output hidden state into this prefill's scales at ``layer + 1``."""

        def hook(module, args, output):
            if not self.prefill:
                return None
            hidden = output[0] if isinstance(output, tuple) else output  # (B, S, D)
            last = hidden[:, -1] if self.query is None else hidden[torch.arange(hidden.shape[0]), self.query]
            rho = self.weights[layer](last)  # (B, 2): rho_vsink, rho_rest
            vsink_mask, rest_mask = self._masks
            s_vsink = group_scale(rho[:, :1], self.scale)  # (B, 1), broadcast over positions
            s_rest = group_scale(rho[:, 1:], self.scale)
            # 1 + mask * (s - 1): exactly 1 where the mask is 0 and where s is 1 (2 * 0.5)
            self.layer_scales[layer + 1] = 1.0 + vsink_mask * (s_vsink - 1.0) + rest_mask * (s_rest - 1.0)
            self.rho_vsink = float(rho[:, 0].detach().float().mean())  # the diagnostics' mean gate weight
            return None

        return hook

    # ---- the edits ---------------------------------------------------------------------
    def edit_key(self, module, key: torch.Tensor) -> torch.Tensor:
        """rope=after: key (B, H_kv, S_kv, d) as the kernel receives it, cache included; the
        prompt's positions 0..S-1 are scaled at prefill and at every decode step."""
        scales = self.layer_scales.get(module.layer_idx)
        if scales is None:
            return key
        prompt = scales.shape[1]
        # (B, S_kv): the prompt's scales, then 1 for the decode steps' tokens (concatenated, not
        # written in place, so that a trained gate's scales keep their gradient)
        decoded = torch.ones(key.shape[0], key.shape[2] - prompt, dtype=key.dtype, device=key.device)
        factor = torch.cat([scales.to(key.dtype), decoded], dim=1)
        return key * factor[:, None, :, None]

    def _scale_projected_keys(self, layer: int):
        """rope=before: a forward hook scaling output (B, S, H_kv * d) of k_proj or (B, S, H_kv, d)
        of k_norm at ``layer``; prefill only (decode steps project new text tokens, and the cache
        already holds scaled keys)."""

        def hook(module, args, output: torch.Tensor) -> torch.Tensor | None:
            if not self.prefill:
                return None
            factor = self.layer_scales[layer].to(output.dtype)
            return output * factor.reshape(*factor.shape, *([1] * (output.dim() - 2)))

        return hook

    # ---- diagnostics -------------------------------------------------------------------
    def take_sample_diagnostics(self) -> list[dict]:
        """Per batch row of the last prefill: the gate's weights and the tokens they scaled."""
        rows = [{"rho_vsink": self.rho_vsink, "rho_rest": 1.0 - self.rho_vsink, "vsinks": vsinks, "visual": visual}
                for vsinks, visual in self.counts]
        if self.lsinks:  # {layer (str, for JSON): L-sinks entering that layer}
            for position, row in enumerate(rows):
                row["lsinks"] = {str(layer): counts[position] for layer, counts in sorted(self.lsinks.items())}
        self.counts, self.lsinks = [], {}
        return rows

    def running_sums(self) -> dict[str, float]:
        return {}


def _key_output(attention: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the key before RoPE: the key norm if there is one, else k_proj."""
    for name in ("k_norm", "k_proj"):
        module = getattr(attention, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise RuntimeError(f"{type(attention).__name__} has no k_proj: lsg.rope=before cannot reach its keys")


class LSGIntervention(Intervention):
    """LSG as a plug-in: ``conf/lsg/*.yaml`` (``lsg=off`` is the stock model, ``lsg=oracle`` the
    fixed gate)."""

    sweep_axes = ("layer", "rho_vsink")
    edits = frozenset({"attention_keys"})
    needs_vision_sinks = True  # the V-sinks come from the vision tower with model.vsink_dims / vsink_tau
    # The L-sinks of the diagnostics are the visual tokens the cell's sink rule flags: ``sink``
    # defines what an LSG cell records, so it is part of LSG cells' identity.
    needs_sink_rule = True
    #: The sink-positions provider ``attach`` hands the gate; None is ``VisionSinkProbe``. Not a
    #: config key: a caller that has its own positions (a test, the gate's training) sets it.
    positions: PositionsProvider | None = None

    def __init__(self, group: str = "lsg", enabled: bool = True, layer: GateLayers = 0, rho_vsink: RhoVsink = 0.5,
                 scale: ScaleRule = "two_rho", rope: RopeOrder = "after", lsink_layers: LsinkLayers = "auto") -> None:
        super().__init__(group, enabled)
        check_arguments(LSGIntervention, locals(), group)
        if isinstance(layer, Sequence) and not isinstance(layer, str):  # a ListConfig from the YAML
            layer = list(layer)
        if isinstance(lsink_layers, Sequence) and not isinstance(lsink_layers, str):
            lsink_layers = list(lsink_layers)
        self.layer, self.rho_vsink, self.scale, self.rope = layer, float(rho_vsink), scale, rope
        self.lsink_layers = lsink_layers

    @classmethod
    def identity_settings(cls, settings: dict, num_layers: int | None) -> dict:
        """``layer`` as a sorted list (an int and its one-item list are one cell); ``lsink_layers``
        as the layers it resolves to (``auto`` and the list it stands for are one cell)."""
        layer = settings.get("layer", 0)
        values = layer if isinstance(layer, list) else [layer]
        resolved = {**settings}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            layer = sorted(set(values))
            resolved["lsink_layers"] = lsink_layer_list(settings.get("lsink_layers", "auto"), layer)
        return {**resolved, "layer": layer}

    def check_model(self, num_layers: int) -> None:
        if any(layer + 1 >= num_layers for layer in gate_layers(self.layer)):
            raise ConfigError(f"{self.group}.layer={self.layer!r} is out of range: valid values are integers "
                              f"0..{num_layers - 2} (the keys of layer l+1 are scaled) or a list of them")
        if any(layer >= num_layers for layer in lsink_layer_list(self.lsink_layers, self.layer)):
            raise ConfigError(f"{self.group}.lsink_layers={self.lsink_layers!r} is out of range: valid values are "
                              f"auto or a list of integers 0..{num_layers - 1}")

    def check_before_load(self, loader, sink_rule: Any) -> None:
        """A video model of a family whose vision tower the V-sink probe reads (and its
        ``model.vsink_dims`` within the tower), and a sink rule that reads hidden states (the
        L-sinks are found on the residual stream)."""
        from outro_sweep.interventions.vision_sinks import check_before_load  # deferred: torch-free settings
        from outro_sweep.models.video_lm import VideoLMLoader  # deferred: torch-free settings

        if not isinstance(loader, VideoLMLoader):
            raise ConfigError(f"{self.group}.enabled=true needs a video model (LSG gates visual tokens) and "
                              f"model={loader.name} reads text only: valid values are {self.group}=off or a "
                              "video model (conf/model/)")
        check_before_load(loader)
        if getattr(sink_rule, "needs_attention_probs", False):
            raise ConfigError(f"sink={sink_rule.name} reads attention, not hidden states, and {self.group} finds "
                              "its L-sinks on the hidden states: valid values are sink=massive_activation, "
                              "sink_dims or first_k")

    def attach(self, loaded, sink_rule: Any) -> LayerSinkGate:
        """``loaded``: the LoadedModel, so that the positions provider reads the model's own
        vision-sink settings (``model.vsink_dims``, ``model.vsink_tau``) from its loader."""
        provider = self.positions or vision_sink_probe
        return LayerSinkGate(loaded.model, gate_layers(self.layer), self.rho_vsink, scale=self.scale,
                             rope=self.rope, positions=lambda _model: provider(loaded), sink_rule=sink_rule,
                             lsink_layers=lsink_layer_list(self.lsink_layers, self.layer))

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        """Means over the samples of the gate's weights, of the V-sink and visual token counts and
        (``mean_lsinks_per_layer``, {layer: mean}) of the L-sink counts; ``gate_layers``: the
        layers whose gate scales the keys of the next one."""
        infos = [s for s in samples if s is not None]
        if not infos:
            return {}
        summary = {"samples": len(infos), "gate_layers": gate_layers(self.layer),
                   **{f"mean_{key}": sum(info[key] for info in infos) / len(infos)
                      for key in ("rho_vsink", "rho_rest", "vsinks", "visual")}}
        counted = [info["lsinks"] for info in infos if "lsinks" in info]
        if counted:
            layers = sorted({layer for counts in counted for layer in counts}, key=int)
            summary["mean_lsinks_per_layer"] = {
                layer: sum(counts.get(layer, 0) for counts in counted) / len(counted) for layer in layers}
        return summary
