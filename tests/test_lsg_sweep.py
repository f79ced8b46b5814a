"""An LSG oracle sweep end to end: ``python -m outro_sweep -m outro=off lsg=oracle
lsg.layer=0,1 lsg.rho_vsink=0,0.5,1`` on the tiny random Qwen2.5-VL of tiny_vlms.py (saved as a
model folder), the real NExT-QA annotations and stand-in clips for their first videos, in a
subprocess: 6 cells plus the baseline the sweeper adds, and the report's layer x rho_vsink
heatmap, whose numbers are recomputed here from each cell's predictions.jsonl.

The command runs as a user runs it: the V-sinks come from the real VisionSinkProbe on the tiny
model's vision tower (``model.vsink_dims: auto``); a random tower may have none, and the gate
still scales the other visual tokens' keys by 2(1 - rho_vsink), so only rho_vsink = 0.5 is the
stock model.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests import tiny_vlms

REPO = Path(__file__).resolve().parents[1]
LIMIT = 4
SMALL = ["model.num_frames=4", "model.fps=null", "model.min_pixels=784", "model.max_pixels=3136",
         "model.dtype=float32"]

ENTRY = textwrap.dedent("""\
    import sys
    sys.path.insert(0, {tests!r})
    from outro_sweep.__main__ import main
    sys.argv = ["outro_sweep", *sys.argv[1:]]
    main()
""")


@pytest.fixture(scope="module")
def sweep(shared_data, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lsg_sweep")
    model = tiny_vlms.save("qwen2_5_vl", tmp / "model")
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp, LIMIT)
    entry = tmp / "entry.py"
    entry.write_text(ENTRY.format(tests=str(REPO / "tests")))
    out = tmp / "out"
    args = ["-m", "outro=off", "lsg=oracle", "lsg.layer=0,1", "lsg.rho_vsink=0,0.5,1", "model=qwen2_5_vl_7b",
            f"model.path={model}", *SMALL, "benchmark=nextqa_mc", f"benchmark.data_dir={data_dir}",
            f"benchmark.video_dir={video_dir}", f"benchmark.limit={LIMIT}", "benchmark.scoring=logits",
            "predict.batch_size=2", "logger.mode=disabled", f"paths.output_dir={out}",
            f"paths.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={tmp / 'sweep'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(entry), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1500)
    return {"result": result, "out": out, "report": tmp / "sweep" / "report"}


def predictions(cell: Path) -> dict[str, dict]:
    lines = (cell / "predictions.jsonl").read_text().splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


@pytest.mark.slow
def test_an_oracle_sweep_runs_with_its_baseline_and_its_layer_by_rho_heatmap(sweep):
    result = sweep["result"]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 7 succeeded, 0 skipped (already done), 0 failed, of 7 cells" in result.stdout
    cells = {c.name: c for c in (sweep["out"] / "cells").iterdir()}
    configs = {name: OmegaConf.to_container(OmegaConf.load(c / "config.yaml")) for name, c in cells.items()}
    [baseline] = [name for name, config in configs.items() if config["lsg"]["enabled"] is False]
    base = predictions(cells[baseline])
    with open(sweep["report"] / "table.csv", newline="") as handle:
        table = {row["identity"]: row for row in csv.DictReader(handle)}
    grid = set()
    for name, config in configs.items():
        if name == baseline:
            continue
        row, mine = table[name], predictions(cells[name])
        assert row["interventions"] == "lsg" and row["baseline"] == baseline == config["baseline_identity"]
        grid.add((row["grid_row"], float(row["grid_column"])))
        assert row["grid_row"] == str(config["lsg"]["layer"])
        assert float(row["grid_column"]) == config["lsg"]["rho_vsink"]
        # the heatmap's number: the paired accuracy difference, recomputed from the predictions
        shared = [i for i in mine if i in base]
        assert len(shared) == LIMIT
        b = sum(1 for i in shared if base[i]["correct"] and not mine[i]["correct"])
        c = sum(1 for i in shared if mine[i]["correct"] and not base[i]["correct"])
        assert float(row["diff"]) == pytest.approx((c - b) / len(shared))
        assert float(row["accuracy"]) == pytest.approx(sum(mine[i]["correct"] for i in shared) / len(shared))
        # per sample: the gate's weights and the tokens it scaled (the random tower has no massive
        # dimension, so the probe finds no V-sink; planted ones: test_vision_sinks.py)
        for record in mine.values():
            lsg = record["diagnostics"]["lsg"]
            assert lsg["rho_vsink"] == config["lsg"]["rho_vsink"] and lsg["rho_rest"] == 1 - lsg["rho_vsink"]
            assert lsg["vsinks"] == 0 and lsg["visual"] > 2
        same_scores = all(mine[i]["logits"] == base[i]["logits"] for i in shared)
        if config["lsg"]["rho_vsink"] == 0.5:  # two_rho at 0.5 is the identity: the baseline's option scores
            assert same_scores and float(row["diff"]) == 0
        else:  # the gate acts (the tiny random model's answers may still all agree with the baseline's)
            assert not same_scores
    assert grid == {(layer, rho) for layer in ("0", "1") for rho in (0.0, 0.5, 1.0)}
    heatmaps = list(sweep["report"].glob("heatmap_*.png"))
    assert len(heatmaps) == 1
    assert "| lsg.layer | lsg.rho_vsink |" in (sweep["report"] / "table.md").read_text()
