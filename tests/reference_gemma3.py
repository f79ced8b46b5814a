"""The plain-loop OutRo reference (reference_outro.py, spec §1-3) for a Gemma 3 decoder.

Gemma 3's layer differs from the Llama family's in what the reference must spell out:
- the embedding is scaled by sqrt(hidden) (the model's own ``embed_tokens`` does it);
- QK-norm: an RMSNorm over each head's d on queries and keys, before RoPE;
- the attention scale is ``query_pre_attn_scalar ** -0.5``, not ``head_dim ** -0.5``;
- sliding-window layers (``config.layer_types``) see keys j with i - w < j <= i, and they
  have their own RoPE base (the rotary module takes the layer type);
- "sandwich" norms: the attention and MLP outputs are RMS-normed before the residual add;
- an optional final logit soft-cap, tanh(z / c) * c.
The sink rules, the one-time relaxation (every prompt key, no mask of any kind) and the
rotation are reference_outro's, unchanged. One unpadded sequence, prefill only.
"""

from __future__ import annotations

import torch
from tests.reference_outro import ReferenceResult, _detect, _heads, edit_dtype, rotate_one
from tests.reference_ops import rotate_half


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (1, H, n, d), cos/sin (1, n, d)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


@torch.no_grad()
def reference_gemma3(model, input_ids, rule: dict, alpha: float = 3.0, temperature: float = 0.1,
                     relax_layers=()) -> ReferenceResult:
    """OutRo on one unpadded sequence through a Gemma3ForCausalLM, from the spec."""
    inner, config = model.model, model.config
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    n = ids.shape[1]
    num_heads, num_kv = config.num_attention_heads, config.num_key_value_heads
    groups = num_heads // num_kv
    num_layers = len(inner.layers)
    relax = set(relax_layers)
    want_probs = rule["name"] == "attention_mass"

    x = inner.embed_tokens(ids)  # (1, n, D), already times sqrt(D)
    positions = torch.arange(n).unsqueeze(0)
    edit = edit_dtype(x.dtype)
    sinks, relaxed, vbars = {}, {}, {}
    cumulative, already_relaxed = set(), set()
    hidden_trace = []

    for layer_idx, layer in enumerate(inner.layers):
        attn = layer.self_attn
        layer_type = config.layer_types[layer_idx]
        window = config.sliding_window if layer_type == "sliding_attention" else None
        head_dim = attn.head_dim
        scaling = config.query_pre_attn_scalar ** -0.5

        hidden = x[0]  # (n, D) residual stream entering the layer
        hidden_trace.append(hidden)
        normed = layer.input_layernorm(x)
        q = attn.q_norm(_heads(attn.q_proj(normed), num_heads, head_dim))  # (1, H, n, d)
        k = attn.k_norm(_heads(attn.k_proj(normed), num_kv, head_dim))
        v = _heads(attn.v_proj(normed), num_kv, head_dim)
        cos, sin = inner.rotary_emb(x, positions, layer_type)
        q, k = _rope(q, cos, sin)[0], _rope(k, cos, sin)[0]
        v = v[0]

        out = torch.empty(n, num_heads, head_dim, dtype=q.dtype)
        probs = torch.zeros(num_heads, n, n, dtype=q.dtype) if want_probs else None
        for h in range(num_heads):
            g = h // groups
            for i in range(n):
                lo = 0 if window is None else max(0, i - window + 1)  # keys lo .. i
                p = torch.softmax((k[g, lo : i + 1] @ q[h, i]) * scaling, dim=0)
                if want_probs:
                    probs[h, i, lo : i + 1] = p
                out[i, h] = p @ v[g, lo : i + 1]

        found = _detect(rule, hidden, probs) if layer_idx < num_layers - 2 else []
        if found:
            sinks[layer_idx] = found
        cumulative |= set(found)

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

        x = x + layer.post_attention_layernorm(attn.o_proj(out.reshape(1, n, num_heads * head_dim)))
        x = x + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(x)))

    final = inner.norm(x)[0]
    logits = model.lm_head(final[None])[0]
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return ReferenceResult(logits, sinks, relaxed, hidden_trace, vbars=vbars, final_hidden=final)
