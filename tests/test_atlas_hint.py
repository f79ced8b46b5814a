"""The atlas as a cell reads it (outro_sweep.atlas.hint): from an atlas.json written here."""

from __future__ import annotations

import json

from outro_sweep.atlas.hint import sinkless_layers_line


def write_atlas(root, model: str, identity: str, rate: list[float]) -> None:
    folder = root / "atlas" / model / identity
    folder.mkdir(parents=True)
    atlas = {"rules": {"rules": {"massive_activation": {"rate": rate}}}, "suggestion": {"min_rate": 0.5}}
    (folder / "atlas.json").write_text(json.dumps(atlas))


def test_layers_below_the_atlas_min_rate_are_named(tmp_path):
    write_atlas(tmp_path, "m", "a1", [0.0, 0.25, 0.5, 1.0, 1.0])
    line = sinkless_layers_line(tmp_path, "m", "massive_activation", {"outro": [0, 1, 2, 3]})
    assert line.startswith("outro acts on sinks at layer 0, 1, where the atlas ")
    assert "sinks start at layer 2" in line and "in 50% of its prompts" in line


def test_nothing_to_say_without_an_atlas_a_rule_or_a_sinkless_layer(tmp_path):
    assert sinkless_layers_line(tmp_path, "m", "massive_activation", {"outro": [0]}) is None  # no atlas
    write_atlas(tmp_path, "m", "a1", [1.0, 1.0])
    assert sinkless_layers_line(tmp_path, "m", "massive_activation", {"outro": [0, 1]}) is None
    assert sinkless_layers_line(tmp_path, "m", "first_k", {"outro": [0]}) is None  # the atlas has no such rule
    assert sinkless_layers_line(tmp_path, "m", "massive_activation", {}) is None
