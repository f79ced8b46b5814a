"""``python -m outro_sweep.fit`` as a user runs it, in subprocesses, on the tiny random
Qwen2.5-VL of tiny_vlms.py (saved as a model folder) with the real NExT-QA annotations and
stand-in clips for their first videos; V-sinks from the real VisionSinkProbe.

- the fit trains (Lightning Trainer.fit) and writes gate.pt and gate.json under
  <output_dir>/gates/<identity>/, the record naming the training files' sha256;
- a fit SIGKILLed after its first checkpoint, rerun with the same keys (another output folder is
  not another gate: paths are not part of the identity, so the kill's folder is reused here),
  resumes from last.ckpt and ends with the same gate weights as an uninterrupted fit;
- the job_type=fit W&B run, decoded from its offline file, holds the loss curve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests import tiny_vlms
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # real fits and cells through the command line, in subprocesses
# Enough epochs that the kill (polled every 20 ms, on a loaded machine) lands well before the end.
LIMIT, EPOCHS, BATCH = 4, 16, 2
STEPS = EPOCHS * LIMIT // BATCH
GATE_LAYER = 1  # the gate reads layer 1's output and scales the keys at layer 2


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lsg_fit")
    model = tiny_vlms.save("qwen2_5_vl", tmp / "model")
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp, LIMIT)
    args = ["model=qwen2_5_vl_7b", f"model.path={model}", "model.num_frames=4", "model.fps=null",
            "model.min_pixels=784", "model.max_pixels=3136", "model.dtype=float32", "benchmark@fit.data=nextqa_mc",
            f"fit.data.data_dir={data_dir}", f"fit.data.video_dir={video_dir}", f"fit.data.limit={LIMIT}",
            f"fit.batch_size={BATCH}", f"fit.epochs={EPOCHS}", f"lsg.layer={GATE_LAYER}", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", f"paths.cache_dir={tmp / 'cache'}"]
    return {"tmp": tmp, "args": args, "data_dir": data_dir}


def command(setup, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "outro_sweep.fit", *setup["args"], f"paths.output_dir={out}",
            f"hydra.run.dir={out / 'run'}", *extra]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}


def fit(setup, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command(setup, out, *extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def only_gate(out: Path) -> Path:
    (folder,) = (out / "gates").iterdir()
    return folder


@pytest.fixture(scope="module")
def uninterrupted(setup) -> Path:
    out = setup["tmp"] / "straight"
    fit(setup, out)
    return only_gate(out)


def test_a_fit_trains_the_gate_and_records_its_data(setup, uninterrupted):
    saved = torch.load(uninterrupted / "gate.pt", weights_only=True)
    record = json.loads((uninterrupted / "gate.json").read_text())
    assert saved["record"] == record and record["identity"] == uninterrupted.name
    assert record["layer"] == 1 and record["scale"] == "two_rho" and len(record["losses"]) == STEPS
    from outro_sweep.files.fingerprint import sha256_file

    assert record["data_files"] == {name: sha256_file(setup["data_dir"] / name)
                                    for name in ("val.csv", "map_vid_vidorID.json")}
    assert any(saved["state_dict"]["out.weight"].abs().flatten() > 0)  # trained away from its zero start


def test_a_killed_fit_resumes_to_the_same_gate(setup, uninterrupted):
    out = setup["tmp"] / "killed"
    process = subprocess.Popen(command(setup, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(out.glob("gates/*/checkpoints/last.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    folder = only_gate(out)
    assert folder.name == uninterrupted.name
    assert not (folder / "gate.pt").exists(), "the fit ended before the kill: the test needs more epochs"
    resumed = fit(setup, out)
    assert "resuming gate" in resumed.stdout + resumed.stderr
    straight = torch.load(uninterrupted / "gate.pt", weights_only=True)["state_dict"]
    again = torch.load(folder / "gate.pt", weights_only=True)["state_dict"]
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    losses = json.loads((folder / "gate.json").read_text())["losses"]
    assert losses == json.loads((uninterrupted / "gate.json").read_text())["losses"]


def test_the_fit_run_holds_the_loss_curve(uninterrupted):
    (path,) = find_runs(uninterrupted / "wandb")
    run = read_run(path)
    assert run.job_type == "fit"
    losses = [row["train/loss"] for row in run.history if "train/loss" in row]
    record = json.loads((uninterrupted / "gate.json").read_text())
    assert len(losses) == STEPS
    assert losses == pytest.approx(record["losses"], abs=1e-6)


def test_a_second_fit_with_the_same_keys_finds_the_gate_done(setup, uninterrupted):
    result = fit(setup, uninterrupted.parent.parent)
    assert f"gate {uninterrupted.name} is already trained" in result.stdout


# ---- lsg=trained: a sweep cell with the trained gate --------------------------------------
def cell(setup, out: Path, *extra: str) -> subprocess.CompletedProcess:
    model_args = [a for a in setup["args"] if a.startswith(("model", "paths", "trainer"))]
    data = [a.replace("fit.data.", "benchmark.") for a in setup["args"] if a.startswith("fit.data.")]
    return subprocess.run([sys.executable, "-m", "outro_sweep", "outro=off", "lsg=trained", *model_args,
                           "benchmark=nextqa_mc", *data, "benchmark.scoring=logits", "predict.batch_size=2",
                           "logger.mode=disabled", f"paths.output_dir={out}", f"hydra.run.dir={out / 'cellrun'}",
                           *extra], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def test_a_cell_on_the_gate_s_training_files_is_refused_in_one_line(setup, uninterrupted):
    out = uninterrupted.parent.parent
    result = cell(setup, out, f"lsg.gates=[{uninterrupted.name}]")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert all(needle in lines[0] for needle in ("lsg.gates", uninterrupted.name, "val.csv", "lsg.force_overlap=true"))
    assert not (out / "cells").exists()


def test_a_forced_cell_runs_with_the_gate_and_its_identity_holds_the_gate_s_hash(setup, uninterrupted):
    from outro_sweep.files.fingerprint import sha256_file

    out = uninterrupted.parent.parent
    result = cell(setup, out, f"lsg.gates=[{uninterrupted / 'gate.pt'}]", "lsg.force_overlap=true")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (folder,) = (out / "cells").iterdir()
    assert (folder / "DONE").is_file()
    from omegaconf import OmegaConf

    inputs = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))["identity_inputs"]
    assert inputs["config"]["lsg"]["gates"] == [sha256_file(uninterrupted / "gate.pt")]
    assert "gates_dir" not in inputs["config"]["lsg"]
    records = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == LIMIT
    # per sample: the trained gate's weights and the V-/L-sink counts at layers 0..the gate layer
    for record in records:
        gate = record["diagnostics"]["lsg"]
        assert abs(gate["rho_vsink"] + gate["rho_rest"] - 1.0) < 1e-5
        assert set(gate["lsinks"]) == {str(layer) for layer in range(GATE_LAYER + 1)}
    summary = json.loads((folder / "metrics.json").read_text())["diagnostics"]["lsg"]
    assert summary["samples"] == LIMIT and set(summary["mean_lsinks_per_layer"]) == set(gate["lsinks"])
