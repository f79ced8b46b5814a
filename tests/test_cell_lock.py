"""The per-cell lock: two runs of one cell never write it at once; the second is refused in
one line naming the holder's host and pid, writes no FAILED, and the sweep counts it as not
done. Real SmolLM2 cells through the CLI (tests/cell_runs.py)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from outro_sweep.cell.store import CellStore
from outro_sweep.predict.shards import read_shard_set
from tests.cell_runs import (SINGLE, SWEEP, copy_cell, one_error_line, prediction_indices, reference_sweep,
                             run_cli, single_cell_dir, start_cli)
from tests.wandb_offline import find_runs

pytestmark = pytest.mark.slow  # real cells of the real model, run through the CLI


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_sweep(tmp_path_factory)


class Finished:
    def __init__(self, process, out, err):
        self.pid, self.returncode, self.stdout, self.stderr = process.pid, process.returncode, out, err


def run_together(count: int, args: list[str], out: Path, tmp_path: Path) -> list[Finished]:
    processes = [start_cli(args, out, tmp_path / f"job{i}") for i in range(count)]
    finished = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=900)
        finished.append(Finished(process, stdout, stderr))
    return finished


def assert_one_clean_cell(cell: Path, reference_cell: Path) -> None:
    assert CellStore(cell.parent.parent, cell.name).state() == "done"
    assert not (cell / "FAILED").exists()
    assert not [p for p in cell.rglob("*.tmp")]  # no temporary left by any writer
    assert (cell / "predictions.jsonl").read_bytes() == (reference_cell / "predictions.jsonl").read_bytes()
    assert prediction_indices(cell) == list(range(8))
    shards = read_shard_set(cell / "shards")
    assert sum(len(s.records) for s in shards.shards) == 8  # each sample predicted exactly once


def assert_refused(run: Finished, holders: list[Finished], cell: Path, job_dir: Path) -> None:
    line = one_error_line(run)
    assert line.startswith(f"error: cell {cell.name} is running: locked by host {socket.gethostname()} pid ")
    assert any(f" pid {h.pid} " in line for h in holders), line
    assert run.returncode == 1
    assert json.loads((job_dir / "status.json").read_text())["status"] == "busy"


def test_two_runs_of_one_new_cell_at_once_complete_it_once(reference, tmp_path):
    out = tmp_path / "out"
    runs = run_together(2, [*SINGLE, "logger.mode=offline"], out, tmp_path)
    (cell,) = (out / "cells").iterdir()
    winners = [r for r in runs if r.returncode == 0]
    losers = [r for r in runs if r.returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [r.stderr[-2000:] for r in runs]
    assert_refused(losers[0], winners, cell, tmp_path / f"job{runs.index(losers[0])}")
    assert_one_clean_cell(cell, single_cell_dir(reference))
    assert len(find_runs(cell)) == 1  # one W&B run


def test_three_processes_merging_one_cell_leave_exactly_done(reference, tmp_path):
    """Complete shards, no results yet: three processes start merging at once. One merges;
    each other one is refused (or, arriving after it, finds DONE). Never FAILED."""
    out = tmp_path / "out"
    source = single_cell_dir(reference)
    cell = copy_cell(source, out, only=("config.yaml", "shards"))
    runs = run_together(3, [*SINGLE, "logger.mode=offline"], out, tmp_path)
    merged = [r for r in runs if "accuracy " in r.stdout and "skip " not in r.stdout]
    assert len(merged) == 1, [r.stdout[-1000:] + r.stderr[-1000:] for r in runs]
    for index, run in enumerate(runs):
        if run.returncode != 0:
            assert_refused(run, merged, cell, tmp_path / f"job{index}")
        else:
            assert run in merged or f"skip {cell.name}: done" in run.stdout
    assert_one_clean_cell(cell, source)
    assert sorted(p.name for p in cell.iterdir() if p.name.isupper()) == ["DONE", "LOCK"]


def test_a_held_cell_is_reported_running_by_the_sweep_and_refused_by_a_run(reference, tmp_path):
    """This test process holds one cell's lock (as a still-running first sweep would): the
    sweeper does not launch that cell and says so; a single run of it is refused in one line;
    the sweep's last line counts it as not done, with a non-zero exit."""
    out = tmp_path / "out"
    source = single_cell_dir(reference)
    cell = copy_cell(source, out, only=("config.yaml", "shards"))
    for other in (reference / "cells").iterdir():  # the sweep's two other cells are done
        if other != source:
            copy_cell(other, out)
    with CellStore(out, cell.name).lock():
        sweep = run_cli(SWEEP, out, out / "sweep")
        single = run_cli([*SINGLE, "logger.mode=offline"], out, tmp_path / "job")
    running = [line for line in sweep.stdout.splitlines() if line.startswith(f"cell {cell.name} is running")]
    assert len(running) == 1 and f"pid {os.getpid()} " in running[0], sweep.stdout[-3000:]
    assert sweep.returncode == 1
    assert sweep.stdout.strip().splitlines()[-1] == (
        "sweep: 0 succeeded, 2 skipped (already done), 0 failed, 1 running elsewhere (not done), of 3 cells")
    assert not list((out / "sweep").glob("*/status.json"))  # nothing launched
    assert json.loads((out / "sweep" / "busy.json").read_text())[0]["identity"] == cell.name

    line = one_error_line(single)
    assert single.returncode == 1 and f"locked by host {socket.gethostname()} pid {os.getpid()} " in line
    assert json.loads((tmp_path / "job" / "status.json").read_text())["status"] == "busy"
    assert not (cell / "FAILED").exists() and not (cell / "DONE").exists()

    rerun = run_cli([*SINGLE, "logger.mode=offline"], out, tmp_path / "job2")  # lock released: it completes
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_one_clean_cell(cell, source)
