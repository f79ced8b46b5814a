"""Scoring after prediction: ``python -m outro_sweep.rescore`` re-scores a finished cell from its
raw records without loading any model, and the prompt hash guards resume.

A real cell runs first (the CLI in a subprocess: tiny random Llama with SmolLM2's real
tokenizer, W&B offline); the rescoring then runs in this process, where every model loader is
made to raise, so that loading a model would fail the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from outro_sweep import rescore
from outro_sweep.errors import ConfigError
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def done_cell(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("rescore")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "outro_sweep", "model=hf_causal_lm", f"model.path={tiny_model_dir}",
         "benchmark.limit=6", "benchmark.max_new_tokens=4", "predict.batch_size=4", "logger.mode=offline",
         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"paths.output_dir={out}",
         f"hydra.run.dir={out / 'job'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (out / "job" / "cell").resolve()


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model (or a tokenizer/processor) raises."""
    from outro_sweep.models.base import ModelLoader
    from outro_sweep.models.video_lm import VideoLMLoader

    def refuse(*args, **kwargs):
        raise AssertionError("rescore loaded a model")

    for cls in (ModelLoader, VideoLMLoader):
        monkeypatch.setattr(cls, "load", refuse)
        monkeypatch.setattr(cls, "load_processor", refuse)


def test_unchanged_scorer_leaves_the_cell_byte_identical(done_cell, no_model, capsys):
    files = {name: (done_cell / name).read_bytes() for name in ("metrics.json", "predictions.jsonl", "DONE")}
    assert rescore.main([str(done_cell)]) == 0
    assert "metrics unchanged" in capsys.readouterr().out
    for name, content in files.items():
        assert (done_cell / name).read_bytes() == content, name


def test_a_changed_letter_parser_changes_the_metrics_without_a_model(done_cell, no_model, monkeypatch):
    from outro_sweep.scoring import answers

    records = [json.loads(line) for line in (done_cell / "predictions.jsonl").read_text().splitlines()]
    before = json.loads((done_cell / "metrics.json").read_text())
    # A parser that reads every answer as "A": the spec of the new numbers, in a plain loop.
    monkeypatch.setattr(answers, "parse_choice", lambda text, letters: "A")
    expected_correct = sum(1 for r in records if r["target"] == "A")
    assert expected_correct != before["correct"] or before["invalid"] > 0  # the test can tell the difference
    job_dir = done_cell.parent.parent / "job"
    assert rescore.main([str(job_dir)]) == 0  # a job folder: its ``cell`` link
    after = json.loads((done_cell / "metrics.json").read_text())
    assert after["correct"] == expected_correct and after["n"] == len(records) and after["invalid"] == 0
    rescored = [json.loads(line) for line in (done_cell / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rescored] == ["A"] * len(records)
    assert [r["output"] for r in rescored] == [r["output"] for r in records]  # raw outputs untouched
    assert json.loads((done_cell / "DONE").read_text())["accuracy"] == after["accuracy"]
    # The cell's W&B run (id = identity) got the new summary.
    newest = max(find_runs(done_cell), key=lambda p: p.stat().st_mtime_ns)
    run = read_run(newest)
    assert run.run_id == done_cell.name and run.summary["correct"] == expected_correct


def test_rescore_of_nothing_is_one_line(tmp_path, capsys):
    assert rescore.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: no cell under")


# ----------------------------------------------------------------------------- the prompt hash


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from tests import tiny_vlms

    return Path(tiny_vlms.save("qwen2_5_vl", tmp_path_factory.mktemp("tiny_qwen_hash")))


def video_hash(model_path: Path, question, **settings) -> str:
    """The prompt_hash the collator gives ``question`` (an item whose clip failed: no frames needed)."""
    from outro_sweep.models.base import LoadedModel
    from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
    from outro_sweep.predict.data import Collator, Item

    loader = Qwen2_5VL(path=str(model_path), name="tiny", **settings)
    loaded = LoadedModel(None, loader.load_processor(), loader, "tiny")
    batch = Collator(loaded)([Item(0, question, error="unreadable")])
    assert batch["inputs"] is None and len(batch["failed"]) == 1
    return batch["prompt_hashes"][0]


def test_video_prompt_hash_covers_system_prompt_and_instruction(tiny_qwen, monkeypatch, tmp_path):
    from outro_sweep.benchmarks import prompting
    from outro_sweep.benchmarks.base import ask
    from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
    from outro_sweep.predict.run import _check_resumable
    from outro_sweep.predict.shards import read_shard_set, write_shard

    question = ask("q/0", "What is the man holding?", (), "a cup", "open", video="v.mp4")
    plain = video_hash(tiny_qwen, question)
    assert video_hash(tiny_qwen, question) == plain  # deterministic
    assert video_hash(tiny_qwen, question, system_prompt="Answer tersely.") != plain
    monkeypatch.setattr(prompting, "SHORT_ANSWER_INSTRUCTION", "Answer in one sentence.")
    reworded = ask("q/0", "What is the man holding?", (), "a cup", "open", video="v.mp4")
    assert reworded.prompt != question.prompt and video_hash(tiny_qwen, reworded) != plain

    # Shards made under the stock system prompt; the cell now renders with another one.
    cell_dir = tmp_path / "cells" / "abc"
    write_shard(cell_dir / "shards", [{"index": 0, "id": "q/0", "prompt_hash": plain, "output": "cup"}], rank=0)
    found = read_shard_set(cell_dir / "shards")
    _check_resumable(found, [question], Qwen2_5VL(path=str(tiny_qwen), name="tiny"), cell_dir)  # same prompt: fine
    with pytest.raises(ConfigError) as err:
        _check_resumable(found, [question], Qwen2_5VL(path=str(tiny_qwen), name="tiny", system_prompt="Be brief."),
                         cell_dir)
    message = str(err.value)
    assert "\n" not in message and str(cell_dir) in message and "model.system_prompt" in message
    assert plain in message
