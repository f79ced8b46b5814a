"""OutRo's two edits as pure tensor functions (spec §2 and §3).

All math runs in ``edit_dtype`` = max(float32, the inputs' dtype): bf16/fp16 models are
edited in float32, float64 models stay in float64 (so a float64 run can be checked exactly),
and results are cast back to the attention output's dtype by the caller or here.
"""

from __future__ import annotations

import torch

# Guards from the spec: |v|^2 + 1e-8 in the projection, |o'| + 1e-8 in the norm restore.
PROJECTION_EPS = 1e-8
NORM_EPS = 1e-8


def edit_dtype(dtype: torch.dtype) -> torch.dtype:
    """max(float32, dtype): the precision the edits are computed in."""
    return torch.promote_types(dtype, torch.float32)


def cosine(o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos(o, v) over the last dim; 0 where either vector is zero. o, v broadcastable (..., d)."""
    dot = (o * v).sum(-1)
    norms = o.norm(dim=-1) * v.norm(dim=-1)
    return torch.where(norms > 0, dot / norms.clamp(min=torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))


def rotate_toward(o: torch.Tensor, v: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """Gated, norm-preserving rotation of head outputs toward the sink value direction.

    o: (..., H, d) head outputs; v: (..., H, d) the sink mean value per query head (broadcast).
        g   = tanh(relu(cos(o, v)) / T)
        p   = |o.v| / (|v|^2 + 1e-8) * v
        o'  = o + alpha * g * p
        o'' = o' * |o| / (|o'| + 1e-8)
    Heads with cos <= 0 get g = 0, so o' = o (up to the norm restore's rounding).
    """
    dtype = edit_dtype(torch.promote_types(o.dtype, v.dtype))
    o_, v_ = o.to(dtype), v.to(dtype)
    gate = torch.tanh(torch.relu(cosine(o_, v_)) / temperature)  # (..., H)
    dot = (o_ * v_).sum(-1, keepdim=True)  # (..., H, 1)
    projection = dot.abs() / (v_.pow(2).sum(-1, keepdim=True) + PROJECTION_EPS) * v_
    shifted = o_ + alpha * gate.unsqueeze(-1) * projection
    restored = shifted * o_.norm(dim=-1, keepdim=True) / (shifted.norm(dim=-1, keepdim=True) + NORM_EPS)
    return restored.to(o.dtype)


def unmasked_attention_rows(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Attention outputs for a few query rows with no causal mask (the sink relaxation).

    query: (H, m, d) the sink rows; key, value: (H_kv, S, d); key_mask: (S,) bool real keys.
    Returns (m, H, d) in ``edit_dtype``: softmax(q K^T * scaling) V over every real key,
    grouped-query aware.
    """
    dtype = edit_dtype(query.dtype)
    groups = query.shape[0] // key.shape[0]
    k = key.to(dtype).repeat_interleave(groups, dim=0)  # (H, S, d)
    v = value.to(dtype).repeat_interleave(groups, dim=0)  # (H, S, d)
    scores = query.to(dtype) @ k.transpose(-1, -2) * scaling  # (H, m, S)
    scores = scores.masked_fill(~key_mask.view(1, 1, -1), float("-inf"))
    return (scores.softmax(dim=-1) @ v).transpose(0, 1)  # (m, H, d)
