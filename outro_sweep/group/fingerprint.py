"""Content keys of tensors: two calls share work only when their inputs are equal bit for bit."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def tensor_digest(value: Any, digest=None) -> str:
    """sha1 over the dtype, shape and bytes of every tensor in ``value`` (nested lists, tuples and
    dicts; other leaves by ``repr``). One device-to-host copy per tensor: a prefill's constant."""
    digest = digest or hashlib.sha1()
    if isinstance(value, torch.Tensor):
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        data = value.detach()
        if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the same bits as int16
            data = data.view(torch.int16)
        digest.update(data.contiguous().cpu().numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            tensor_digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            tensor_digest(item, digest)
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest()
