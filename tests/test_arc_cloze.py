"""A real answer from the embedded model: SmolLM2-135M-Instruct on 300 sampled ARC-Easy test
questions (the real file in ../shared/data, through a task YAML of lm-eval's format), scored by
cloze, is above chance and picks every option position.

Letter scoring on the same questions measures a letter habit (about 90% "A", accuracy near
20%); cloze reads the option's text. The published third-party lm-eval run of the same model
(bf16 weights, all 2376 questions) gives acc 54.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_lm_eval_benchmark import ARC, arc_task, write_task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = 300
CHANCE = 0.25


@pytest.mark.slow
def test_cloze_on_300_arc_easy_questions_is_above_chance_and_position_balanced(shared_data, tmp_path):
    data = shared_data / ARC
    if not data.is_file():
        pytest.skip(f"the ARC-Easy jsonl is absent from {data.parent}")
    tasks = tmp_path / "tasks"
    write_task(tasks, arc_task("arc_easy_local", data))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "outro_sweep", "benchmark=lm_eval", "benchmark.task=arc_easy_local",
         f"benchmark.include_path={tasks}", f"benchmark.sample={SAMPLE}", "outro=off", "logger.mode=disabled",
         "trainer.enable_progress_bar=false", f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'job'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "job" / "cell" / "metrics.json").read_text())
    assert metrics["n"] == SAMPLE and metrics["invalid"] == 0
    assert metrics["ci_low"] > CHANCE, metrics
    assert metrics["acc_norm"]["ci_low"] > CHANCE, metrics["acc_norm"]
    assert metrics["letters_are"] == "positions"
    assert metrics["top_letter_share"] < 0.4, metrics["predicted_letters"]  # no position answers most
    assert "position_bias" not in metrics["flags"] and "ci_contains_chance" not in metrics["flags"]
    assert "acc_norm" in result.stdout and "top position" in result.stdout
