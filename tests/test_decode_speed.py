"""Decode speed as a cell metric: the timer inside generate, the shard headers that carry its
sums, metrics.json's ``speed`` and the W&B summary.

The model is the real SmolLM2-135M; the cells run through ``python -m outro_sweep`` in
subprocesses on the built-in questions with ``scoring=generate`` (the only scoring that
decodes). The W&B server cannot exist here: runs are offline and their files decoded
(``tests/wandb_offline.py``). There is no GPU here, so the synchronise is exercised on the CPU,
where it is a no-op; the stamps' order and token counts do not depend on it.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml
from transformers import StoppingCriteriaList

from outro_sweep.predict.decode_timer import DecodeTimer
from outro_sweep.predict.shards import generate_timing, read_shard_set
from outro_sweep.predict.speed import TIMING_KEYS, speed_metrics
from tests.cell_runs import run_cli
from tests.wandb_offline import find_runs, read_run

CELL = ["benchmark.limit=4", "benchmark.scoring=generate", "benchmark.max_new_tokens=6", "predict.batch_size=2",
        "outro=off", "trainer.enable_progress_bar=false"]


def _prompts(smollm2, texts: list[str]) -> dict:
    return smollm2.tokenizer(texts, return_tensors="pt", padding=True)


def test_the_timer_counts_every_decode_step_of_every_row_and_changes_no_token(smollm2):
    inputs = _prompts(smollm2, ["The capital of France is", "One, two, three, four, five,"])  # left-padded
    rows, width = inputs["input_ids"].shape
    arguments = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, temperature=None, top_p=None, top_k=None,
                     pad_token_id=smollm2.tokenizer.pad_token_id)
    with torch.inference_mode():
        plain = smollm2.model.generate(**inputs, **arguments)
        timer = DecodeTimer(torch.device("cpu"), rows, int(inputs["attention_mask"].sum()))
        timed = smollm2.model.generate(**inputs, **arguments, stopping_criteria=StoppingCriteriaList([timer]))
    assert torch.equal(plain, timed)  # the timer never stops generation nor changes a token
    assert timed.shape[1] - width == 5 == timer.steps  # one stamp per generated token
    sums = timer.sums()
    assert set(sums) == set(TIMING_KEYS)
    assert sums["decode_tokens"] == (5 - 1) * rows  # the first token comes out of the prefill
    assert sums["prefill_tokens"] == int(inputs["attention_mask"].sum()) < rows * width  # pads are not counted
    assert sums["prefill_seconds"] > 0 and sums["decode_seconds"] > 0
    assert timer.stamps == sorted(timer.stamps)
    assert sums["decode_seconds"] == pytest.approx(timer.stamps[-1] - timer.stamps[0])


def test_speed_is_the_summed_tokens_over_the_summed_seconds_with_the_machine_beside_it():
    timing = {"prefill_seconds": 2.0, "prefill_tokens": 300.0, "decode_seconds": 4.0, "decode_tokens": 100.0}
    same = {"device": "cpu", "torch_threads": 4, "batch_size": 8}
    speed = speed_metrics(timing, [same, same])
    assert speed["decode_tokens_per_s"] == 25.0 and speed["prefill_tokens_per_s"] == 150.0
    assert (speed["device"], speed["torch_threads"], speed["batch_size"]) == ("cpu", 4, 8)
    resumed_elsewhere = speed_metrics(timing, [same, {**same, "device": "NVIDIA H200", "torch_threads": 1}])
    assert resumed_elsewhere["device"] == ["NVIDIA H200", "cpu"] and resumed_elsewhere["torch_threads"] == [1, 4]
    assert speed_metrics({}, []) is None  # scoring=logits: nothing was generated


@pytest.fixture(scope="module")
def generate_cell(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("speed_cell")
    result = run_cli([*CELL, "logger.mode=offline"], out, out / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = (out / "cells").iterdir()
    return {"out": out, "cell": cell, "metrics": json.loads((cell / "metrics.json").read_text())}


def _header_sums(cell) -> dict:
    shards = read_shard_set(cell / "shards").shards
    return {key: sum(s.header["timing"][key] for s in shards) for key in TIMING_KEYS}


@pytest.mark.slow
def test_a_generate_cell_records_its_speed_from_its_shard_headers_and_in_its_wandb_summary(generate_cell):
    cell, speed = generate_cell["cell"], generate_cell["metrics"]["speed"]
    sums = _header_sums(cell)
    assert len(read_shard_set(cell / "shards").shards) == 2  # 4 questions, 2 per batch
    assert speed["decode_tokens"] == sums["decode_tokens"] > 0
    assert speed["decode_seconds"] == pytest.approx(sums["decode_seconds"])
    assert speed["decode_tokens_per_s"] == pytest.approx(sums["decode_tokens"] / sums["decode_seconds"])
    assert speed["prefill_tokens_per_s"] == pytest.approx(sums["prefill_tokens"] / sums["prefill_seconds"])
    assert (speed["device"], speed["batch_size"]) == ("cpu", 2)
    assert speed["torch_threads"] == 1  # the subprocess runs with OMP_NUM_THREADS=1 (tests/cell_runs.py)
    # Every answer is at most max_new_tokens long, so each batch decoded at most 5 steps x 2 rows.
    assert speed["decode_tokens"] <= 2 * (6 - 1) * 2

    (run_file,) = find_runs(generate_cell["out"])
    summary = read_run(run_file).summary
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s", "decode_seconds", "decode_tokens", "device",
                "torch_threads", "batch_size"):
        assert summary[f"speed/{key}"] == speed[key], key


@pytest.mark.slow
def test_a_cells_identity_does_not_depend_on_its_speed(generate_cell):
    config = yaml.safe_load((generate_cell["cell"] / "config.yaml").read_text())
    assert "speed" not in json.dumps(config["identity_inputs"])
    assert generate_cell["cell"].name == config["identity"][: len(generate_cell["cell"].name)]


@pytest.mark.slow
def test_speed_sums_survive_a_resumed_cell(generate_cell, tmp_path):
    """Half the shards of the finished cell are the first attempt; the resumed run predicts
    the other half. Greedy decoding makes the token counts exact, so the resumed cell decodes
    as many tokens as the uninterrupted one, and its seconds are the two attempts' together."""
    first = generate_cell["cell"]
    shards = sorted((first / "shards").iterdir())
    kept = shards[0]
    cell = tmp_path / "out" / "cells" / first.name
    (cell / "shards").mkdir(parents=True)
    shutil.copy2(kept, cell / "shards" / kept.name)
    result = run_cli([*CELL, "logger.mode=disabled"], tmp_path / "out", tmp_path / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 of 4 questions resumed" in result.stdout + result.stderr
    speed = json.loads((cell / "metrics.json").read_text())["speed"]
    assert speed["decode_tokens"] == generate_cell["metrics"]["speed"]["decode_tokens"]
    assert speed["prefill_tokens"] == generate_cell["metrics"]["speed"]["prefill_tokens"]
    timing, machines = generate_timing(read_shard_set(cell / "shards").shards)
    assert len(machines) == 2
    kept_timing = json.loads(kept.read_text().splitlines()[0])["_shard"]["timing"]
    assert kept_timing["decode_seconds"] < speed["decode_seconds"] == pytest.approx(timing["decode_seconds"])
    assert math.isclose(speed["decode_tokens_per_s"], timing["decode_tokens"] / timing["decode_seconds"])


@pytest.mark.slow
def test_a_logits_cell_has_no_speed(tmp_path):
    result = run_cli([c for c in CELL if not c.startswith("benchmark.scoring")] + ["benchmark.scoring=logits",
                                                                                  "logger.mode=disabled"],
                     tmp_path, tmp_path / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = (tmp_path / "cells").iterdir()
    assert "speed" not in json.loads((cell / "metrics.json").read_text())
    assert all("timing" not in s.header for s in read_shard_set(cell / "shards").shards)
