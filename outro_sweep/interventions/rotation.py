"""OutRo's two edits as pure tensor functions (spec §2 and §3).

All math runs in ``edit_dtype`` = max(float32, the inputs' dtype): bf16/fp16 models are
edited in float32, float64 models stay in float64 (so a float64 run can be checked exactly),
and results are cast back to the attention output's dtype by the caller or here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# Guards from the spec: |v|^2 + 1e-8 in the projection, |o'| + 1e-8 in the norm restore.
PROJECTION_EPS = 1e-8
NORM_EPS = 1e-8
# The sdpa backends the relaxation may use whatever the caller restricted the model's attention
# to (flash alone cannot run it: float32 inputs and a key mask).
RELAXATION_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def edit_dtype(dtype: torch.dtype) -> torch.dtype:
    """max(float32, dtype): the precision the edits are computed in."""
    return torch.promote_types(dtype, torch.float32)


def cosine(o: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos(o, v) over the last dim; 0 where either vector is zero. o, v broadcastable (..., d)."""
    dot = (o * v).sum(-1)
    norms = o.norm(dim=-1) * v.norm(dim=-1)
    return torch.where(norms > 0, dot / norms.clamp(min=torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))


class SinkDirection(NamedTuple):
    """The sink value vector of a rotation and what the rotation reads of it, computed once per
    prefill for the decode steps that reuse it. Shapes broadcast against head outputs (..., H, d)."""

    v: torch.Tensor  # (..., H, d) in the edit dtype
    norm: torch.Tensor  # (..., H, 1) |v|
    projection_denominator: torch.Tensor  # (..., H, 1) |v|^2 + PROJECTION_EPS


def sink_direction(v: torch.Tensor) -> SinkDirection:
    """``SinkDirection`` of v (..., H, d), in ``edit_dtype(v.dtype)``."""
    v_ = v.to(edit_dtype(v.dtype))
    return SinkDirection(v_, v_.norm(dim=-1, keepdim=True), v_.pow(2).sum(-1, keepdim=True) + PROJECTION_EPS)


def rotate_toward(o: torch.Tensor, v: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """Gated, norm-preserving rotation of head outputs toward the sink value direction.

    o: (..., H, d) head outputs; v: (..., H, d) the sink mean value per query head (broadcast).
        g   = tanh(relu(cos(o, v)) / T)
        p   = |o.v| / (|v|^2 + 1e-8) * v
        o'  = o + alpha * g * p
        o'' = o' * |o| / (|o'| + 1e-8)
    Heads with cos <= 0 get g = 0, so o' = o (up to the norm restore's rounding).
    """
    return rotate_along(o, sink_direction(v.to(torch.promote_types(o.dtype, v.dtype))), alpha, temperature)


def rotate_along(o: torch.Tensor, direction: SinkDirection, alpha: float, temperature: float) -> torch.Tensor:
    """``rotate_toward`` with the sink direction's own terms computed beforehand (bit for bit the
    same result): o (..., H, d), computed in ``direction.v``'s dtype, returned in o's."""
    v_ = direction.v
    o_ = o.to(v_.dtype)
    # o.v and |o| are computed once and shared by the gate, the projection and the norm restore
    # (the same values ``cosine`` would give, so the result does not change)
    dot = (o_ * v_).sum(-1, keepdim=True)  # (..., H, 1)
    o_norm = o_.norm(dim=-1, keepdim=True)  # (..., H, 1)
    norms = o_norm * direction.norm
    cos = torch.where(norms > 0, dot / norms.clamp(min=torch.finfo(norms.dtype).tiny), 0.0)
    gate = torch.tanh(torch.relu(cos) / temperature)  # (..., H, 1)
    projection = dot.abs() / direction.projection_denominator * v_
    shifted = o_ + alpha * gate * projection
    restored = shifted * o_norm / (shifted.norm(dim=-1, keepdim=True) + NORM_EPS)
    return restored.to(o.dtype)


def unmasked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Attention outputs with no causal mask (the sink relaxation), for every query of a batch.

    query: (B, H, S_q, d); key, value: (B, H_kv, S_kv, d); key_mask: (B, S_kv) bool real keys.
    Returns (B, S_q, H, d) in ``edit_dtype``: softmax(q K^T * scaling) V over every real key,
    grouped-query aware. Every query is computed (the caller keeps the sink rows), so the shapes
    do not depend on how many sinks a layer has and nothing waits for the host; sdpa never holds
    the (S_q, S_kv) scores of a long prompt in memory at once on a GPU.
    """
    dtype = edit_dtype(query.dtype)
    groups = query.shape[1] // key.shape[1]
    k = key.to(dtype).repeat_interleave(groups, dim=1)  # (B, H, S_kv, d)
    v = value.to(dtype).repeat_interleave(groups, dim=1)  # (B, H, S_kv, d)
    mask = key_mask[:, None, None, :]  # (B, 1, 1, S_kv): True = attend
    with sdpa_kernel(RELAXATION_BACKENDS):
        out = torch.nn.functional.scaled_dot_product_attention(query.to(dtype), k, v, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2)  # (B, S_q, H, d)
