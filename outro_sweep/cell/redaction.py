"""Keep credentials out of everything the project writes or uploads.

A credential is the value of any environment variable whose name looks like one
(``*_API_KEY``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``), e.g. WANDB_API_KEY or HF_TOKEN.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
MASK = "***"


def secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6}
    return sorted(values, key=len, reverse=True)  # longest first, so no partial masking


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value with every credential string replaced by ***."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, MASK)
        return obj
    if isinstance(obj, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    return obj
