"""A grouped sweep gives every cell exactly what that cell gives alone, and does the shared work
once: ``python -m outro_sweep -m`` in subprocesses, the basic launcher (one process for the
sweep), real models.

- text: real SmolLM2, OutRo on and off, two sink rules whose first changed layers differ
  (first_k changes layer 0, massive_activation only where sinks appear), generated answers;
- video: the tiny random Qwen2.5-VL of tiny_vlms.py behind the real Qwen2.5-VL processor, real
  NExT-QA annotations with generated clips, OutRo and LSG's oracle gate (which reads the tower's
  V-sinks) in one group;
- "alone" is the same sweep with ``group.share=false``: every cell loads its own model and
  computes everything itself; the grouped sweep runs with ``group.verify=1`` (each cell's first
  batch that would replay is run and compared with the replay instead, bit for bit);
- predictions.jsonl and metrics.json are compared cell by cell: every field but the measured
  times (``seconds_per_sample``, ``speed``); answers token for token, logits and diagnostics
  within 1e-5; where the frames came from (``video_cache``) alike too (a clip kept in memory is a
  cache hit, as the frame cache on disk gives the next cells run alone);
- the counters each job writes (``sharing.json``: the process's cumulative work) show one model
  load, one decode and one tower run per clip for the whole group.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_vlms

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # whole sweeps, twice, in subprocesses
TIMED = ("seconds_per_sample", "speed")  # measured, not computed: differ run to run
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}


def sweep(out: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "outro_sweep", "-m", *args, "logger.mode=disabled",
                             f"paths.output_dir={out}", f"hydra.sweep.dir={out / 'sweep'}"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def cells(out: Path) -> dict[str, Path]:
    return {folder.name: folder for folder in (out / "cells").iterdir() if (folder / "DONE").is_file()}


def counters(out: Path) -> dict:
    """The process's cumulative counts after its last cell (the basic launcher: one process)."""
    jobs = sorted((out / "sweep").glob("*/sharing.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    return json.loads(jobs[-1].read_text())


def close(a, b, path: str = "") -> None:
    """Equal, with floats within 1e-5."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), path
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-5, f"{path}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: {sorted(a)} != {sorted(b)}"
        for key in a:
            close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{index}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_cells(grouped: Path, alone: Path, expected: int) -> None:
    found, reference = cells(grouped), cells(alone)
    assert len(found) == expected and found.keys() == reference.keys()
    for identity in found:
        rows = [json.loads(line) for line in (found[identity] / "predictions.jsonl").read_text().splitlines()]
        again = [json.loads(line) for line in (reference[identity] / "predictions.jsonl").read_text().splitlines()]
        close(rows, again, identity)
        metrics = json.loads((found[identity] / "metrics.json").read_text())
        solo = json.loads((reference[identity] / "metrics.json").read_text())
        for key in TIMED:
            metrics.pop(key, None), solo.pop(key, None)
        close(metrics, solo, f"{identity}/metrics")


TEXT = ["benchmark.limit=6", "predict.batch_size=3", "benchmark.max_new_tokens=4", "sink=massive_activation,first_k", "outro.layer=1,12",
        "outro.alpha=0.3"]


def test_a_grouped_text_sweep_equals_its_cells_alone_with_one_model_load(tmp_path):
    grouped, alone = tmp_path / "grouped", tmp_path / "alone"
    sweep(grouped, *TEXT, "group.verify=1")
    sweep(alone, *TEXT, "group.share=false")
    assert_same_cells(grouped, alone, expected=5)  # 2 rules x 2 layers + the shared baseline
    shared, separate = counters(grouped), counters(alone)
    assert shared["model_loads"] == 1 and separate["model_loads"] == 5
    assert shared["verified_prefills"] > 0  # the replay was checked, and found right
    # No two of the 5 cells compute a batch alike throughout, so each keeps each of the 2 batches;
    # the massive_activation cells replay up to their first sink layer (the baseline's, then each
    # other's), the first_k ones (sinks at layer 0) only from each other, up to the first layer
    # where their relaxations differ.
    assert shared["prefill_records"] == 2 * 5
    assert shared.get("prefix_layers_replayed", 0) > 0 and "prefix_layers_replayed" not in separate
    # each recorded prefill's decode steps are kept too; a cell replays those whose token history it shares
    assert shared["decode_records"] == 2 * 5 * 3  # 2 batches x 5 cells x (4 tokens - 1) decode steps
    assert shared.get("decode_layers_replayed", 0) > 0 and "decode_layers_replayed" not in separate


@pytest.fixture(scope="module")
def video_setup(shared_data, tmp_path_factory) -> dict:
    import csv

    tmp = tmp_path_factory.mktemp("group_video")
    model = tiny_vlms.save("qwen2_5_vl", tmp / "model")
    limit = 4
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp, limit, distinct=True)
    with open(data_dir / "val.csv", newline="") as handle:
        clips = len({row["video"] for row in list(csv.DictReader(handle))[:limit]})
    args = ["model=qwen2_5_vl_7b", f"model.path={model}", "model.num_frames=4", "model.fps=null",
            "model.min_pixels=784", "model.max_pixels=3136", "model.dtype=float32", "benchmark=nextqa_mc",
            f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}", f"benchmark.limit={limit}",
            "benchmark.scoring=logits", "predict.batch_size=1", "trainer.accelerator=cpu",
            "outro=default,off", "lsg=off,oracle", "lsg.layer=1", "outro.layer=1"]
    return {"tmp": tmp, "args": args, "clips": clips, "questions": limit}


def test_a_grouped_video_sweep_equals_its_cells_alone_and_runs_the_tower_once_per_clip(video_setup):
    tmp, args = video_setup["tmp"], video_setup["args"]
    grouped, alone = tmp / "grouped", tmp / "alone"
    sweep(grouped, *args, f"paths.cache_dir={tmp / 'cache_grouped'}", "group.verify=1")
    sweep(alone, *args, "group.share=false", f"paths.cache_dir={tmp / 'cache_alone'}")
    assert_same_cells(grouped, alone, expected=4)  # outro x lsg, the baseline among them
    shared = counters(grouped)
    clips, questions = video_setup["clips"], video_setup["questions"]
    assert shared["model_loads"] == 1
    # decoded once per clip; every other use (a second question on a clip, the other 3 cells) from memory
    assert shared["clip_decodes"] == clips and shared.get("clip_reads", 0) == 0
    assert shared["clip_reuses"] == 4 * questions - clips
    assert shared["tower_runs"] == clips  # batch size 1: one tower call per question, computed once per clip
    assert shared["tower_runs"] + shared["tower_reuses"] == 4 * questions
    separate = counters(alone)
    assert separate["model_loads"] == 4 and separate.get("tower_reuses", 0) == 0


CLOZE = ["benchmark.limit=6", "predict.batch_size=3", "benchmark.scoring=cloze", "outro=default,off",
         "outro.alpha=3", "sinkrouter=off,default", "sinkrouter.threshold=0.3"]


def test_a_grouped_cloze_sweep_equals_its_cells_alone(tmp_path):
    """Cloze cells replay each other's prefills and their option forwards (decode forwards of
    several tokens each, after a prefill that each option continues) and still equal their runs alone."""
    grouped, alone = tmp_path / "grouped", tmp_path / "alone"
    sweep(grouped, *CLOZE, "group.verify=1")
    sweep(alone, *CLOZE, "group.share=false")
    assert_same_cells(grouped, alone, expected=4)  # outro x sinkrouter, the baseline among them
    shared = counters(grouped)
    assert shared["model_loads"] == 1
    assert shared.get("prefix_layers_replayed", 0) > 0 and shared.get("decode_layers_replayed", 0) > 0
