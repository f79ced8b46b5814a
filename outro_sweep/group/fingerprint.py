"""Content keys of tensors: two calls share work only when their inputs are equal bit for bit."""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch

# A large tensor's own digest, while that very tensor lives and is unchanged: a group's next cell
# gets the same batch tensors (outro_sweep.predict.data.Collator), and hashing a batch of video
# pixels costs tens of milliseconds per call. id -> (weak reference, version counter, hex digest).
_OWN_DIGESTS: dict[int, tuple] = {}
_REMEMBERED_BYTES = 1 << 20  # smaller tensors are hashed again: cheaper than the bookkeeping


def _own_digest(value: torch.Tensor) -> str:
    """sha1 of one tensor's dtype, shape and bytes. One device-to-host copy."""
    # an inference-mode tensor keeps no version counter: it is hashed every time
    remember = value.element_size() * value.nelement() >= _REMEMBERED_BYTES and not value.is_inference()
    kept = _OWN_DIGESTS.get(id(value)) if remember else None
    if kept is not None and kept[0]() is value and kept[1] == value._version:
        return kept[2]
    digest = hashlib.sha1(f"{value.dtype}{tuple(value.shape)}".encode())
    data = value.detach()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the same bits as int16
        data = data.view(torch.int16)
    digest.update(data.contiguous().cpu().numpy().tobytes())
    hexdigest = digest.hexdigest()
    if remember:
        key = id(value)
        _OWN_DIGESTS[key] = (weakref.ref(value, lambda _, key=key: _OWN_DIGESTS.pop(key, None)), value._version,
                             hexdigest)
    return hexdigest


def tensor_digest(value: Any, digest=None) -> str:
    """sha1 over the dtype, shape and bytes of every tensor in ``value`` (nested lists, tuples and
    dicts; other leaves by ``repr``). One device-to-host copy per tensor: a prefill's constant."""
    digest = digest or hashlib.sha1()
    if isinstance(value, torch.Tensor):
        digest.update(_own_digest(value).encode())
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
