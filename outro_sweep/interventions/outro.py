"""OutRo (arXiv 2603.14337): sink-aligned rotation of head outputs plus a one-time causal
mask relaxation for sinks, applied at inference time to a decoder's attention.

How it attaches (all through published seams, all undone on exit):
- a forward pre-hook on the text decoder reads the 2-D padding mask and tells prefill
  (empty KV cache) from decode;
- a forward pre-hook on every decoder layer reads the residual stream h^l (B, S, D) and
  detects that layer's sinks, row by row over real tokens only;
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
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from outro_sweep.config.schema import check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.attention_hook import ModelEdits, register_attention_functions
from outro_sweep.interventions.decoder import attention_module, find_decoder
from outro_sweep.interventions.base import Intervention
from outro_sweep.interventions.settings import (
    Alpha,
    LayerSpec,
    RotateDecode,
    Temperature,
    relaxation_layers,
)
from outro_sweep.interventions.rotation import cosine, edit_dtype, rotate_toward, unmasked_attention_rows
from outro_sweep.interventions.sinks.base import SinkRule

class OutRo:
    """Context manager that applies OutRo to ``model`` while inside ``with``.

    After each prefill, ``take_sample_diagnostics()`` returns one dict per batch row and
    ``cell_diagnostics()`` the per-layer mean cosine to the sink direction before and after
    rotation, accumulated over every prefill since construction.
    """

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
        self.model = model
        self.parts = find_decoder(model)
        self.num_layers = len(self.parts.layers)
        self.rule = rule
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.relax_layers = set(relaxation_layers(layer, self.num_layers))
        self.rotate_decode = rotate_decode
        # Sinks are searched at layers 0..L-3; the last two layers are never scanned.
        self.scan_end = self.num_layers - 2
        self._edits = ModelEdits(model, self.parts)
        # Cell-level cosine sums: layer -> [sum before, sum after, count of (token, head)].
        self._cos = defaultdict(lambda: [0.0, 0.0, 0])
        self._reset_prefill_state(None)

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "OutRo":
        register_attention_functions()
        current = self.parts.config._attn_implementation
        if self.rule.needs_attention_probs and current.startswith("outro_") and current != "outro_eager":
            raise ConfigError(f"sink={self.rule.name} needs eager attention but another intervention runs "
                              f"{current}: valid values are model.attn_implementation=eager")
        self._edits.route("OutRo", "eager" if self.rule.needs_attention_probs else None)
        try:
            self._edits.hook(self.parts.decoder.register_forward_pre_hook(self._on_decoder_input, with_kwargs=True))
            for index, layer in enumerate(self.parts.layers):
                self._edits.hook(layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True))
                self._edits.edit(attention_module(layer), self)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._edits.undo()

    # ---- per-forward state -------------------------------------------------------------
    def _reset_prefill_state(self, real: torch.Tensor | None) -> None:
        self.real = real  # (B, S) bool: real (non-pad) prefill tokens
        self.sinks: dict[int, torch.Tensor] = {}  # layer -> (B, S) bool, S_l
        self.cumulative = None if real is None else torch.zeros_like(real)  # (B, S) C_l
        self.relaxed = None if real is None else torch.zeros_like(real)  # (B, S) relaxed once
        self.sink_value: dict[int, torch.Tensor] = {}  # layer -> (B, H, d) vbar, zeros where no sink
        self.has_sink: dict[int, torch.Tensor] = {}  # layer -> (B,) bool
        # layer -> (B,) bool: S_l holds the row's first real token (what rotate_decode="official" reads)
        self.sink_at_first: dict[int, torch.Tensor] = {}
        # (B,) index of each row's first real token in the left-padded prefill
        self.first_real = None if real is None else real.long().argmax(dim=1)
        self.relaxed_at: dict[int, list[list[int]]] = {}  # layer -> per row, padded positions relaxed
        self.prefill = real is not None

    def _on_decoder_input(self, module, args, kwargs):
        tokens = kwargs.get("inputs_embeds")
        if tokens is None:
            tokens = kwargs.get("input_ids", args[0] if args else None)
        batch, length = tokens.shape[:2]
        cache = kwargs.get("past_key_values")
        if cache is not None and cache.get_seq_length() > 0:
            self.prefill = False
            return None
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            real = mask[:, -length:].bool()
        elif mask is None:
            real = torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
        else:
            raise RuntimeError("OutRo needs a 2-D padding mask (batch, seq) or none; got a prepared mask")
        self._reset_prefill_state(real)
        return None

    def _layer_hook(self, index: int):
        def hook(module, args, kwargs):
            if not self.prefill or self.rule.needs_attention_probs:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]  # (B, S, D) residual stream
            sinks = torch.zeros_like(self.real)
            if index < self.scan_end:
                for row in range(hidden.shape[0]):
                    sinks[row, self.real[row]] = self.rule.from_hidden(hidden[row, self.real[row]])
            self.sinks[index] = sinks
            return None

        return hook

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
        if self.alpha == 0 or not has_sink.any():
            return out  # alpha = 0 is the identity: skip even the norm restore's rounding
        targets = self.real & ~self.cumulative & has_sink[:, None]  # (B, S) tokens to rotate
        vbar = self.sink_value[layer][:, None]  # (B, 1, H, d)
        rotated = rotate_toward(out, vbar, self.alpha, self.temperature)
        self._record_cosines(layer, out, rotated, vbar, targets)
        return torch.where(targets[..., None, None], rotated, out)

    def _edit_decode(self, layer: int, out: torch.Tensor) -> torch.Tensor:
        if not self.rotate_decode or self.alpha == 0 or layer not in self.has_sink:
            return out
        rows = self.has_sink[layer]  # (B,) rows whose prompt had sinks at this layer
        if self.rotate_decode == "official":
            # The released code takes the new token (local index 0) for a sink wherever the
            # prompt's position 0 is one, and skips it there.
            rows = rows & ~self.sink_at_first[layer]
        if not rows.any():
            return out
        rotated = rotate_toward(out, self.sink_value[layer][:, None], self.alpha, self.temperature)
        return torch.where(rows[:, None, None, None], rotated, out)

    def _sinks_from_attention(self, layer: int, weights: torch.Tensor | None) -> torch.Tensor:
        sinks = torch.zeros_like(self.real)
        if layer >= self.scan_end:
            return sinks
        if weights is None:
            raise RuntimeError("sink=attention_mass needs attention probabilities; the eager path returned none")
        for row in range(weights.shape[0]):
            real = self.real[row]
            probs = weights[row][:, real][:, :, real]  # (H, n, n)
            sinks[row, real] = self.rule.from_attention(probs)
        return sinks

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
        sinks = self.sinks[layer]
        todo = sinks & ~self.relaxed  # (B, S): sinks of this layer not yet relaxed
        per_row: list[list[int]] = []
        out = out.clone()
        for row in range(out.shape[0]):
            positions = todo[row].nonzero().flatten()
            per_row.append(positions.tolist())
            if positions.numel() == 0:
                continue
            rows = unmasked_attention_rows(
                query[row][:, positions], key[row], value[row], self.real[row], scaling
            )  # (m, H, d)
            out[row, positions] = rows.to(out.dtype)
            self.relaxed[row, positions] = True
        self.relaxed_at[layer] = per_row
        return out

    def _record_cosines(self, layer, before, after, vbar, targets):
        count = int(targets.sum()) * before.shape[2]
        if count == 0:
            return
        dtype = edit_dtype(before.dtype)
        mask = targets[..., None].to(dtype)  # (B, S, 1)
        vbar = vbar.to(dtype)
        sums = self._cos[layer]
        sums[0] += float((cosine(before.to(dtype), vbar) * mask).sum())
        sums[1] += float((cosine(after.to(dtype), vbar) * mask).sum())
        sums[2] += count

    # ---- diagnostics -------------------------------------------------------------------
    def take_sample_diagnostics(self) -> list[dict]:
        """Per batch row of the last prefill: sinks per layer, first sink layer, relaxations.

        Positions are counted from the row's first real token, so they do not depend on
        how much left padding the batch needed.
        """
        if self.real is None:
            return []
        ranks = self.real.long().cumsum(dim=1) - 1  # (B, S) index among real tokens
        samples = []
        for row in range(self.real.shape[0]):
            sink_positions = {}
            for layer in sorted(self.sinks):
                found = self.sinks[layer][row].nonzero().flatten()
                if found.numel():
                    sink_positions[str(layer)] = ranks[row, found].tolist()
            relaxed = {
                str(layer): [int(ranks[row, p]) for p in per_row[row]]
                for layer, per_row in sorted(self.relaxed_at.items())
            }
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
        ``cos_before/<layer>``, ``cos_after/<layer>`` and ``n/<layer>`` ((token, head) pairs)."""
        sums = {}
        for layer, (before, after, count) in sorted(self._cos.items()):
            sums.update({f"cos_before/{layer}": before, f"cos_after/{layer}": after, f"n/{layer}": float(count)})
        return sums

    def cell_diagnostics(self) -> dict:
        return {
            str(layer): {"cos_before": s[0] / s[2], "cos_after": s[1] / s[2], "n": s[2]}
            for layer, s in sorted(self._cos.items())
        }


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
