"""OutRo (arXiv 2603.14337): sink-aligned rotation of head outputs plus a one-time causal
mask relaxation for sinks, applied at inference time to a decoder's attention.

How it attaches (all through published seams, all undone on exit; ``base.Editor`` does the
bookkeeping):
- at each prefill (``on_prefill``: the editor base tells a prefill, over an empty KV cache, from
  a decode forward) it reads the real tokens off the 2-D padding mask; a forward hook on the text
  decoder ends the prefill;
- a forward pre-hook on every decoder layer reads the residual stream h^l (B, S, D) and
  detects that layer's sinks over real tokens only, the whole batch at once;
- the text decoder's attention implementation is switched to ``outro_sdpa`` or
  ``outro_eager`` (see attention_hook.py), which calls the stock kernel and then ``edit``.

Positions are absolute indices into the padded prefill (= KV cache) sequence. Decode
steps never add sinks; whether their outputs are rotated toward the prefill's sink value
mean of that layer is ``rotate_decode``:
- True: at every layer where the row's prompt had sinks;
- False: never (decode reads the edited cache only);
- "official": as the released code does it (spec §4), which compares the new token's local
  index 0 with the prompt's sink positions: rotated only at layers whose sinks (S_l of the
  row's prompt) exclude the row's first real token, not rotated where they include it.

The edits are computed in max(float32, model dtype) (rotation.edit_dtype).

Host synchronisation (a GPU waiting for Python): detection, relaxation, rotation and the cosine
sums are whole-batch tensor operations whose shapes never depend on what was detected, and the
diagnostics stay on the device until ``take_sample_diagnostics()`` / ``running_sums()`` read
them, once each per batch. A decode step makes no host sync at all. A prefill forward makes at
most ``PREFILL_HOST_SYNCS`` (with the built-in sink rules): at its end, the layers where some
row will rotate its decode steps are read once, so that decode skips the others without asking.

A layer where no row has a sink is left exactly stock by both edits. A layer with sinks is
edited alike by two OutRos that agree on the rule, alpha, temperature, ``rotate_decode`` and
whether it relaxes there (``layer_signatures``). A caller that replays such layers from another
run (outro_sweep.group.prefix) may skip ``edit`` there and hand over what it left
(``export_layer_state`` / ``import_layer_state``): the diagnostics and the decode steps are the
same as when it runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from outro_sweep.config.schema import check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.attention_hook import register_attention_functions
from outro_sweep.interventions.base import Editor, Intervention
from outro_sweep.interventions.decoder import attention_module
from outro_sweep.interventions.settings import (
    Alpha,
    LayerSpec,
    RotateDecode,
    Temperature,
    relaxation_layers,
)
from outro_sweep.interventions.rotation import (
    cosine,
    edit_dtype,
    rotate_along,
    rotate_toward,
    sink_direction,
    unmasked_attention,
)
from outro_sweep.interventions.sinks.base import SinkRule

#: Host syncs one prefill forward makes at most (built-in sink rules): the read of the decode
#: rotation layers when the prefill ends. Decode steps make none.
PREFILL_HOST_SYNCS = 1


class OutRo(Editor):
    """Context manager that applies OutRo to ``model`` while inside ``with``.

    After each prefill, ``take_sample_diagnostics()`` returns one dict per batch row and
    ``cell_diagnostics()`` the per-layer mean cosine to the sink direction before and after
    rotation, accumulated over every prefill since construction.
    """

    # ``layer`` acts per layer: ``layer_signatures`` says at each layer whether it relaxes there.
    per_layer_settings = ("layer",)

    def __init__(
        self,
        model: torch.nn.Module,
        rule: SinkRule,
        alpha: Alpha = 3.0,
        temperature: Temperature = 0.1,
        layer: LayerSpec = "auto",
        rotate_decode: RotateDecode = True,
    ) -> None:
        check_arguments(OutRo, locals(), "outro")
        super().__init__(model)
        self.rule = rule
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.relax_layers = set(relaxation_layers(layer, self.num_layers))
        self.rotate_decode = rotate_decode
        # Sinks are searched at layers 0..L-3; the last two layers are never scanned.
        self.scan_end = self.num_layers - 2
        # Cell-level cosine sums on the device: layer -> (3,) float64 [sum before, sum after,
        # count of (token, head)], over every prefill since construction.
        self._cos: dict[int, torch.Tensor] = {}
        self._reset_prefill_state(None)

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, edits) -> None:
        register_attention_functions()
        current = self.parts.config._attn_implementation
        if self.rule.needs_attention_probs and current.startswith("outro_") and current != "outro_eager":
            raise ConfigError(f"sink={self.rule.name} needs eager attention but another intervention runs "
                              f"{current}: valid values are model.attn_implementation=eager")
        edits.route("OutRo", "eager" if self.rule.needs_attention_probs else None)
        edits.hook(self.parts.decoder.register_forward_hook(self._on_decoder_output))
        for index, layer in enumerate(self.parts.layers):
            edits.hook(layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True))
            edits.edit(attention_module(layer), self)

    # ---- per-forward state -------------------------------------------------------------
    def _reset_prefill_state(self, real: torch.Tensor | None) -> None:
        self.real = real  # (B, S) bool: real (non-pad) prefill tokens
        # Layers appear in the dicts below only where the layer hook / ``edit`` ran; a layer
        # without an entry had no sink (it may have been replayed from a stock run).
        self.sinks: dict[int, torch.Tensor] = {}  # layer -> (B, S) bool, S_l
        self.cumulative = None if real is None else torch.zeros_like(real)  # (B, S) C_l
        self.relaxed = None if real is None else torch.zeros_like(real)  # (B, S) relaxed once
        self.sink_value: dict[int, torch.Tensor] = {}  # layer -> (B, H, d) vbar, zeros where no sink
        self.has_sink: dict[int, torch.Tensor] = {}  # layer -> (B,) bool
        # layer -> (B,) bool: S_l holds the row's first real token (what rotate_decode="official" reads)
        self.sink_at_first: dict[int, torch.Tensor] = {}
        # (B,) index of each row's first real token in the left-padded prefill
        self.first_real = None if real is None else real.long().argmax(dim=1)
        self.relaxed_at: dict[int, torch.Tensor] = {}  # relaxation layer -> (B, S) bool, relaxed there
        # layer -> (B,) bool rows whose decode steps are rotated, or None where every row is; only
        # layers where some row is (set when the prefill ends)
        self.decode_rows: dict[int, torch.Tensor | None] = {}
        # layer -> the sink direction decode steps rotate toward there (same layers as decode_rows)
        self.decode_direction: dict = {}
        self._cos_step: dict[int, torch.Tensor] = {}  # layer -> (3,) this prefill's cosine sums there
        self.prefill = real is not None

    def on_prefill(self, call) -> None:
        self._reset_prefill_state(call.real("OutRo"))

    def _on_decoder_output(self, module, args, output):
        """The prefill's end: keep, for decode, the layers where some row rotates (the one host
        sync of a prefill), so that a decode step never asks whether a layer has work to do."""
        if not self.prefill or not self.rotate_decode or self.alpha == 0 or not self.has_sink:
            return None
        rows = {}
        for layer, has_sink in self.has_sink.items():
            # "official": the new token (local index 0) counts as a sink wherever the prompt's
            # first token is one, and is not rotated there
            rows[layer] = has_sink & ~self.sink_at_first[layer] if self.rotate_decode == "official" else has_sink
        layers = list(rows)
        some, every = torch.stack([torch.stack([rows[layer].any(), rows[layer].all()]) for layer in layers]).T.tolist()
        # None where every row rotates: a decode step there needs no per-row choice
        self.decode_rows = {layer: None if all_rows else rows[layer]
                            for layer, any_row, all_rows in zip(layers, some, every) if any_row}
        # (B, 1, H, d) per layer: what every decode step reads of the sink value, computed once
        self.decode_direction = {layer: sink_direction(self.sink_value[layer][:, None]) for layer in self.decode_rows}
        return None

    def _layer_hook(self, index: int):
        def hook(module, args, kwargs):
            if not self.prefill or self.rule.needs_attention_probs:
                return None
            if index < self.scan_end:
                hidden = args[0] if args else kwargs["hidden_states"]  # (B, S, D) residual stream
                self.sinks[index] = self.rule.from_hidden_batch(hidden, self.real)
            else:
                self.sinks[index] = torch.zeros_like(self.real)
            return None

        return hook

    @property
    def prefix_signature(self) -> tuple:
        """What ``unchanged_prefix`` depends on besides its tensors: the sink rule and the scanned
        layers, not alpha or the relaxation layers (cells of a group that differ only in those
        detect a kept prefix's sinks once)."""
        return self.settings_signature(("rule",)), self.scan_end

    def _layers_with_sinks(self, hidden: Sequence[torch.Tensor], real: torch.Tensor, known: dict | None) -> list[bool]:
        """Whether some row has a sink in ``hidden[l]`` (B, S, D), for l < len(hidden) (none at the
        unscanned last layers). One host sync, once per sink rule and kept prefix (``known``)."""
        key = ("layers with sinks", self.prefix_signature, len(hidden))
        if known is not None and key in known:
            return known[key]
        depth = min(len(hidden), self.scan_end)
        fired = (torch.stack([self.rule.from_hidden_batch(hidden[layer], real).any() for layer in range(depth)]).tolist()
                 if depth > 0 else [])
        fired += [False] * (len(hidden) - len(fired))
        if known is not None:
            known[key] = fired
        return fired

    def layer_signatures(self, hidden: Sequence[torch.Tensor], real: torch.Tensor, known: dict | None = None) -> list:
        """Per layer l < len(hidden), given the residual stream ``hidden[l]`` (B, S, D) entering
        it and the (B, S) bool real tokens: None where no row has a sink (both edits leave the
        layer stock, in the prefill and in decode), else what the edits there depend on besides
        the sinks themselves (which the rule finds alike in equal streams): the rule, alpha, the
        temperature, ``rotate_decode`` and whether the layer relaxes. Cells of a group that differ
        only in relaxation layers without sinks thus compute alike. [] for a rule that reads
        attention probabilities (they exist only once a layer runs).

        The description is ``replay_signature`` (every setting but ``layer``: the rule, alpha,
        the temperature, ``rotate_decode``, and any setting added later) with whether the layer
        relaxes, which is what ``layer`` does there."""
        if self.rule.needs_attention_probs:
            return []
        fired = self._layers_with_sinks(hidden, real, known)
        acting = (self.replay_signature, self.scan_end)
        return [(*acting, layer in self.relax_layers) if fired[layer] else None for layer in range(len(hidden))]

    def unchanged_prefix(self, hidden: Sequence[torch.Tensor], real: torch.Tensor) -> int:
        """How many leading decoder layers this OutRo leaves exactly stock in a prefill: the
        first layer where some row has a sink (capped at len(hidden)); 0 for a rule that reads
        attention probabilities. One host sync."""
        signatures = self.layer_signatures(hidden, real)
        return next((layer for layer, acts in enumerate(signatures) if acts is not None), len(signatures))

    def export_layer_state(self, layer: int):
        """What ``edit`` left at ``layer`` in the prefill just run (None in decode, or where it did
        not run): the layer's (B,) has-sink and sink-at-first-token flags, its (B, H, d) sink value
        mean, its (B, S) relaxed tokens (None unless a relaxation layer) and its (3,) cosine sums
        (None at alpha 0). The layer's sinks themselves come from the layer hook, which a replayed
        layer still runs."""
        if not self.prefill or layer not in self.has_sink:
            return None
        return (self.has_sink[layer], self.sink_at_first[layer], self.sink_value[layer], self.relaxed_at.get(layer),
                self._cos_step.get(layer))

    def import_layer_state(self, layer: int, state) -> None:
        """Continue as if ``edit`` had run at ``layer`` with ``state`` (``export_layer_state`` of
        another cell's OutRo whose ``layer_signatures`` agree up to here)."""
        if not self.prefill or layer not in self.sinks:
            return
        has_sink, sink_at_first, sink_value, relaxed_at, cosines = state
        self.cumulative |= self.sinks[layer]
        self.has_sink[layer], self.sink_at_first[layer], self.sink_value[layer] = has_sink, sink_at_first, sink_value
        if layer in self.relax_layers and relaxed_at is not None:
            self.relaxed_at[layer] = relaxed_at
            self.relaxed |= relaxed_at
        if self.alpha != 0 and cosines is not None:
            self._cos_step[layer] = cosines
            self._cos[layer] = self._cos[layer] + cosines if layer in self._cos else cosines

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        """Decode steps rotate only at layers where the prefill found sinks, with the alpha,
        temperature and ``rotate_decode`` that ``layer_signatures`` names there, so they compute
        alike wherever the prefill did."""
        return prefill_depth

    # ---- the edit (called from the attention function) ---------------------------------
    def edit(self, module, out, weights, query, key, value, scaling):
        layer = module.layer_idx
        if not self.prefill:
            return self._edit_decode(layer, out)
        if self.rule.needs_attention_probs:
            self.sinks[layer] = self._sinks_from_attention(layer, weights)
        sinks = self.sinks[layer]  # (B, S)
        self.cumulative |= sinks
        has_sink = sinks.any(dim=1)  # (B,)
        self.has_sink[layer] = has_sink
        self.sink_at_first[layer] = sinks.gather(1, self.first_real[:, None])[:, 0]
        self.sink_value[layer] = self._sink_value_mean(sinks, value, out.shape[2])
        if layer in self.relax_layers:
            out = self._relax(layer, out, query, key, value, scaling)
        if self.alpha == 0:
            return out  # alpha = 0 is the identity: skip even the norm restore's rounding
        # Rows without a sink here have no targets, so the where keeps their stock output.
        targets = self.real & ~self.cumulative & has_sink[:, None]  # (B, S) tokens to rotate
        vbar = self.sink_value[layer][:, None]  # (B, 1, H, d)
        rotated = rotate_toward(out, vbar, self.alpha, self.temperature)
        self._record_cosines(layer, out, rotated, vbar, targets)
        return torch.where(targets[..., None, None], rotated, out)

    def _edit_decode(self, layer: int, out: torch.Tensor) -> torch.Tensor:
        if layer not in self.decode_rows:  # no row rotates here
            return out
        rotated = rotate_along(out, self.decode_direction[layer], self.alpha, self.temperature)
        rows = self.decode_rows[layer]  # (B,) bool, or None: every row rotates
        return rotated if rows is None else torch.where(rows[:, None, None, None], rotated, out)

    def _sinks_from_attention(self, layer: int, weights: torch.Tensor | None) -> torch.Tensor:
        if layer >= self.scan_end:
            return torch.zeros_like(self.real)
        if weights is None:
            raise RuntimeError("sink=attention_mass needs attention probabilities; the eager path returned none")
        return self.rule.from_attention_batch(weights, self.real)

    @staticmethod
    def _sink_value_mean(sinks: torch.Tensor, value: torch.Tensor, num_heads: int) -> torch.Tensor:
        """vbar per row and query head: (B, H, d) in edit_dtype; zeros for rows without sinks."""
        batch, kv_heads, _, dim = value.shape
        seq = sinks.shape[1]
        dtype = edit_dtype(value.dtype)
        weights = sinks.to(dtype) / sinks.sum(dim=1, keepdim=True).clamp(min=1)  # (B, S)
        per_kv = torch.einsum("bs,bgsd->bgd", weights, value[:, :, :seq].to(dtype))  # (B, H_kv, d)
        return per_kv.repeat_interleave(num_heads // kv_heads, dim=1)  # (B, H, d)

    def _relax(self, layer, out, query, key, value, scaling):
        todo = self.sinks[layer] & ~self.relaxed  # (B, S): sinks of this layer not yet relaxed
        self.relaxed_at[layer] = todo
        self.relaxed |= todo
        rows = unmasked_attention(query, key, value, self.real, scaling)  # (B, S, H, d), every query
        return torch.where(todo[..., None, None], rows.to(out.dtype), out)

    def _record_cosines(self, layer, before, after, vbar, targets):
        """Add this layer's cosine sums over the rotated (token, head) pairs, on the device."""
        dtype = edit_dtype(before.dtype)
        mask = targets[..., None].to(dtype)  # (B, S, 1)
        vbar = vbar.to(dtype)
        sums = torch.stack([
            (cosine(before.to(dtype), vbar) * mask).sum().double(),
            (cosine(after.to(dtype), vbar) * mask).sum().double(),
            targets.sum().double() * before.shape[2],
        ])  # (3,) float64
        self._cos_step[layer] = sums
        self._cos[layer] = self._cos[layer] + sums if layer in self._cos else sums

    # ---- diagnostics -------------------------------------------------------------------
    def take_sample_diagnostics(self) -> list[dict]:
        """Per batch row of the last prefill: sinks per layer, first sink layer, relaxations
        (every relaxation layer, an empty list where nothing was relaxed).

        Positions are counted from the row's first real token, so they do not depend on
        how much left padding the batch needed. The masks come to the host in one copy.
        """
        if self.real is None:
            return []
        sink_layers = sorted(self.sinks)
        relax_layers = sorted(self.relax_layers)
        nothing = torch.zeros_like(self.real)
        planes = [self.real] + [self.sinks[layer] for layer in sink_layers]
        planes += [self.relaxed_at.get(layer, nothing) for layer in relax_layers]
        host = torch.stack(planes).cpu()  # (1 + sink layers + relaxation layers, B, S) bool
        sinks, relaxed_masks = host[1 : 1 + len(sink_layers)], host[1 + len(sink_layers) :]
        ranks = host[0].long().cumsum(dim=1) - 1  # (B, S) index among real tokens
        samples = []
        for row in range(host.shape[1]):
            sink_positions = {
                str(layer): ranks[row, sinks[i, row]].tolist()
                for i, layer in enumerate(sink_layers)
                if sinks[i, row].any()
            }
            relaxed = {str(layer): ranks[row, relaxed_masks[i, row]].tolist() for i, layer in enumerate(relax_layers)}
            samples.append(
                {
                    "sink_positions": sink_positions,
                    "first_sink_layer": min((int(k) for k in sink_positions), default=None),
                    "relaxed": relaxed,
                    "relax_layers_without_sinks": sorted(
                        layer for layer in self.relax_layers if str(layer) not in sink_positions
                    ),
                }
            )
        return samples

    def running_sums(self) -> dict[str, float]:
        """The rotation-cosine sums since construction as flat additive keys:
        ``cos_before/<layer>``, ``cos_after/<layer>`` and ``n/<layer>`` ((token, head) pairs);
        layers that never rotated a token are left out. One copy to the host."""
        if not self._cos:
            return {}
        layers = sorted(self._cos)
        values = torch.stack([self._cos[layer] for layer in layers]).tolist()
        sums = {}
        for layer, (before, after, count) in zip(layers, values):
            if count:
                sums.update({f"cos_before/{layer}": before, f"cos_after/{layer}": after, f"n/{layer}": count})
        return sums

    def cell_diagnostics(self) -> dict:
        return rotation_cosines(self.running_sums())


class OutRoIntervention(Intervention):
    """OutRo as a plug-in: ``conf/outro/*.yaml`` (``outro=off`` is the stock model)."""

    sweep_axes = ("layer", "alpha")
    edits = frozenset({"attention_output"})
    needs_sink_rule = True

    def __init__(self, group: str = "outro", enabled: bool = True, alpha: Alpha = 3.0, temperature: Temperature = 0.1,
                 layer: LayerSpec = "auto", rotate_decode: RotateDecode = True) -> None:
        super().__init__(group, enabled)
        check_arguments(OutRoIntervention, locals(), group)
        if isinstance(layer, Sequence) and not isinstance(layer, str):  # a ListConfig from the YAML
            layer = list(layer)
        self.alpha, self.temperature, self.layer, self.rotate_decode = alpha, temperature, layer, rotate_decode

    @classmethod
    def identity_settings(cls, settings: dict, num_layers: int | None) -> dict:
        """``layer`` as the sorted list of layers it relaxes (``auto`` resolved for this model's
        depth, an int as a one-item list, null as [])."""
        layer = settings.get("layer", "auto")
        if num_layers is not None:
            layer = relaxation_layers(layer, num_layers)
        elif layer != "auto":  # no model to resolve auto against; ints and lists of ints still canonical
            values = [] if layer is None else layer if isinstance(layer, list) else [layer]
            if all(isinstance(v, int) for v in values):
                layer = sorted(set(values))
        return {**settings, "layer": layer}

    def check_model(self, num_layers: int) -> None:
        relaxation_layers(self.layer, num_layers)

    def layers_reading_sinks(self, num_layers: int) -> list[int]:
        return relaxation_layers(self.layer, num_layers)

    def attach(self, loaded, sink_rule: SinkRule) -> OutRo:
        return OutRo(loaded.model, sink_rule, alpha=self.alpha, temperature=self.temperature, layer=self.layer,
                     rotate_decode=self.rotate_decode)

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        return summarise_outro(samples, sums)


def rotation_cosines(sums: dict[str, float]) -> dict:
    """``{layer: {"cos_before", "cos_after", "n"}}`` (numeric layer order) from summed
    ``OutRo.running_sums()``; layers without rotated tokens are left out."""
    layers = sorted({int(key.split("/", 1)[1]) for key in sums}, key=int)
    out = {}
    for layer in layers:
        count = sums.get(f"n/{layer}", 0.0)
        if count:
            out[str(layer)] = {"cos_before": sums[f"cos_before/{layer}"] / count,
                               "cos_after": sums[f"cos_after/{layer}"] / count, "n": int(count)}
    return out


def summarise_outro(samples: list[dict | None], sums: dict[str, float]) -> dict:
    """Aggregate OutRo's per-sample sink diagnostics and its rotation cosines; {} when no
    sample recorded any."""
    infos = [s for s in samples if s is not None]
    if not infos:
        return {}
    per_layer = Counter()  # layer -> samples with a sink there
    positions = Counter()  # position -> (sample, layer) pairs where it was a sink
    relaxed = Counter()  # layer -> tokens relaxed there
    relax_without_sinks = Counter()  # layer -> samples where a relaxation layer found no sink
    first_layers = Counter()
    for info in infos:
        for layer, found in info["sink_positions"].items():
            per_layer[layer] += 1
            positions.update(found)
        for layer, found in info["relaxed"].items():
            relaxed[layer] += len(found)
        relax_without_sinks.update(str(layer) for layer in info["relax_layers_without_sinks"])
        first_layers[str(info["first_sink_layer"])] += 1
    n = len(infos)

    def by_layer(counter: Counter) -> dict:
        return {k: counter[k] for k in sorted(counter, key=int)}

    return {
        "samples": n,
        "samples_with_sinks": sum(1 for info in infos if info["first_sink_layer"] is not None),
        "first_sink_layer_counts": dict(sorted(first_layers.items())),
        "sink_rate_per_layer": {k: v / n for k, v in by_layer(per_layer).items()},
        "sink_position_counts": {str(k): v for k, v in sorted(positions.items())},
        "relaxed_tokens_per_layer": by_layer(relaxed),
        "relax_layers_without_sinks": by_layer(relax_without_sinks),
        "rotation_cosine_per_layer": rotation_cosines(sums),
    }
