"""Progress in logs: a cell whose output is not a terminal (here a pipe, as under SLURM) logs
progress lines while it predicts, not only a bar at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"predict rank 0: (\d+)/(\d+) batches \(\d+%\), [\d.]+ batches/s, elapsed [\d:]+, ETA [\d:]+")


@pytest.mark.slow
def test_a_cell_writing_to_a_pipe_logs_progress_lines_before_the_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "outro_sweep", "benchmark.limit=24", "benchmark.scoring=logits", "predict.batch_size=1",
         "predict.progress_every_batches=5", "logger.mode=disabled", f"paths.output_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    done = [(int(m.group(1)), int(m.group(2))) for m in LINE.finditer(output)]
    assert done == [(5, 24), (10, 24), (15, 24), (20, 24), (24, 24)]  # every 5 batches, and the last one
    first_progress = output.index("predict rank 0: 5/24")
    assert first_progress < output.index("predicted 24 questions")  # logged while predicting, not after
    assert "Predicting" not in output  # the bar that only shows at the end is off in a pipe
    job_log = next(tmp_path.glob("runs/*/*/*.log")).read_text()
    assert "predict rank 0: 24/24 batches" in job_log  # and the job's log file has them too
