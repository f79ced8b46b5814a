"""Keep credentials out of everything the project writes, logs or uploads.

Masking is for output only: a cell's identity hashes the unmasked config (a hash reveals
nothing), so masking never decides which cell is which.

Two rules, both case-insensitive:

* **By name.** A name is secret-named when one of its words is ``key``, ``pass``, ``auth``,
  ``token``, ``secret(s)``, ``password(s)``, ``passwd``, ``passphrase``, ``credential(s)`` or
  ``apikey``, or a word ends in ``token``, ``secret``, ``password``, ``passwd``, ``apikey`` or
  ``credential(s)`` (``PGPASSWORD``, ``HFToken``). Words are split at every character other
  than a letter or digit and at lower-to-upper case changes (``apiKey`` is ``api key``).
  Whole words, not substrings: ``max_new_tokens`` and Hydra's ``exclude_keys`` (plurals name
  counts and lists), ``passes``, ``author``, ``keyboard`` and ``bypass`` are not secret-named;
  ``token_type_ids`` is (one of its words is ``token``). Every key of conf/ is checked by a test.
  A value under a secret-named key, at any depth, is masked whole; so is every value of an
  environment variable with a secret-named name, wherever it appears.
* **By value.** The value of every environment variable with a secret-named name
  (``WANDB_API_KEY``, ``HF_TOKEN``, ``OPENAI_KEY``, ``DB_PASS``, ``X_AUTH``, ...) is masked:
  one of 6 characters or more anywhere it appears, even inside a word; one of 3 to 5
  characters where it is a whole word (not touching a letter, digit or ``_``), since a short
  string inside longer words is too common to mask everywhere; one of 1 or 2 characters only
  where it is a whole string value. Switch values (``true``, ``false``, ``yes``, ``no``,
  ``on``, ``off``, ``none``, ``null``) are settings, not credentials, and are never masked.

In data (``mask``: configs, records, JSON files, the W&B run), strings are masked by value and
any value under a secret-named key is masked whole; other numbers are left alone, so masked
JSON and YAML stay valid.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

MASK = "***"
ANYWHERE_LENGTH = 6  # values at least this long are masked inside words too
WORD_LENGTH = 3  # values of WORD_LENGTH..ANYWHERE_LENGTH-1 characters are masked as whole words
_SECRET_WORDS = frozenset({"key", "pass", "auth", "token", "secret", "secrets", "password", "passwords", "passwd",
                           "passphrase", "credential", "credentials", "apikey"})
_SECRET_ENDINGS = ("token", "secret", "password", "passwd", "apikey", "credential", "credentials")
_SWITCH_VALUES = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null"})


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a config key or environment variable name names a credential (rule above)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) for w in words)


def secret_values() -> list[str]:
    """Values of the secret-named environment variables, longest first (so a value that
    contains another is masked whole)."""
    values = {v for k, v in os.environ.items() if v and is_secret_name(k) and v.lower() not in _SWITCH_VALUES}
    return sorted(values, key=lambda v: (-len(v), v))


@functools.lru_cache(maxsize=64)
def _pattern(values: tuple[str, ...]) -> re.Pattern | None:
    alternatives = []
    for value in values:  # longest first: the regex tries alternatives in order
        if len(value) >= ANYWHERE_LENGTH:
            alternatives.append(re.escape(value))
        elif len(value) >= WORD_LENGTH:
            alternatives.append(rf"(?<![A-Za-z0-9_]){re.escape(value)}(?![A-Za-z0-9_])")
    return re.compile("|".join(alternatives)) if alternatives else None


def mask_text(text: str, values: list[str] | None = None) -> str:
    """``text`` with every secret value masked (``values``: default ``secret_values()``)."""
    values = secret_values() if values is None else values
    pattern = _pattern(tuple(values))
    return text if pattern is None else pattern.sub(MASK, text)


def mask(obj: Any, values: list[str] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, scalars) with credentials masked: every
    value under a secret-named key (``None`` and booleans kept: they reveal nothing), every
    string equal to a secret value, and secret values inside strings (``mask_text``)."""
    values = secret_values() if values is None else values
    if isinstance(obj, str):
        return MASK if obj in values else mask_text(obj, values)
    if isinstance(obj, dict):
        return {mask(k, values): _mask_whole(v) if isinstance(k, str) and is_secret_name(k) else mask(v, values)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask(v, values) for v in obj]
    return obj


def _mask_whole(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return {k: _mask_whole(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_whole(v) for v in value]
    return MASK


def override_key(override: str) -> str:
    """The dotted key of a Hydra override (``+judge.api_key=...`` -> ``judge.api_key``)."""
    return override.split("=", 1)[0].lstrip("+~")


def mask_override(override: str, values: list[str] | None = None) -> str:
    """A Hydra override for display: ``key=***`` when its key (any part) is secret-named,
    otherwise with secret values masked."""
    if "=" in override and is_secret_name(override_key(override)):
        return override.split("=", 1)[0] + "=" + MASK
    return mask_text(override, values)
