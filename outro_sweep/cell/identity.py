"""A cell's identity: a stable hash of what determines its results.

The same model x benchmark x sink rule x OutRo settings (x seed, batch size, ...) gives the
same identity in any sweep, on any day, from any launcher; so a re-run of a sweep finds the
cells it already finished, a requeued task finds its own shards, and the W&B run id stays
the same. Keys that cannot change a prediction are left out.
"""

from __future__ import annotations

import copy
import hashlib
import json

# Dotted keys of the resolved cell config that do not change results: where files go, how
# runs are logged, how many loader workers decode, progress bars, and the run switches.
IGNORED_KEYS = (
    "paths",
    "logger",
    "choices",  # group names; the values they select are hashed
    "predict.num_workers",
    "trainer.enable_progress_bar",
    "force",
    "dry_run",
    "baseline",
)
IDENTITY_LENGTH = 12  # hex characters: 48 bits, no collision in any realistic sweep history


def _drop(config: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(leaf, None)


def identity_config(config: dict) -> dict:
    """The part of a resolved config (plain dict) that the identity hashes.

    With OutRo off, its strength, layers and the sink rule cannot change a prediction: the
    stock-model cell is the same cell whatever they say, so a sweep over them has ONE baseline.
    """
    kept = copy.deepcopy(config)
    for dotted in IGNORED_KEYS:
        _drop(kept, dotted)
    if isinstance(kept.get("outro"), dict) and kept["outro"].get("enabled") is False:
        kept["outro"] = {"enabled": False}
        kept.pop("sink", None)
    return kept


def cell_identity(config: dict) -> str:
    """sha256 of the canonical JSON of ``identity_config(config)``, first 12 hex characters."""
    canonical = json.dumps(identity_config(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:IDENTITY_LENGTH]
