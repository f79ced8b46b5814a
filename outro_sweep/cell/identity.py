"""A cell's identity: a stable hash of what determines its results.

The same model x benchmark x sink rule x intervention settings (x seed, batch size, ...) gives
the same identity in any sweep, on any day, from any launcher and in any environment; so a re-run
of a sweep finds the cells it already finished, a requeued task finds its own shards, and the W&B
run id stays the same. The identity is computed from the resolved config as composed, never from
a redacted copy (redaction depends on the process environment) and never from keys that only say
where files go (``NON_DEFINING_KEYS``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from fnmatch import fnmatchcase

# The ONE list of keys that do not define a cell (dotted; ``*`` matches one key at any level):
# where files and caches go, how runs are logged, how many loader workers decode, progress bars,
# the run switches, and Hydra's own node. Used by the identity, the job folders' names, the W&B
# run names and the report's labels.
NON_DEFINING_KEYS = (
    "paths",
    "logger",
    "hydra",
    "choices",  # group names; the values they select are hashed
    "predict.num_workers",
    "trainer.enable_progress_bar",
    "force",
    "dry_run",
    "baseline",
    "*.cache_dir",  # model.cache_dir, judge.model.cache_dir: ${paths.cache_dir}, environment-dependent
    "*.*.cache_dir",
)
IDENTITY_LENGTH = 12  # hex characters: 48 bits, no collision in any realistic sweep history


def defines_cell(dotted_key: str) -> bool:
    """Whether a (dotted, possibly ``+``/``~``-prefixed) key can change a cell's results."""
    key = dotted_key.lstrip("+~")
    parts = key.split(".")
    for pattern in NON_DEFINING_KEYS:
        depth = pattern.count(".") + 1
        if len(parts) >= depth and fnmatchcase(".".join(parts[:depth]), pattern):
            return False
    return True


def _drop_non_defining(node: dict, prefix: str = "") -> dict:
    kept = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if not defines_cell(dotted):
            continue
        kept[key] = _drop_non_defining(value, dotted + ".") if isinstance(value, dict) else value
    return kept


def identity_config(config: dict) -> dict:
    """The part of a resolved config (plain dict) that the identity hashes.

    An inactive intervention is ``{"enabled": False}`` whatever its other knobs say, and the sink
    rule is left out when no active intervention reads sinks: the stock-model cell is the same
    cell whatever they say, so a sweep over them has ONE baseline.
    """
    from outro_sweep.interventions.stack import intervention_groups, is_active

    kept = _drop_non_defining(copy.deepcopy(config))
    groups = intervention_groups(kept)
    active = {group: cls for group, cls in groups.items() if is_active(kept[group])}
    for group in groups.keys() - active.keys():
        kept[group] = {"enabled": False}
    if not any(cls.needs_sink_rule for cls in active.values()):
        kept.pop("sink", None)
    return kept


def cell_identity(config: dict) -> str:
    """sha256 of the canonical JSON of ``identity_config(config)``, first 12 hex characters.
    ``config``: the cell's resolved config as a plain dict (``OmegaConf.to_container(cfg,
    resolve=True)``), not redacted."""
    canonical = json.dumps(identity_config(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:IDENTITY_LENGTH]


def identity_of(cfg) -> str:
    """The identity of a composed cell config (DictConfig without the ``hydra`` node): the one
    computation shared by the sweeper (in the submitting process) and the job itself."""
    from omegaconf import OmegaConf

    return cell_identity(OmegaConf.to_container(cfg, resolve=True))
