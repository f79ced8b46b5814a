"""The passkey benchmark end to end on the real SmolLM2-135M (no intervention), through
``python -m outro_sweep`` in a subprocess, both forms; each record's verdict recomputed here
from what the model produced (its generated text, or its option-letter logits) and the key
read back from the prompt text, never from the scorer's fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cell_runs import run_cli

# Real cells of the real SmolLM2 through the CLI: the slow tier.
pytestmark = pytest.mark.slow

KEY = re.compile(r"The pass key is (\d{5})\. Remember it\.")
SHORT = ["outro=off", "benchmark=passkey", "benchmark.context_tokens=256", "benchmark.depths=[0,1]",
         "benchmark.num_questions=4", "predict.batch_size=4", "logger.mode=disabled",
         "trainer.enable_progress_bar=false"]


def run_cell(tmp_path: Path, *overrides: str) -> tuple[list[dict], dict]:
    result = run_cli([*SHORT, *overrides], tmp_path / "out", tmp_path / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = (tmp_path / "out" / "cells").iterdir()
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    return records, json.loads((cell / "metrics.json").read_text())


def key_in(record: dict) -> str:
    (key,) = KEY.findall(record["question"])
    return key


def test_generated_form_finds_the_key_at_short_context(tmp_path):
    records, metrics = run_cell(tmp_path)
    assert len(records) == 8 and {r["categories"]["depth"] for r in records} == {"0", "1"}
    # Right when the first number the model wrote is the key hidden in the prompt.
    right = [(re.findall(r"\d+", r["output"]) or [None])[0] == key_in(r) for r in records]
    assert [r["correct"] for r in records] == right
    assert metrics["correct"] == sum(right) and metrics["n"] == 8
    # The stock model retrieves it in most of these 256-token prompts (6 of 8 on the CPU in float32).
    assert sum(right) >= 5, [r["output"] for r in records]
    assert all(r["output"].startswith("The pass key is") for r in records)


def test_mc_form_scored_by_letter_logits(tmp_path):
    records, metrics = run_cell(tmp_path, "benchmark.form=mc", "benchmark.scoring=logits")
    right = []
    for r in records:
        correct_letter = "ABCD"[r["options"].index(key_in(r))]
        assert r["target"] == correct_letter
        right.append(max(r["logits"], key=r["logits"].get) == correct_letter)
    assert [r["correct"] for r in records] == right and metrics["correct"] == sum(right)
    assert {r["kind"] for r in records} == {"mc"} and len(records) == 8
