"""Real cells for the marker, lock and disk-fault tests: the real SmolLM2-135M through
``python -m outro_sweep`` in subprocesses, 8 built-in questions scored by logits, 2 per batch
(so a cell has 4 shards).

``reference_sweep`` runs one 3-cell sweep (OutRo alpha 0.1 and 0.3, and their baseline) once
per test session; tests copy its cells into their own output folders, so each starts from a
clean, finished cell without predicting again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELL = ["benchmark.limit=8", "benchmark.scoring=logits", "predict.batch_size=2", "trainer.enable_progress_bar=false"]
SWEEP = ["-m", *CELL, "outro.alpha=0.1,0.3", "logger.mode=offline"]
SINGLE = [*CELL, "outro.alpha=0.1"]  # one cell of SWEEP
_REFERENCE: dict = {}


def cli_command(args: list[str], output_dir: Path, job_dir: Path) -> list[str]:
    folder = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    return [sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={output_dir}", f"{folder}={job_dir}"]


def cli_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], output_dir: Path, job_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(args, output_dir, job_dir), cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def start_cli(args: list[str], output_dir: Path, job_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command(args, output_dir, job_dir), cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def free_port() -> int:
    """A TCP port free on this host now (torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reference_sweep(tmp_path_factory) -> Path:
    """The output folder of the finished reference sweep (run once per session; never modify it)."""
    if "out" not in _REFERENCE:
        out = tmp_path_factory.mktemp("reference")
        result = run_cli(SWEEP, out, out / "sweep")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        _REFERENCE["out"] = out
    return _REFERENCE["out"]


def single_cell_dir(reference: Path) -> Path:
    """The reference sweep's cell that ``SINGLE`` composes (OutRo alpha 0.1)."""
    for cell in (reference / "cells").iterdir():
        config = (cell / "config.yaml").read_text()
        if "alpha: 0.1\n" in config and "enabled: true" in config:
            return cell
    raise AssertionError("the reference sweep has no alpha=0.1 cell")


def copy_cell(cell: Path, output_dir: Path, only: tuple[str, ...] | None = None) -> Path:
    """Copy a reference cell into ``<output_dir>/cells/`` (``only``: just these entries)."""
    target = output_dir / "cells" / cell.name
    if only is None:
        shutil.copytree(cell, target, ignore=shutil.ignore_patterns("LOCK"))
    else:
        target.mkdir(parents=True)
        for name in only:
            source = cell / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)
    return target


def prediction_indices(cell: Path) -> list[int]:
    """The question index of every line of the cell's predictions.jsonl, in file order."""
    return [json.loads(line)["index"] for line in (cell / "predictions.jsonl").read_text().splitlines()]


def one_error_line(result) -> str:
    """The single ``error:`` line of a finished process; fails on a traceback or a second one."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]
