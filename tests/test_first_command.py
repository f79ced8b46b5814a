"""The first command, ``bash launchers/run.sh``, shows a real comparison: OutRo against the stock
embedded model on questions where the model is clearly above chance.

The arguments are read from run.sh itself (its ``set --`` line), so the test runs what a new user
runs: both cells' 95% intervals exclude chance, and the verdict line says so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHANCE = 0.25


def first_command_arguments() -> list[str]:
    """The arguments run.sh passes when it is given none."""
    text = (REPO / "launchers" / "run.sh").read_text()
    found = re.search(r'if \[ "\$#" -eq 0 \]; then\n\s*set -- (.*)\n', text)
    assert found, "run.sh has no default arguments"
    return shlex.split(found.group(1))


@pytest.mark.slow
def test_the_first_command_compares_two_cells_above_chance(tmp_path):
    args = first_command_arguments()
    assert args[0] == "-m"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-m", "outro_sweep", *args, "logger.mode=disabled",
                             f"paths.output_dir={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(path.read_text()) for path in (tmp_path / "cells").glob("*/metrics.json")]
    assert len(metrics) == 2  # OutRo and its baseline
    for cell in metrics:
        assert cell["n"] == 300 and cell["ci_low"] > CHANCE, cell
        assert "ci_contains_chance" not in cell["flags"]
    verdicts = [line for line in result.stdout.splitlines() if " vs stock: " in line]
    assert len(verdicts) == 1 and "both above chance (25%)" in verdicts[0], result.stdout[-2000:]
