"""The atlas cached by identity, like a cell: ``<paths.output_dir>/atlas/<model name>/<identity>/``.

The identity hashes (``outro_sweep.cell.identity``) the model and its files, the benchmark, its
files and its question selection, the atlas settings and every sink rule's YAML; not where
files go or how the run is logged. ``atlas.json`` is written last (atomically), so a folder
with one holds a whole atlas; a second call with the same identity reads it and runs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from outro_sweep.cell.identity import canonical_numbers, hash_inputs, identity_inputs
from outro_sweep.files.atomic import write_json_atomic

ATLAS_VERSION = 1  # the version of what the atlas computes: a change re-computes every atlas
ATLAS_FILE = "atlas.json"


def atlas_identity(config: dict, rules: dict[str, dict]) -> str:
    """``config``: the resolved atlas config (plain dict); ``rules``: every sink rule's YAML."""
    kept = {key: config[key] for key in ("model", "benchmark", "atlas", "sink", "paths") if key in config}
    inputs = identity_inputs(kept)
    inputs["atlas_version"] = ATLAS_VERSION
    inputs["sink_rules"] = rules
    # The suggestion's rule (a cell's identity leaves the sink rule out when no intervention reads it).
    inputs["config"]["sink"] = canonical_numbers(config.get("sink"))
    return hash_inputs(inputs)


def atlas_dir(output_dir: str | Path, model_name: str, identity: str) -> Path:
    return Path(output_dir) / "atlas" / model_name / identity


def load(directory: Path) -> dict | None:
    path = directory / ATLAS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save(directory: Path, atlas: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / ATLAS_FILE, atlas)
