"""What a cell learns from its model's atlas before it runs: the layers at which an active
intervention acts on sinks (OutRo's relaxation layers) that the atlas found no sink at, under
the cell's own sink rule. One log line; the cell still runs (the atlas is a sample of prompts,
the cell's questions may differ).

The atlas read is the newest ``<paths.output_dir>/atlas/<model name>/*/atlas.json``; without
one the cell says nothing. Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from outro_sweep.atlas.store import ATLAS_FILE
from outro_sweep.atlas.suggest import sink_layers


def newest_atlas(output_dir: str | Path, model_name: str) -> tuple[Path, dict] | None:
    found = sorted(Path(output_dir, "atlas", model_name).glob(f"*/{ATLAS_FILE}"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            return path.parent, json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # a damaged atlas says nothing; an older one may
            continue
    return None


def sinkless_layers_line(output_dir: str | Path, model_name: str, rule_name: str,
                         layers_by_group: dict[str, list[int]]) -> str | None:
    """``layers_by_group``: {intervention group: the layers it acts on sinks at}. The log line
    naming, per group, those layers the atlas found no sink at under ``rule_name`` (a share of
    its prompts below the atlas's ``min_rate``); None when there is nothing to say."""
    if not any(layers_by_group.values()):
        return None
    found = newest_atlas(output_dir, model_name)
    if found is None:
        return None
    directory, atlas = found
    rule = atlas.get("rules", {}).get("rules", {}).get(rule_name)
    if rule is None:
        return None
    min_rate = atlas.get("suggestion", {}).get("min_rate", 0.5)
    with_sinks = set(sink_layers(rule["rate"], min_rate))
    parts = []
    for group, layers in layers_by_group.items():
        missing = [layer for layer in layers if layer not in with_sinks]
        if missing:
            parts.append(f"{group} acts on sinks at layer {', '.join(map(str, missing))}, where")
    if not parts:
        return None
    first = min(with_sinks) if with_sinks else None
    where = f"sinks start at layer {first}" if first is not None else "no layer has sinks"
    return (f"{'; '.join(parts)} the atlas {directory} found no sink under sink={rule_name} in {min_rate:.0%} of "
            f"its prompts ({where}): those layers will change nothing")
