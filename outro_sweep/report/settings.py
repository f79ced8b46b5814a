"""What a cell's resolved config says about it: its settings as labels, its interventions,
the axes of its heatmap, and the identity of its baseline.

The baseline of a cell with an intervention on is the cell ``outro_sweep.cell.baseline``
defines: the same config with every intervention off (the sink rule then does not count; the
judge does: a different judge grades the same answers differently, so such cells are not paired).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from outro_sweep.cell.identity import defines_cell, identity_config  # noqa: F401 (defines_cell: re-exported)
from outro_sweep.interventions.stack import intervention_groups, is_active
from outro_sweep.cell.baseline import baseline_identity, is_baseline

# Keys of config.yaml that are bookkeeping, not settings.
BOOKKEEPING = ("identity", "baseline_identity", "judge_identity")


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


def baseline_of(config: dict) -> str:
    """The identity of the cell's baseline: as the cell recorded it, else derived."""
    return str(config.get("baseline_identity") or baseline_identity(_without_bookkeeping(config)))


def _without_bookkeeping(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in BOOKKEEPING}


def intervention_enabled(config: dict) -> bool:
    """True when some intervention is on (the cell is compared with its baseline)."""
    return not is_baseline(config)


def reads_sinks(config: dict | None) -> bool:
    """True when an active intervention of the cell reads sink positions (OutRo)."""
    groups = intervention_groups(config or {})
    return any(cls.needs_sink_rule and is_active(config[g]) for g, cls in groups.items())


def active_interventions(config: dict) -> list[str]:
    return [group for group in intervention_groups(config) if is_active(config[group])]


def grid_axes(config: dict) -> tuple[str, ...]:
    """(rows, columns) of the cell's heatmap as dotted keys: the sweep axes that its first
    active intervention declares (``outro.layer`` x ``outro.alpha``); () for a baseline."""
    for group, cls in intervention_groups(config).items():
        if is_active(config[group]) and len(cls.sweep_axes) >= 2:
            return tuple(f"{group}.{axis}" for axis in cls.sweep_axes[:2])
    return ()


def axis_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def grid_group_key(config: dict) -> str:
    """Cells that differ only in their grid axes share one heatmap."""
    flat = flatten(settings(config))
    for axis in grid_axes(config):
        flat.pop(axis, None)
    return canonical(flat)


def layer_label(layer) -> str:
    """A grid-row value as a label: 4 -> "4", [4, 8] -> "[4, 8]", "auto", None -> "none"."""
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
    """A setting's value for a label, as the YAML spells it (null, true): paths shortened to their
    last component."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
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


OWN_COLUMNS = ("model", "benchmark", "sink")  # config groups the table shows in their own columns


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
        # Other settings that differ: an intervention's own knobs (besides its grid axes) only
        # among the cells where it is on, where they mean something; everything else (seed,
        # predict, judge, ...) among all cells.
        groups = {g for c in configs for g in intervention_groups(c)}
        flats = [flatten(settings(c)) for c in configs]
        self.other_keys = differing_keys([{k: v for k, v in f.items()
                                           if k.split(".")[0] not in (*OWN_COLUMNS, *groups)} for f in flats])
        self.intervention_keys = differing_keys([
            {k: v for k, v in f.items() if k.split(".")[0] in active_interventions(c)
             and k not in grid_axes(c) and not k.endswith(".enabled")}
            for f, c in zip(flats, configs) if intervention_enabled(c)])

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
        return describe(settings(config), self.other_keys)

    def intervention_settings(self, config: dict) -> str:
        """The active interventions' knobs that differ among the cells, besides the grid axes."""
        active = active_interventions(config)
        return describe(settings(config), [k for k in self.intervention_keys if k.split(".")[0] in active])

    def interventions(self, config: dict) -> str:
        """The active interventions (``outro``, ``outro+sinkrouter``) or ``off``."""
        return "+".join(active_interventions(config)) or "off"


# ----------------------------------------------------------------------------- settings every cell shares


def _is_file_location(value) -> bool:
    """A filesystem path (data_dir, a local model folder): where a file is on this machine, not
    what the setting is (the files' content is in the identity). Hub ids ("Qwen/Qwen2-VL") are names."""
    return isinstance(value, str) and value.startswith(("/", "~", "./", "../"))


def _applies(config: dict, key: str) -> bool:
    """Whether ``key`` means something for this cell: an intervention's knobs only where it is
    on, the sink rule only where an active intervention reads sinks (a baseline has neither)."""
    top = key.split(".", 1)[0]
    groups = intervention_groups(config)
    if top in groups:
        return is_active(config[top])
    if top == "sink":
        return reads_sinks(config)
    return True


def setting_items(config: dict) -> dict:
    """A cell's settings as {dotted key: value}: ``settings(config)`` flattened, a config group's
    ``_target_`` as its choice (``model: smollm2_135m``), interventions' ``enabled`` left out."""
    groups = intervention_groups(config)
    out = {}
    for key, value in flatten(settings(config)).items():
        parts = key.split(".")
        if parts[-1] == "_target_":
            if len(parts) == 2:
                out[parts[0]] = choice_name(config, parts[0])
            else:
                out[key] = str(value).rsplit(".", 1)[-1]
        elif not (len(parts) == 2 and parts[0] in groups and parts[1] == "enabled"):
            out[key] = value
    return out


ABSENT = "<absent>"


def constant_settings(configs: list[dict]) -> dict[str, str]:
    """The settings with one value in every cell, as {dotted key: shown value}, in config order.

    ``configs``: the cells' resolved configs (config.yaml). Keys that do not define a cell
    (``NON_DEFINING_KEYS``) and file locations are left out; an intervention's knobs and the sink
    rule count among the cells where they apply (so ``outro.temperature`` is shared when every
    OutRo cell has it, whatever the baseline says). A key missing from some cell it applies to
    varies. {} for no configs."""
    items = [setting_items(c) for c in configs]
    keys = list(dict.fromkeys(k for item in sorted(items, key=len, reverse=True) for k in item))  # fullest first
    shared = {}
    for key in keys:
        values = [item.get(key, ABSENT) for item, config in zip(items, configs) if _applies(config, key)]
        if not values or ABSENT in values or any(_is_file_location(v) for v in values):
            continue
        if len({canonical(v) for v in values}) == 1:
            shared[key] = short_value(values[0])
    return shared


def _grouped(shared: dict[str, str], named: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(head, knobs) per top-level key: ("model=smollm2_135m", "dtype=float32, ..."), ("seed=0", ""),
    ("predict", "batch_size=2"). A group in ``named`` (its choice is named elsewhere) heads as its name."""
    by_top: dict[str, list[tuple[str, str]]] = {}
    for key, value in shared.items():
        top, _, rest = key.partition(".")
        by_top.setdefault(top, []).append((rest, value))
    out = []
    for top, entries in by_top.items():
        choice = next((v for rest, v in entries if not rest), None)
        head = top if choice is None or top in named else f"{top}={choice}"
        out.append((head, ", ".join(f"{rest}={v}" for rest, v in entries if rest)))
    return out


def settings_summary(shared: dict[str, str], named: tuple[str, ...] = ()) -> str:
    """One compact line for a figure title: ``model=smollm2_135m (dtype=float32, ...) · seed=0 ·
    predict (batch_size=2)``; groups in ``named`` (the title names their choice) show only their knobs."""
    parts = []
    for head, knobs in _grouped(shared, named):
        if knobs:
            parts.append(f"{head} ({knobs})")
        elif head not in named:
            parts.append(head)
    return " · ".join(parts)


def wrapped_summary(shared: dict[str, str], width: int, named: tuple[str, ...] = ()) -> str:
    """``settings_summary`` prefixed ``shared by every cell:`` and wrapped to ``width`` characters."""
    import textwrap

    text = settings_summary(shared, named)
    return textwrap.fill("shared by every cell: " + text, width=width, break_long_words=False) if text else ""


def settings_lines(shared: dict[str, str]) -> list[str]:
    """The markdown block at the top of table.md: one line per config group."""
    lines = ["## Settings shared by every cell", ""]
    if not shared:
        return lines + ["No setting has the same value in every cell.", ""]
    lines += ["An intervention's knobs and the sink rule count among the cells where they apply; file locations "
              "and keys that do not define a cell (output folders, logging) are left out.", ""]
    for head, knobs in _grouped(shared):
        lines.append(f"- **{head}**" + (f": {knobs}" if knobs else ""))
    return lines + [""]
