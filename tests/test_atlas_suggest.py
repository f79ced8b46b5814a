"""The suggestion (outro_sweep.atlas.suggest) from per-layer rates, and the CLI's one-line
refusals before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from outro_sweep.atlas.suggest import lines, suggest

REPO = Path(__file__).resolve().parents[1]


def atlas_of(rates: dict[str, list[float]], dims: list[int]) -> dict:
    layers = len(next(iter(rates.values())))
    return {"rules": {"rules": {name: {"rate": rate} for name, rate in rates.items()}},
            "massive": {"median": [1.0] * layers}, "dims": {"dims": dims}}


def test_layers_with_sinks_in_most_prompts_step_apart_inside_the_scan_range():
    #       layer:             0    1    2    3    4    5    6    7    8    9
    rate = {"massive_activation": [0.0, 0.4, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
            "first_k": [1.0] * 10}
    found = suggest(atlas_of(rate, [7]), "massive_activation", "m", min_rate=0.5, count=3, step=2)
    assert found["first_layer"] == {"massive_activation": 2, "first_k": 0}
    assert found["relax_layers"] == [2, 4, 6]  # 3 is too close to 2; 8 and 9 are beyond OutRo's scan (0..7)
    assert found["line"] == "sinks from layer 2: try outro.layer=2,4,6 (massive_activation); sink dims [7]"
    assert found["command"] == "python -m outro_sweep -m model=m sink=massive_activation outro.layer=2,4,6"
    fewer = suggest(atlas_of(rate, []), "massive_activation", "m", min_rate=0.9, count=5, step=1)
    assert fewer["relax_layers"] == [3, 4, 6, 7] and fewer["first_layer"]["massive_activation"] == 3


def test_no_sinks_says_so_and_suggests_no_command():
    found = suggest(atlas_of({"massive_activation": [0.0] * 6}, []), "massive_activation", "m", 0.5, 3, 2)
    assert found["relax_layers"] == [] and found["command"] == ""
    assert lines(found) == [found["line"], "first layer with sinks: massive_activation none"]
    assert found["line"] == "no layer has sinks under massive_activation in 50% of the prompts; sink dims []"


@pytest.mark.parametrize("args, expected", [
    (["atlas.eps=1.5"], "atlas.eps"),
    (["atlas.min_rate=0"], "atlas.min_rate"),
    (["model=nosuchmodel"], "nosuchmodel"),
    (["sink=sink_dims", "model.sink_dims=[]"], "sink.dims"),
    (["+model.temperature=1"], "model.temperature"),
    (["benchmark.limit=4", "benchmark.sample=4"], "benchmark."),
])
def test_cli_refuses_in_one_line(tmp_path, args, expected):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-m", "outro_sweep.atlas", *args, f"paths.output_dir={tmp_path}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "valid" in lines[0]
    assert not (tmp_path / "atlas").exists() or not list((tmp_path / "atlas").rglob("atlas.json"))
