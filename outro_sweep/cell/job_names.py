"""Job folder names: ``<job number>_<the overrides that define the cell>``.

The name is the cell's defining overrides (``outro_sweep.cell.identity.defines_cell``), sorted,
credentials masked, comma-joined and made folder-safe. When that is longer than ``NAME_LIMIT``
characters, the overrides the sweep varies (its swept keys, which the sweeper gives every job as
``hydra.sweeper.swept``) stay whole, and the constant ones are kept only while they fit; the
rest are replaced by one ``const-<hash>`` token (8 hex digits of the dropped overrides), e.g.

    3_model.path=_data_models_smollm2,outro.alpha=3,const-1a2b3c4d

A swept override itself longer than ``ITEM_LIMIT`` (a long path) keeps its key, the END of its
value (where the paths of one sweep differ: the folder names, not their shared parents) and a
hash of the whole value, so distinct values stay distinct:
``model.path=..tmp_runs_models_broken_model-9f8e7d6c``. Only when the swept overrides alone
exceed ``HARD_LIMIT`` (many swept keys) is the name cut there, with a hash of the whole name.

No Hydra import: the report maps folders back with the same function.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from outro_sweep.cell.identity import defines_cell
from outro_sweep.files.masking import mask_override

NAME_LIMIT = 150  # the name after ``<n>_`` when it has to be shortened
ITEM_LIMIT = 60  # one swept override longer than this keeps the end and a hash of its value
HARD_LIMIT = 230  # never longer (a folder name is at most 255 bytes on common filesystems)
HASH_DIGITS = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]


def _safe(text: str) -> str:
    return re.sub(r"[^\w=.,+-]", "_", text)


def override_key(override: str) -> str:
    """``+outro.alpha=3`` -> ``outro.alpha`` (the ``+``/``~`` prefixes do not make another key)."""
    return str(override).split("=", 1)[0].lstrip("+~")


def swept_keys(jobs: Iterable[Sequence[str]]) -> list[str]:
    """The keys whose override is not the same in every job (absent in some counts as varying)."""
    jobs = [list(job) for job in jobs]
    values: dict[str, set[str | None]] = {}
    for job in jobs:
        for override in job:
            values.setdefault(override_key(override), set())
    for key, seen in values.items():
        for job in jobs:
            seen.add(next((str(o) for o in job if override_key(o) == key), None))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def _short_item(item: str) -> str:
    """``key=value`` longer than ``ITEM_LIMIT``: the key, ``..`` and the value's end, and the
    value's hash."""
    key, _, value = item.partition("=")
    keep = max(8, ITEM_LIMIT - len(key) - HASH_DIGITS - 4)
    return f"{key}=..{value[-keep:]}-{_digest(value)}"


def cell_dirname(overrides, swept: Iterable[str] | None = None) -> str:
    """A job folder's name after ``<n>_`` (module docstring); ``swept``: the keys the sweep varies."""
    kept = sorted(mask_override(str(o)) for o in overrides if defines_cell(override_key(o)))
    full = _safe(",".join(kept))
    if len(full) <= NAME_LIMIT:
        return full or "defaults"
    swept = {str(k).lstrip("+~") for k in (swept or ())}
    varying = [_safe(o) for o in kept if override_key(o) in swept]
    varying = [_short_item(item) if len(item) > ITEM_LIMIT else item for item in varying]
    constant = [_safe(o) for o in kept if override_key(o) not in swept]
    budget = NAME_LIMIT - len(",".join(varying)) - len(",const-") - HASH_DIGITS  # room for constants
    shown = []
    for item in constant:  # in key order, while they fit
        if len(item) + 1 > budget:
            break
        shown.append(item)
        budget -= len(item) + 1
    dropped = constant[len(shown):]
    parts = sorted(varying + shown, key=override_key)
    if dropped:
        parts.append("const-" + _digest(",".join(dropped)))
    name = ",".join(parts)
    if len(name) > HARD_LIMIT:
        name = f"{name[:HARD_LIMIT - HASH_DIGITS - 1]}-{_digest(full)}"
    return name
