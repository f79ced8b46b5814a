"""A cell's identity: a stable hash of everything that determines its results.

The same model x benchmark x sink rule x intervention settings (x seed, batch size, ...) gives
the same identity in any sweep, on any day, from any launcher and in any environment; so a re-run
of a sweep finds the cells it already finished, a requeued task finds its own shards, and the W&B
run id stays the same. And a cell whose results could differ gets a new identity. What is hashed
(``identity_inputs``, stored in each cell's config.yaml for ``python -m outro_sweep.cells diff``):

- the resolved config, without the keys that only say where files go or how runs are logged
  (``NON_DEFINING_KEYS``), numbers canonical (3 and 3.0 alike; bools stay bools), each active
  intervention's settings as it acts on them for this model (``Intervention.identity_settings``:
  OutRo's ``layer: auto`` as the layers it resolves to);
- ``RESULTS_VERSION``, the version of what the package predicts;
- the content of the model's files (``ModelLoader.model_files``) and of the benchmark's
  annotation files (``Benchmark.data_files``), fingerprinted by ``outro_sweep.files.fingerprint``,
  and the names and sizes of its media files (``Benchmark.media_listing``).

It is computed from the config as composed, never from a masked copy (masking depends on the
process environment), and nothing of the environment enters it: not the cache location, not the
paths of the fingerprint cache, not secrets.
"""

from __future__ import annotations

import copy
import hashlib
import json
from fnmatch import fnmatchcase
from typing import Any

import outro_sweep
from outro_sweep.errors import ConfigError
from outro_sweep.files.fingerprint import fingerprint_files
from outro_sweep.interventions.stack import intervention_groups, is_active

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
    "predict.progress_every_batches",
    "predict.progress_every_seconds",
    "trainer.enable_progress_bar",
    "group",  # what a group's cells share in one process: the same results either way
    "force",
    "dry_run",
    "baseline",
    "identity_inputs",  # config.yaml's record of what the identity hashed
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

    An inactive intervention is left out whatever its other knobs say (so adding an intervention
    to the project changes no existing cell's identity), and the sink
    rule is left out when no active intervention reads sinks (``model.vsink_*`` when none reads
    V-sinks): the stock-model cell is the same cell whatever they say, so a sweep over them has
    ONE baseline. Likewise ``benchmark.sample`` (with its seed) and ``benchmark.circular`` are
    left out while off.
    """
    kept = _drop_non_defining(copy.deepcopy(config))
    groups = intervention_groups(kept)
    active = {group: cls for group, cls in groups.items() if is_active(kept[group])}
    for group in groups.keys() - active.keys():
        del kept[group]
    if not any(cls.needs_sink_rule for cls in active.values()):
        kept.pop("sink", None)
    model = kept.get("model")
    if isinstance(model, dict) and not any(cls.needs_vision_sinks for cls in active.values()):
        # The V-sink settings act only through an intervention that reads them: without one, a
        # video cell is the cell it was before the keys existed.
        model.pop("vsink_dims", None)
        model.pop("vsink_tau", None)
    benchmark = kept.get("benchmark")
    if isinstance(benchmark, dict):
        # The question-selection keys at their "off" values select what a config without them
        # does (benchmark.base.Benchmark): sample_seed means nothing without sample. Left out, so
        # `sample: null` and an absent key are one cell, and cells from before the keys keep theirs.
        if benchmark.get("sample") is None:
            benchmark.pop("sample", None)
            benchmark.pop("sample_seed", None)
        if benchmark.get("circular") is False:
            benchmark.pop("circular")
    return kept


def canonical_numbers(value: Any) -> Any:
    """A copy with every integral float written as an int (3.0 -> 3), so that a knob given as
    ``3`` or ``3.0`` hashes alike; bools stay bools, other floats stay floats."""
    if isinstance(value, dict):
        return {key: canonical_numbers(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical_numbers(inner) for inner in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _build(node: Any):
    """The object a config node's ``_target_`` names, built from its settings (no weights, no
    data read); None for a node without ``_target_`` and for one that cannot be built: such a
    cell fails its checks with one line and never has results, so its identity is its config's."""
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        return None
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException


    try:
        return instantiate(node)
    except (ConfigError, InstantiationException, OmegaConfBaseException):
        return None


def _checked(compute, fallback):
    """``compute()``, or ``fallback`` where bad input makes it raise its one-line ConfigError:
    the identity never fails; the cell's checks report that error (and the cell has no results)."""
    try:
        return compute()
    except ConfigError:
        return fallback


def identity_inputs(config: dict) -> dict:
    """Everything the identity hashes, as JSON-ready data (see the module docstring).
    ``config``: the cell's resolved config as a plain dict, not redacted."""
    kept = canonical_numbers(identity_config(config))
    loader, benchmark = _build(config.get("model")), _build(config.get("benchmark"))
    cache_dir = (config.get("paths") or {}).get("cache_dir")
    active = intervention_groups(kept)  # the inactive ones are {"enabled": False} by now: not found
    num_layers = _checked(loader.num_layers, None) if loader is not None and active else None
    for group, cls in active.items():
        settings = _checked(lambda: cls.identity_settings(kept[group], num_layers), kept[group])
        kept[group] = canonical_numbers(settings)
    inputs: dict = {"results_version": outro_sweep.RESULTS_VERSION, "config": kept}
    if loader is not None:
        inputs["model_files"] = fingerprint_files(_checked(loader.model_files, {}), cache_dir)
    if benchmark is not None:
        inputs["benchmark_files"] = fingerprint_files(benchmark.data_files(), cache_dir)
        inputs["media"] = benchmark.media_listing()
    judge = config.get("judge") or {}
    judge_loader = _build(judge.get("model")) if judge.get("enabled") else None
    if judge_loader is not None:  # judge=llm: its model grades the open answers, so its weights count too
        inputs["judge_model_files"] = fingerprint_files(_checked(judge_loader.model_files, {}), cache_dir)
    return inputs


def hash_inputs(inputs: dict) -> str:
    """sha256 of the canonical JSON of ``identity_inputs``, first 12 hex characters."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:IDENTITY_LENGTH]


def cell_identity(config: dict) -> str:
    """The identity of a cell. ``config``: the cell's resolved config as a plain dict
    (``OmegaConf.to_container(cfg, resolve=True)``), not redacted."""
    return hash_inputs(identity_inputs(config))


def identity_of(cfg) -> str:
    """The identity of a composed cell config (DictConfig without the ``hydra`` node): the one
    computation shared by the sweeper (in the submitting process) and the job itself."""
    from omegaconf import OmegaConf

    return cell_identity(OmegaConf.to_container(cfg, resolve=True))
