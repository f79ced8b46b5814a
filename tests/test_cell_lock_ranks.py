"""The processes of a multi-process cell other than rank 0 hold no lock: they wait for their own
rank 0 to hold it, and are refused at once when another launch holds the cell (their rank 0 is
refused too and would never reach the process group they would wait in). A second launch is a
real process holding a real flock; nothing is mocked."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from outro_sweep.cell.store import CellBusy, CellStore
from outro_sweep.errors import RunError


def hold(output_dir: str, launch: str, ready, release) -> None:
    with CellStore(output_dir, "abc123abc123").lock(launch):
        ready.set()
        release.wait(30)


@pytest.fixture
def held_by_launch_one(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=hold, args=(str(tmp_path), "slurm:1", ready, release))
    holder.start()
    assert ready.wait(60)
    yield CellStore(tmp_path, "abc123abc123"), holder.pid
    release.set()
    holder.join(30)


def test_a_rank_of_the_launch_holding_the_cell_goes_on(held_by_launch_one):
    store, _ = held_by_launch_one
    started = time.monotonic()
    store.wait_for_launch("slurm:1", timeout_s=10)
    assert time.monotonic() - started < 5


def test_a_rank_of_another_launch_is_refused_in_one_line_naming_the_holder(held_by_launch_one):
    store, pid = held_by_launch_one
    with pytest.raises(CellBusy) as refused:
        store.wait_for_launch("slurm:2", timeout_s=10)
    message = str(refused.value)
    assert f"pid {pid}" in message and "is running" in message and "\n" not in message


def test_a_rank_whose_rank_0_never_locks_stops_after_its_timeout(tmp_path):
    store = CellStore(tmp_path, "abc123abc123")
    with pytest.raises(RunError, match="did not take the cell's lock within 1 s"):
        store.wait_for_launch("slurm:3", timeout_s=1)


def test_the_lock_records_the_launch(tmp_path):
    store = CellStore(tmp_path, "abc123abc123")
    with store.lock("torchrun:xyz") as holder:
        assert holder["launch"] == "torchrun:xyz" and holder["pid"] == os.getpid()
        assert '"launch": "torchrun:xyz"' in store.lock_file.read_text()


@pytest.mark.parametrize("environment, expected", [
    ({"SLURM_NTASKS": "2", "SLURM_JOB_ID": "77"}, "slurm:77"),
    ({"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_JOB_ID": "4242"}, "submitit:4242"),
    ({"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "run9"}, "torchrun:run9"),
    # torchrun's default id, the same for every run: the rendezvous address tells runs apart
    ({"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"},
     "torchrun:127.0.0.1:29511"),
    ({}, None),
])
def test_the_launch_a_process_belongs_to(monkeypatch, environment, expected):
    from outro_sweep.predict.distributed import launch_id

    for name in ("SLURM_NTASKS", "SUBMITIT_LOCAL_NTASKS", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR",
                 "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert launch_id() == expected
