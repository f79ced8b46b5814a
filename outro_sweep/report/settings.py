"""What a cell's resolved config says about it: its settings as labels, and its baseline key.

The baseline of an OutRo cell is the OutRo-off cell that shares everything else that can
change a prediction: the cell identity's config (``outro_sweep.cell.identity.identity_config``)
without ``outro`` (the intervention) and ``sink`` (sink detection only matters when OutRo is
on; the baseline of a ``sink=a,b`` sweep is the same stock model). The judge stays in the
key: a different judge grades the same answers differently, so such cells are not paired.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from outro_sweep.cell.identity import identity_config

# Keys of config.yaml that are bookkeeping, not settings.
BOOKKEEPING = ("identity", "judge_identity")
# Left out of the baseline key (besides what the identity already ignores).
NOT_IN_BASELINE_KEY = ("outro", "sink", *BOOKKEEPING)
# The axes of a heatmap: the rest of an OutRo cell's settings name its heatmap.
GRID_AXES = ("outro.layer", "outro.alpha")


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(value) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:8]


def settings(config: dict) -> dict:
    """The identity's part of the config, minus bookkeeping keys."""
    kept = identity_config(config)
    for key in BOOKKEEPING:
        kept.pop(key, None)
    return kept


def flatten(value, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if isinstance(value, dict) and value:
        out = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def baseline_key(config: dict) -> str:
    """Cells with the same key answer the same questions with the same model, benchmark
    settings, seed, prediction settings and judge: canonical JSON of the identity config
    without outro, sink and bookkeeping."""
    kept = settings(config)
    for key in NOT_IN_BASELINE_KEY:
        kept.pop(key, None)
    return canonical(kept)


def grid_group_key(config: dict) -> str:
    """Cells that differ only in outro.layer / outro.alpha share one heatmap."""
    flat = flatten(settings(config))
    for axis in GRID_AXES:
        flat.pop(axis, None)
    return canonical(flat)


def outro_enabled(config: dict) -> bool:
    return bool((config.get("outro") or {}).get("enabled", False))


def layer_label(layer) -> str:
    """outro.layer as a label: 4 -> "4", [4, 8] -> "[4, 8]", "auto", None -> "none"."""
    if layer is None:
        return "none"
    if isinstance(layer, (list, tuple)):
        return "[" + ", ".join(layer_label(v) for v in layer) + "]"
    if isinstance(layer, float) and layer.is_integer():
        return str(int(layer))
    return str(layer)


def layer_sort_key(label: str):
    """Integers first (numerically), then lists, then words (auto, none)."""
    try:
        return (0, int(label), "")
    except ValueError:
        return (1 if label.startswith("[") else 2, 0, label)


def number_label(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return "" if value is None else str(value)


def short_value(value) -> str:
    """A setting's value for a label: paths shortened to their last component."""
    if isinstance(value, str) and "/" in value.rstrip("/"):
        return value.rstrip("/").rsplit("/", 1)[-1]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(short_value(v) for v in value) + "]"
    return number_label(value) if isinstance(value, float) else str(value)


def differing_keys(dicts: list[dict]) -> list[str]:
    """Flattened keys whose value is not the same in every dict (missing counts as a value)."""
    flats = [flatten(d) for d in dicts]
    keys = sorted({k for flat in flats for k in flat})
    return [k for k in keys if len({canonical(flat.get(k, "<absent>")) for flat in flats}) > 1]


def describe(items: dict, keys: list[str], strip_prefix: str = "") -> str:
    """"k=v, k=v" for the given flattened keys (values shortened)."""
    flat = flatten(items)
    parts = []
    for key in keys:
        shown = key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key
        parts.append(f"{shown}={short_value(flat.get(key))}")
    return ", ".join(parts)


def choice_name(config: dict, group: str) -> str:
    """The config group's choice (``choices``), else the ``name`` or class of its node."""
    choice = (config.get("choices") or {}).get(group)
    if choice:
        return str(choice)
    node = config.get(group) or {}
    if node.get("name"):
        return str(node["name"])
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1]


OWN_COLUMNS = ("model", "benchmark", "sink", "outro")  # config groups the table shows in their own columns
SHOWN_OUTRO = ("outro.enabled", "outro.alpha", "outro.layer", "outro.temperature")
# Override keys that do not define a cell (besides the identity's ignored keys).
NOT_SETTINGS = ("paths", "logger", "hydra", "force", "dry_run", "baseline", "predict.num_workers",
                "trainer.enable_progress_bar")


def defines_cell(override_key: str) -> bool:
    key = override_key.lstrip("+~")
    return not any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS)


class Labeller:
    """Labels for a set of cells: a group's choice plus the settings that tell apart cells
    with the same choice (e.g. two ``hf_causal_lm`` models differ in ``path``)."""

    def __init__(self, configs: list[dict]) -> None:
        self.differing: dict[tuple[str, str], list[str]] = {}
        for group in ("model", "benchmark", "sink"):
            by_name = defaultdict(list)
            for config in configs:
                by_name[choice_name(config, group)].append(config.get(group) or {})
            for name, nodes in by_name.items():
                self.differing[(group, name)] = [k for k in differing_keys(nodes) if k != "_target_"]
        # Other settings that differ: OutRo's own (rotate_decode, ...) only among OutRo-on cells,
        # where they mean something; everything else (seed, predict, judge, ...) among all cells.
        flats = [flatten(settings(c)) for c in configs]
        self.other_keys = differing_keys([{k: v for k, v in f.items() if k.split(".")[0] not in OWN_COLUMNS}
                                          for f in flats])
        self.outro_keys = differing_keys([{k: v for k, v in f.items()
                                           if k.startswith("outro.") and k not in SHOWN_OUTRO}
                                          for f, c in zip(flats, configs) if outro_enabled(c)])

    def group_label(self, config: dict, group: str, with_settings: bool = True) -> str:
        name = choice_name(config, group)
        keys = self.differing.get((group, name), [])
        if not with_settings or not keys:
            return name
        return f"{name} ({describe(config.get(group) or {}, keys)})"

    def group_settings(self, config: dict, group: str) -> str:
        keys = self.differing.get((group, choice_name(config, group)), [])
        return describe(config.get(group) or {}, keys)

    def other_settings(self, config: dict) -> str:
        keys = self.other_keys + (self.outro_keys if outro_enabled(config) else [])
        return describe(settings(config), keys)
