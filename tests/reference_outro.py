"""An independent, deliberately slow reference for OutRo (spec: shared/spec/outro.md §1-4).

Written from the spec's equations, not from ``outro_sweep``: nothing here imports the
package. It re-runs a stock Llama-family decoder (LlamaForCausalLM, Qwen2ForCausalLM) on
ONE unpadded sequence using only the model's own submodules (embedding, norms, q/k/v/o
projections, MLP, rotary embedding, lm_head) and transformers' ``apply_rotary_pos_emb``.
Everything OutRo touches is spelled out in Python loops:

- causal attention per head and per query token (softmax over keys j <= i);
- sink detection per layer (layers 0 .. L-3 only) with the four rules of §1;
- the one-time causal-mask relaxation per sink (softmax over every prompt key), §3;
- the gated, norm-preserving rotation per (token, head), §2, toward vbar = mean of the
  layer's value vectors over S_l per KV head (query head h reads KV head h // (H / H_kv)),
  for every token not in the cumulative union C_l, at every layer with S_l non-empty.

Decisions mirrored from the implementation (all spec-conformant): the median is the lower
median over all tokens x dims; the edit math runs in max(float32, model dtype), so a float64
model is edited in float64 (``edit_dtype``); alpha == 0 skips the rotation
entirely; the relaxation uses the module's scaling (head_dim ** -0.5); a sink relaxed at an
earlier relaxation layer is not relaxed again.

``reference_outro_embeds`` runs the same loop from a text decoder's input embeddings and
position ids instead of token ids: the entry point for the text tower of a video-language
model (Qwen2-VL style mrope position ids are (3, n); the decoder's own rotary module turns
them into cos/sin, which is not part of what OutRo edits). Qwen3-style per-head q/k norms are
applied when the attention module has them, and ``after_layer`` lets a caller re-add what the
model itself adds to the residual stream between layers (Qwen3-VL's deepstack features).

Decoding (optional, teacher-forced ``continuation`` tokens) keeps an explicit per-layer KV
cache built from the (edited) prefill: a decode token is never a sink (absolute positions),
the cache is never edited, and its head outputs are rotated toward the prefill's vbar of a
layer with sinks according to ``rotate_decode``: True at every such layer, False never,
"official" (the released code, spec §4) only where that layer's prompt sinks S_l do not
include position 0, because the released code compares the new token's local index 0 with
the prompt's sink positions and so takes it for a sink wherever position 0 is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

PROJECTION_EPS = 1e-8  # |v|^2 + 1e-8 in the projection (spec §2)
NORM_EPS = 1e-8  # |o'| + 1e-8 in the norm restore (spec §2)


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows (each (n,) long) -> (input_ids, attention_mask), both (B, max n), padded on the
    left with 0 as the models' own batches are."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


def edit_dtype(dtype: torch.dtype) -> torch.dtype:
    """The edits (relaxation rows, vbar, rotation) run in max(float32, model dtype) (spec §4)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reference_relax_layers(spec, num_layers: int) -> list[int]:
    """Spec §3: ``auto`` = every multiple of k = max(1, floor(L / 7)) below L - 2."""
    if spec is None:
        return []
    if spec == "auto":
        k = max(1, num_layers // 7)
        out = []
        layer = 0
        while layer < num_layers - 2:
            out.append(layer)
            layer += k
        return out
    if isinstance(spec, int):
        return [spec]
    return sorted(set(spec))


# ---- sink rules (spec §1), one sequence, plain loops ------------------------------------


def _lower_median(values: torch.Tensor) -> float:
    """The lower median: element (N - 1) // 2 of the N values in ascending order."""
    flat = values.flatten().sort().values
    return float(flat[(flat.numel() - 1) // 2])


def sinks_massive_activation(h: torch.Tensor, abs_threshold: float, median_ratio: float) -> list[int]:
    """h: (n, D). thr = max(abs_thr, ratio * median |h|); sink if max_d |h[t, d]| >= thr."""
    a = h.float().abs()
    thr = max(abs_threshold, median_ratio * _lower_median(a))
    return [t for t in range(a.shape[0]) if float(a[t].max()) >= thr]


def sinks_first_k(n: int, k: int) -> list[int]:
    return list(range(min(k, n)))


def sinks_sink_dims(h: torch.Tensor, dims: list[int], tau: float) -> list[int]:
    """x = h_t / RMS(h_t) (no gain); sink if max over dims of |x[d]| > tau."""
    out = []
    for t in range(h.shape[0]):
        row = h[t].float()
        rms = math.sqrt(float((row * row).sum()) / row.shape[0])
        if max(abs(float(row[d])) / rms for d in dims) > tau:
            out.append(t)
    return out


def sinks_attention_mass(probs: torch.Tensor, eps: float) -> list[int]:
    """probs (H, n, n) query x key; mass[t] = mean over heads and queries i > t of P[h, i, t]."""
    heads, n, _ = probs.shape
    out = []
    for t in range(n):
        total, count = 0.0, 0
        for h in range(heads):
            for i in range(t + 1, n):
                total += float(probs[h, i, t])
                count += 1
        if count > 0 and total / count > eps:
            out.append(t)
    return out


# ---- the rotation (spec §2), one (token, head) --------------------------------------------


def rotate_one(o: torch.Tensor, v: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """o, v: (d,). c = cos(o, v); g = tanh(relu(c)/T); p = |o.v|/(|v|^2+1e-8) v;
    o' = o + alpha g p; o'' = o' |o| / (|o'| + 1e-8). Computed in edit_dtype(o.dtype)."""
    dtype = edit_dtype(o.dtype)
    o = o.to(dtype)
    v = v.to(dtype)
    dot = (o * v).sum()
    norm_o = o.norm()
    norm_v = v.norm()
    if float(norm_o) > 0 and float(norm_v) > 0:
        c = dot / (norm_o * norm_v)
    else:
        c = torch.zeros((), dtype=dtype)
    g = torch.tanh(torch.relu(c) / temperature)
    p = dot.abs() / ((v * v).sum() + PROJECTION_EPS) * v
    shifted = o + alpha * g * p
    return shifted * norm_o / (shifted.norm() + NORM_EPS)


# ---- the forward -------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    logits: torch.Tensor | None  # (n, V) prompt logits
    sinks: dict[int, list[int]]  # layer -> S_l (only layers with sinks)
    relaxed: dict[int, list[int]]  # relaxation layer -> positions relaxed there (may be empty)
    hidden: list[torch.Tensor]  # (n, D) residual stream entering each layer
    decode_logits: list[torch.Tensor] = field(default_factory=list)  # one (V,) per continuation token
    # Prefill state the decode steps need: per-layer (keys, values) and vbar per layer with sinks.
    cache: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)
    vbars: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    final_hidden: torch.Tensor | None = field(default=None, repr=False)  # (n, D) after the final norm

    def sink_positions(self) -> dict[str, list[int]]:
        """In the implementation's diagnostics format."""
        return {str(layer): list(pos) for layer, pos in sorted(self.sinks.items())}

    def relaxed_positions(self) -> dict[str, list[int]]:
        return {str(layer): list(pos) for layer, pos in sorted(self.relaxed.items())}


def _heads(x: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """(1, n, H*d) -> (1, H, n, d)."""
    return x.view(1, x.shape[1], num_heads, head_dim).transpose(1, 2)


def _detect(rule: dict, h: torch.Tensor, probs: torch.Tensor | None) -> list[int]:
    name = rule["name"]
    if name == "massive_activation":
        return sinks_massive_activation(h, rule.get("abs_threshold", 100.0), rule.get("median_ratio", 1000.0))
    if name == "first_k":
        return sinks_first_k(h.shape[0], rule.get("k", 1))
    if name == "sink_dims":
        return sinks_sink_dims(h, rule["dims"], rule.get("tau", 20.0))
    if name == "attention_mass":
        return sinks_attention_mass(probs, rule.get("eps", 0.3))
    raise ValueError(f"unknown rule {name}")


@torch.no_grad()
def reference_outro(
    model,
    input_ids,
    rule: dict,
    alpha: float = 3.0,
    temperature: float = 0.1,
    relax_layers=(),
    continuation=(),
    rotate_decode: bool = True,
) -> ReferenceResult:
    """OutRo on one unpadded sequence, from the spec. ``rule`` is a dict such as
    {"name": "massive_activation", "abs_threshold": 100, "median_ratio": 1000},
    {"name": "first_k", "k": 1}, {"name": "sink_dims", "dims": [...], "tau": 20} or
    {"name": "attention_mass", "eps": 0.3}. ``relax_layers`` is an explicit list.
    ``continuation`` tokens are then decoded one at a time (see ``reference_decode``)."""
    inner = model.model
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    n = ids.shape[1]
    x = inner.embed_tokens(ids)  # (1, n, D)
    result = _prefill(inner, x, torch.arange(n).unsqueeze(0), rule, alpha, temperature, relax_layers, None)
    result.logits = model.lm_head(result.final_hidden[None])[0]
    if continuation:
        result.decode_logits = reference_decode(model, result, continuation, alpha, temperature, rotate_decode)
    return result


@torch.no_grad()
def reference_outro_embeds(
    decoder,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    rule: dict,
    alpha: float = 3.0,
    temperature: float = 0.1,
    relax_layers=(),
    after_layer=None,
) -> ReferenceResult:
    """OutRo on one unpadded sequence given as the text decoder's input embeddings.

    decoder: the text decoder (``layers``, ``rotary_emb``, ``norm``, ``config``);
    inputs_embeds: (n, D); position_ids: what the decoder's rotary module takes for batch 1,
    (1, n) for plain RoPE or (3, 1, n) for mrope; after_layer(layer_idx, x (1, n, D)) -> x, if
    given, runs after each layer. ``final_hidden`` is the normed output (n, D); ``logits`` is
    left for the caller (apply the model's head to ``final_hidden``).
    """
    x = inputs_embeds.reshape(1, *inputs_embeds.shape[-2:])
    return _prefill(decoder, x, position_ids, rule, alpha, temperature, relax_layers, after_layer)


def _prefill(inner, x, position_ids, rule, alpha, temperature, relax_layers, after_layer) -> ReferenceResult:
    config = inner.config
    num_layers = len(inner.layers)
    num_heads = config.num_attention_heads
    num_kv = config.num_key_value_heads
    groups = num_heads // num_kv
    relax = set(relax_layers)
    want_probs = rule["name"] == "attention_mass"

    n = x.shape[1]
    cos, sin = inner.rotary_emb(x, position_ids=position_ids)
    edit = edit_dtype(x.dtype)

    sinks: dict[int, list[int]] = {}
    relaxed: dict[int, list[int]] = {}
    cumulative: set[int] = set()  # C_l
    already_relaxed: set[int] = set()
    vbars: dict[int, torch.Tensor] = {}  # layer -> (H, d) sink value mean per query head
    cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (H_kv, n, d) keys, values
    hidden_trace: list[torch.Tensor] = []

    for layer_idx, layer in enumerate(inner.layers):
        attn = layer.self_attn
        head_dim = attn.head_dim
        scaling = attn.scaling  # head_dim ** -0.5

        hidden = x[0]  # (n, D): residual stream entering the layer, before its input norm
        hidden_trace.append(hidden)
        normed = layer.input_layernorm(x)
        q = _heads(attn.q_proj(normed), num_heads, head_dim)
        k = _heads(attn.k_proj(normed), num_kv, head_dim)
        v = _heads(attn.v_proj(normed), num_kv, head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3-style RMSNorm over each head's d
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k, v = q[0], k[0], v[0]  # (H, n, d), (H_kv, n, d), (H_kv, n, d)
        cache.append((k, v))  # the cache keeps the unedited keys and values of this layer

        # Causal attention, one head and one query at a time (softmax over keys j <= i).
        out = torch.empty(n, num_heads, head_dim, dtype=q.dtype)
        probs = torch.zeros(num_heads, n, n, dtype=q.dtype) if want_probs else None
        for h in range(num_heads):
            g = h // groups
            for i in range(n):
                p = torch.softmax((k[g, : i + 1] @ q[h, i]) * scaling, dim=0)
                if want_probs:
                    probs[h, i, : i + 1] = p
                out[i, h] = p @ v[g, : i + 1]

        # Sinks of this layer (§1); layers 0 .. L-3 only.
        found: list[int] = _detect(rule, hidden, probs) if layer_idx < num_layers - 2 else []
        if found:
            sinks[layer_idx] = found
        cumulative |= set(found)

        # One-time relaxation (§3): the sink's row over every prompt key, no causal mask.
        if layer_idx in relax:
            done = []
            for s in found:
                if s in already_relaxed:
                    continue
                for h in range(num_heads):
                    g = h // groups
                    scores = (k[g].to(edit) @ q[h, s].to(edit)) * scaling  # all n keys
                    out[s, h] = torch.softmax(scores, dim=0) @ v[g].to(edit)
                already_relaxed.add(s)
                done.append(s)
            relaxed[layer_idx] = done

        # Rotation (§2) at every layer with sinks, for every token outside C_l.
        if found:
            vbar_kv = [sum(v[g, s].to(edit) for s in found) / len(found) for g in range(num_kv)]
            vbar = torch.stack([vbar_kv[h // groups] for h in range(num_heads)])  # (H, d)
            vbars[layer_idx] = vbar
            if alpha != 0:
                rotated = out.clone()
                for i in range(n):
                    if i in cumulative:
                        continue
                    for h in range(num_heads):
                        rotated[i, h] = rotate_one(out[i, h], vbar[h], alpha, temperature)
                out = rotated

        x = x + attn.o_proj(out.reshape(1, n, num_heads * head_dim))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        if after_layer is not None:
            x = after_layer(layer_idx, x)

    final = inner.norm(x)[0]
    return ReferenceResult(None, sinks, relaxed, hidden_trace, cache=cache, vbars=vbars, final_hidden=final)


@torch.no_grad()
def reference_decode(
    model, prefill: ReferenceResult, tokens, alpha: float, temperature: float, rotate_decode
) -> list[torch.Tensor]:
    """Teacher-forced decoding of ``tokens`` after ``prefill`` over an explicit KV cache (§4).

    Token j sits at absolute position n + j, is never added to the sinks, attends to every
    cached key. Its head outputs are rotated toward the prefill vbar of a layer that had sinks
    when ``rotate_decode`` is True; never when False; when "official", only at the layers
    whose prompt sinks do not contain position 0 (the released code's local-index test:
    the new token's index within the step, 0, is looked up in the prompt's sink positions).
    The prefill result is not modified.
    """
    assert rotate_decode in (True, False, "official")
    inner = model.model
    config = model.config
    num_heads = config.num_attention_heads
    num_kv = config.num_key_value_heads
    groups = num_heads // num_kv
    cache = list(prefill.cache)
    position = prefill.logits.shape[0]
    decode_logits = []
    for token in tokens:
        x = inner.embed_tokens(torch.tensor([[int(token)]]))
        cos, sin = inner.rotary_emb(x, position_ids=torch.tensor([[position]]))
        for layer_idx, layer in enumerate(inner.layers):
            attn = layer.self_attn
            head_dim = attn.head_dim
            normed = layer.input_layernorm(x)
            q = _heads(attn.q_proj(normed), num_heads, head_dim)
            k = _heads(attn.k_proj(normed), num_kv, head_dim)
            v = _heads(attn.v_proj(normed), num_kv, head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            keys = torch.cat([cache[layer_idx][0], k[0]], dim=1)
            values = torch.cat([cache[layer_idx][1], v[0]], dim=1)
            cache[layer_idx] = (keys, values)
            out = torch.empty(1, num_heads, head_dim, dtype=q.dtype)
            for h in range(num_heads):
                g = h // groups
                out[0, h] = torch.softmax((keys[g] @ q[0, h, 0]) * attn.scaling, dim=0) @ values[g]
            rotate = False
            if alpha != 0 and layer_idx in prefill.vbars:  # the prompt had sinks at this layer
                if rotate_decode == "official":
                    local_index = 0  # the new token's index within this one-token step
                    rotate = local_index not in prefill.sinks[layer_idx]
                else:
                    rotate = rotate_decode is True
            if rotate:
                for h in range(num_heads):
                    out[0, h] = rotate_one(out[0, h], prefill.vbars[layer_idx][h], alpha, temperature)
            x = x + attn.o_proj(out.reshape(1, 1, num_heads * head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        decode_logits.append(model.lm_head(inner.norm(x))[0, 0])
        position += 1
    return decode_logits
