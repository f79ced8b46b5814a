"""SinkRouter (arXiv 2604.16883; spec §6): at decode time, skip the KV groups whose attention
would only land on the sink.

Prefill is the stock model (nothing is edited, nothing is evicted). At each decode step, at each
layer >= ``first_layer`` (the spec: layers 0-1 never skip) and for each batch row and KV group,
the cosine between each of the group's query heads and the key of the row's first real token
(after RoPE, as cached; its absolute position is the number of left pads) is taken; the group's
per-head cosines are aggregated (``aggregate``: mean, the natural reading of the spec, or max);
where the aggregate is >= the threshold, the group's heads output zero for that step and the
kernel never receives that group's keys or values.

Only the kept (row, group) pairs reach the kernel: one kernel call per KV group that some row
keeps, with that group's query heads, keys and values. Where every row keeps the group, its keys
and values are views of the cache (no copy); where only some rows keep it, only those rows are
gathered. One call per group, not one gathered call for every kept pair: a gather copies every
kept group's cache (a read and a write as large as the attention's own read), which would cost
more than the skip saves at batch 1, the long-context case. Where nothing is skipped the stock
kernel runs on the untouched inputs, so a threshold above 1 is the stock model bit for bit.
Deciding needs the decisions on the host (one device sync per layer and step): the kernel's
shapes depend on them.

The threshold (``mode``):
- ``constant``: ``threshold``, the same at every context length (> 1 skips nothing; <= -1
  skips every group of the layers >= ``first_layer``).
- ``target_skip``: a cubic in context length refitted on each prefill, per row. At every real
  prompt position t after the first real token, the prefill's own query at t gives one
  aggregated cosine per (layer >= first_layer, KV group), exactly as a decode step at context
  length n_t = t - first + 1 would; the (1 - target_skip) quantile of those values is the
  threshold that skips a share ``target_skip`` of them at n_t. The cubic c0 + c1 x + c2 x^2 +
  c3 x^3 in x = n / N (N the row's prompt length) is the least-squares fit to those quantiles
  (lower degree when the prompt has fewer than 4 such positions; a prompt of one token gives no
  data and skips nothing). A decode step at context length n uses the cubic at min(n, N) / N:
  past the prompt the fit is held at its last calibrated value rather than extrapolated.
  The paper's own coefficients are not published (spec: OPEN); this is one calibration that
  holds the target on the prompt itself.

Diagnostics: per row of the last prefill, the skip rate over its decode steps (skipped over
considered (step, layer >= first_layer, group) triples), the same per layer (0 for layers below
``first_layer``, which never skip) and the number of decode steps; per cell, the same pooled
from ``running_sums`` (``skipped_l<i>``, ``considered_l<i>``), so that it adds up over batches,
processes and resumed attempts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch

from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.base import Editor, Intervention
from outro_sweep.interventions.decoder import attention_module
from outro_sweep.interventions.rotation import cosine, edit_dtype

Threshold = Annotated[float, Range(finite=True)]
TargetSkip = Annotated[float, Range(ge=0, lt=1)]
FirstLayer = Annotated[int, Range(ge=0)]
Mode = Literal["constant", "target_skip"]
Aggregate = Literal["mean", "max"]


def group_cosines(query: torch.Tensor, key: torch.Tensor, first: torch.Tensor, aggregate: Aggregate) -> torch.Tensor:
    """Per row, KV group and query position, the aggregated cosine to the row's sink key.

    query (B, H, S_q, d); key (B, H_kv, S_kv, d) as the kernel gets it; first (B,) the absolute
    position of each row's first real token. Returns (B, H_kv, S_q) in max(float32, dtype),
    each per-head cosine clamped to [-1, 1] (so a threshold above 1 can never pass).
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    dtype = edit_dtype(query.dtype)
    sink = key[torch.arange(batch, device=key.device), :, first.to(key.device)]  # (B, H_kv, d)
    per_head = cosine(query.to(dtype).view(batch, kv_heads, heads // kv_heads, length, dim),
                      sink.to(dtype)[:, :, None, None, :]).clamp(-1.0, 1.0)  # (B, H_kv, n_rep, S_q)
    return per_head.mean(dim=2) if aggregate == "mean" else per_head.amax(dim=2)


def fit_cubic(cosines: torch.Tensor, first: int, target_skip: float) -> torch.Tensor:
    """The cubic threshold of one row (target_skip mode), as coefficients (c0, c1, c2, c3) in
    float64 of x = n / N (zeros beyond the fitted degree).

    cosines (C, S): the row's aggregated prefill cosines, one row per (layer >= first_layer,
    KV group), one column per padded prompt position; first: its first real position.
    A row with no position after its first gives +inf (nothing is ever skipped).
    """
    values = cosines[:, first + 1:].double()  # (C, n) the positions that have a sink before them
    count = values.shape[1]
    coefficients = torch.zeros(4, dtype=torch.float64)
    if count == 0:
        coefficients[0] = float("inf")
        return coefficients
    quantiles = torch.quantile(values, 1.0 - target_skip, dim=0)  # (n,) threshold per context length
    prompt = count + 1  # N: real prompt tokens
    x = torch.arange(2, prompt + 1, dtype=torch.float64) / prompt  # context length n_t / N
    degree = min(3, count - 1)
    basis = torch.stack([x ** p for p in range(degree + 1)], dim=1)  # (n, degree + 1)
    coefficients[:degree + 1] = torch.linalg.lstsq(basis, quantiles[:, None]).solution[:, 0]
    return coefficients


def cubic_at(coefficients: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """coefficients (B, 4), x (B, ...) -> (B, ...) c0 + c1 x + c2 x^2 + c3 x^3."""
    powers = torch.stack([x ** p for p in range(4)], dim=-1)  # (B, ..., 4)
    return (coefficients.reshape(coefficients.shape[0], *[1] * (x.dim() - 1), 4) * powers).sum(dim=-1)


class SinkRouting(Editor):
    """Context manager that skips sink-bound KV groups at decode steps while inside ``with``;
    outside it the model is the stock model.

    After a decode step, ``last_cosines[layer]`` (B, H_kv) holds that step's aggregated cosines
    and ``last_skips[layer]`` (B, H_kv) its decisions, for the layers >= ``first_layer``.
    """

    replaces_kernel = True  # only the kept KV groups reach the kernel

    def __init__(self, model: torch.nn.Module, threshold: float = 0.5, mode: Mode = "constant",
                 target_skip: float = 0.6, first_layer: int = 2, aggregate: Aggregate = "mean") -> None:
        super().__init__(model)
        self.threshold = float(threshold)
        self.mode = mode
        self.target_skip = float(target_skip)
        self.first_layer = first_layer
        self.aggregate = aggregate
        # Since attach, per layer: skipped and considered (step, row, group) triples (int64, on the model's device).
        self.total_skipped: torch.Tensor | None = None
        self.total_considered: torch.Tensor | None = None
        self._reset_prefill(None, None)

    def _reset_prefill(self, first: torch.Tensor | None, device: torch.device | None) -> None:
        self.first = first  # (B,) absolute position of each row's first real token
        self.decode = False
        self.steps = 0  # decode steps since the prefill
        batch = 0 if first is None else first.shape[0]
        self.row_skipped = torch.zeros(batch, self.num_layers, dtype=torch.long, device=device)  # (B, L)
        self.row_considered = torch.zeros_like(self.row_skipped)  # (B, L)
        self.calibration: dict[int, torch.Tensor] = {}  # layer -> (B, H_kv, S) prefill cosines (target_skip)
        self.cubic: torch.Tensor | None = None  # (B, 4) target_skip coefficients of the last prefill
        self.cubic_prompt: torch.Tensor | None = None  # (B,) float64 N, the real prompt tokens per row
        self.step_threshold: float | torch.Tensor = self.threshold  # a float, or (B, T) per row and new token
        self.step_real: torch.Tensor | None = None  # (B, T) bool: the decode forward's real new tokens
        self.last_cosines: dict[int, torch.Tensor] = {}
        self.last_skips: dict[int, torch.Tensor] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self, edits) -> None:
        edits.route("sinkrouter")
        for layer in self.parts.layers[self.first_layer:]:
            edits.edit(attention_module(layer), self)

    def unchanged_prefix(self, hidden: list, real: torch.Tensor) -> int:
        """Prefill stays stock at every layer; target_skip reads the prefill's queries from
        ``first_layer`` on, so those layers must run (outro_sweep.group.prefix)."""
        return min(len(hidden), self.first_layer) if self.mode == "target_skip" else len(hidden)

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        """Decode steps are routed from ``first_layer`` on; the layers below it stay stock."""
        return min(prefill_depth, self.first_layer)

    # ---- per forward -----------------------------------------------------------------------
    def on_prefill(self, call) -> None:
        # the first real token of each row is read off the 2-D padding mask
        first = call.real("sinkrouter").long().argmax(dim=1)
        self._reset_prefill(first, call.tokens.device)
        if self.total_skipped is None:
            self.total_skipped = torch.zeros(self.num_layers, dtype=torch.long, device=call.tokens.device)
            self.total_considered = torch.zeros_like(self.total_skipped)

    def on_decode(self, call) -> None:
        # A decode forward may bring several new tokens (cloze scoring feeds an option's tokens at
        # once): each is one decode step at its own position, decided on its own.
        length = call.length
        self.decode = True
        self.steps += length
        self.step_real = call.real()  # (B, T)
        if self.mode == "target_skip":
            if self.cubic is None:
                self.cubic = self._fit()
            prompt = self.cubic_prompt[:, None]  # (B, 1) N per row
            # (B, T) n: the real tokens a step sees, itself included
            context = (call.past + 1 + torch.arange(length)[None, :] - self.first.cpu()[:, None]).double()
            self.step_threshold = cubic_at(self.cubic, torch.minimum(context, prompt) / prompt).to(call.tokens.device)

    def _fit(self) -> torch.Tensor:
        """(B, 4) cubic coefficients from the last prefill's cosines (see the module docstring)."""
        stacked = torch.cat([self.calibration[layer] for layer in sorted(self.calibration)], dim=1).cpu()  # (B, C, S)
        first = self.first.cpu()
        self.cubic_prompt = (stacked.shape[2] - first).double()  # (B,) N
        self.calibration = {}
        return torch.stack([fit_cubic(stacked[row], int(first[row]), self.target_skip)
                            for row in range(stacked.shape[0])])

    # ---- the kernel call (attention_hook's seam) -----------------------------------------
    def run_kernel(self, module, kernel, query, key, value, attention_mask, **kwargs):
        layer = module.layer_idx
        if not self.decode:
            if self.mode == "target_skip":  # calibrate on the prefill's own queries; prefill stays stock
                self.calibration[layer] = group_cosines(query, key, self.first, self.aggregate)
            return kernel(module, query, key, value, attention_mask, **kwargs)
        cosines = group_cosines(query, key, self.first, self.aggregate)  # (B, H_kv, S_q)
        threshold = self.step_threshold
        # (B, H_kv, S_q); a padding query (an option shorter than the batch's longest) is never
        # decided on: its output is not read
        skip = cosines >= (threshold[:, None] if isinstance(threshold, torch.Tensor) else threshold)
        skip &= self.step_real[:, None]
        self.last_cosines[layer], self.last_skips[layer] = cosines[..., -1], skip[..., -1]  # (B, H_kv)
        skipped = skip.sum(dim=(1, 2))  # (B,)
        considered = self.step_real.sum(dim=1) * skip.shape[1]  # (B,)
        self.row_skipped[:, layer] += skipped
        self.row_considered[:, layer] += considered
        self.total_skipped[layer] += skipped.sum()
        self.total_considered[layer] += considered.sum()
        if query.shape[2] == 1:
            keep = ~skip[..., 0].cpu()  # the host needs the decisions: they set the kernel's shapes
            if bool(keep.all()):
                return kernel(module, query, key, value, attention_mask, **kwargs)
            return self._kept_only(module, kernel, query, key, value, attention_mask, keep, kwargs)
        return self._zero_skipped(module, kernel, query, key, value, attention_mask, skip, kwargs)

    @staticmethod
    def _zero_skipped(module, kernel, query, key, value, attention_mask, skip, kwargs):
        """Several decode steps in one forward: every group's attention, then zeros where a step
        skips a group. The same numbers as skipping the group step by step (a skipped group's
        heads output zero either way); nothing is saved, since the steps' decisions differ.
        skip (B, H_kv, S_q) bool."""
        out, weights = kernel(module, query, key, value, attention_mask, **kwargs)  # (B, S_q, H, d)
        per_head = skip.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # (B, H, S_q)
        out = out.masked_fill(per_head.transpose(1, 2)[..., None], 0.0)
        if weights is not None:  # (B, H, S_q, S_kv)
            weights = weights.masked_fill(per_head[..., None], 0.0)
        return out, weights

    @staticmethod
    def _kept_only(module, kernel, query, key, value, attention_mask, keep, kwargs):
        """One kernel call per KV group that some row keeps; zeros for the skipped (row, group).

        keep (B, H_kv) bool on the host. The kernel sees H = n_rep query heads over one KV head,
        the same grouping ratio as the module's, so its ``num_key_value_groups`` still holds.
        """
        batch, heads, length, _ = query.shape
        kv_heads = key.shape[1]
        n_rep = heads // kv_heads
        out = query.new_zeros(batch, length, heads, value.shape[-1])  # (B, S_q, H, d) as the kernel returns
        weights_out = None
        for group in range(kv_heads):
            rows = keep[:, group].nonzero().flatten()
            if rows.numel() == 0:
                continue
            heads_of = slice(group * n_rep, (group + 1) * n_rep)
            if rows.numel() == batch:  # views of the cache: nothing copied
                q, k, v, m = query[:, heads_of], key[:, group:group + 1], value[:, group:group + 1], attention_mask
            else:  # only the kept rows of this group are gathered
                index = rows.to(query.device)
                q, k, v = query[index, heads_of], key[index, group:group + 1], value[index, group:group + 1]
                m = attention_mask
                if attention_mask is not None and attention_mask.shape[0] == batch:
                    m = attention_mask[index]
            part, weights = kernel(module, q, k, v, m, **kwargs)  # (b, S_q, n_rep, d), (b, n_rep, S_q, S_kv)
            index = rows.to(query.device)
            out[index, :, heads_of] = part
            if weights is not None:
                if weights_out is None:
                    weights_out = weights.new_zeros(batch, heads, *weights.shape[2:])
                weights_out[index, heads_of] = weights
        return out, weights_out

    # ---- diagnostics ---------------------------------------------------------------------
    def take_sample_diagnostics(self) -> list[dict]:
        """Per batch row of the last prefill: its skip rate over its decode steps, per layer too."""
        if self.first is None:
            return []
        skipped, considered = self.row_skipped.cpu().double(), self.row_considered.cpu().double()
        rows = []
        for row in range(skipped.shape[0]):
            total = float(considered[row].sum())
            rows.append({
                "skip_rate": float(skipped[row].sum()) / total if total else 0.0,
                "skip_rate_per_layer": [float(s / c) if c else 0.0 for s, c in zip(skipped[row], considered[row])],
                "decode_steps": self.steps,
            })
            if self.cubic is not None:
                rows[-1]["cubic"] = self.cubic[row].tolist()
        self._reset_prefill(None, None)
        return rows

    def running_sums(self) -> dict[str, float]:
        """Skipped and considered (step, row, group) triples per layer since attach (layers below
        ``first_layer`` are never considered: 0)."""
        if self.total_skipped is None:
            return {}
        skipped, considered = self.total_skipped.tolist(), self.total_considered.tolist()
        sums = {}
        for layer in range(self.num_layers):
            sums[f"skipped_l{layer}"] = float(skipped[layer])
            sums[f"considered_l{layer}"] = float(considered[layer])
        return sums


def summarise_skips(samples: list[dict | None], sums: dict[str, float]) -> dict:
    """The cell's skip rate pooled over every decode step ({} where nothing was recorded), per
    layer too (up to the last layer counted, which is the model's last: it always may skip), with
    the number of samples and their mean decode steps."""
    infos = [s for s in samples if s is not None]
    layers = sorted(int(key[len("considered_l"):]) for key in sums if key.startswith("considered_l"))
    if not infos and not layers:
        return {}
    considered = sum(sums[f"considered_l{layer}"] for layer in layers)
    skipped = sum(sums.get(f"skipped_l{layer}", 0.0) for layer in layers)
    per_layer = [0.0] * (max(layers) + 1 if layers else 0)
    for layer in layers:
        if sums[f"considered_l{layer}"]:
            per_layer[layer] = sums.get(f"skipped_l{layer}", 0.0) / sums[f"considered_l{layer}"]
    return {
        "samples": len(infos),
        "mean_decode_steps": sum(info["decode_steps"] for info in infos) / len(infos) if infos else 0.0,
        "skip_rate": skipped / considered if considered else 0.0,
        "skip_rate_per_layer": per_layer,
    }


class SinkRouter(Intervention):
    """SinkRouter as a plug-in: ``conf/sinkrouter/*.yaml`` (``sinkrouter=off`` is the stock model)."""

    # The report's axis: ``threshold`` (mode=constant); with mode=target_skip the swept key is
    # ``target_skip`` and the threshold does not define the cell (``identity_settings``).
    sweep_axes = ("threshold",)
    edits = frozenset({"decode_kv_reads"})
    needs_sink_rule = False  # the sink is each row's first real token, not a rule's positions

    def __init__(self, group: str = "sinkrouter", enabled: bool = True, mode: Mode = "constant",
                 threshold: Threshold = 0.5, target_skip: TargetSkip = 0.6, first_layer: FirstLayer = 2,
                 aggregate: Aggregate = "mean") -> None:
        super().__init__(group, enabled)
        check_arguments(SinkRouter, locals(), group)
        self.mode, self.threshold, self.target_skip = mode, float(threshold), float(target_skip)
        self.first_layer, self.aggregate = first_layer, aggregate

    @classmethod
    def identity_settings(cls, settings: dict, num_layers: int | None) -> dict:
        """Without the knob the mode does not read: ``target_skip`` in constant mode,
        ``threshold`` in target_skip mode."""
        unused = "threshold" if settings.get("mode", "constant") == "target_skip" else "target_skip"
        return {key: value for key, value in settings.items() if key != unused}

    def check_model(self, num_layers: int) -> None:
        if self.first_layer >= num_layers:
            raise ConfigError(f"{self.group}.first_layer={self.first_layer} is out of range: valid values are "
                              f"integers 0..{num_layers - 1} (layers from it on may skip)")

    def check_benchmark(self, benchmark: Any) -> None:
        """A logits-scored cell has no decode step: SinkRouter would change nothing and the cell
        would look like a result."""
        if getattr(benchmark, "scoring", "generate") == "logits":
            raise ConfigError(f"{self.group} acts at decode steps only and benchmark.scoring=logits has none: "
                              "valid values are benchmark.scoring=generate")

    def attach(self, loaded: Any, sink_rule: Any) -> SinkRouting:
        """``loaded``: the LoadedModel (or a bare model); ``sink_rule`` is not read."""
        model = loaded if isinstance(loaded, torch.nn.Module) else loaded.model
        return SinkRouting(model, threshold=self.threshold, mode=self.mode, target_skip=self.target_skip,
                           first_layer=self.first_layer, aggregate=self.aggregate)

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        return summarise_skips(samples, sums)
