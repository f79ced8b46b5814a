"""A full disk and a read-only output folder: the cell stops with one line naming the path,
leaves no FAILED (nor its temporary), its finished shards stay valid, and a rerun on a healthy
disk completes it with the clean run's predictions, byte for byte.

The output folder is a small tmpfs mounted by the test (root only: skipped otherwise); the
Hydra job folder stays on the ordinary disk. Real SmolLM2 cells through the CLI; W&B is
disabled here, since its run files would take an unpredictable share of the small disk.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from outro_sweep.predict.shards import read_shard_set
from tests.cell_runs import SINGLE, copy_cell, one_error_line, reference_sweep, run_cli, single_cell_dir

PAGE = 4096  # tmpfs charges every file whole pages; folders cost nothing
SIZE_PAGES = 32

pytestmark = pytest.mark.slow  # real cells of the real model, run through the CLI


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_sweep(tmp_path_factory)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_PAGES * PAGE}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def leftovers(cell: Path) -> list[str]:
    return sorted(p.name for p in cell.rglob("*") if p.name in ("FAILED", "DONE") or p.name.endswith(".tmp"))


def test_a_full_disk_stops_the_cell_in_one_line_and_a_rerun_completes_it(reference, small_disk, tmp_path):
    """Room for the lock, config.yaml and two shards: the third shard finds the disk full."""
    source = single_cell_dir(reference)
    statvfs = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (statvfs.f_bavail * statvfs.f_frsize - 4 * PAGE))
    args = [*SINGLE, "logger.mode=disabled"]

    full = run_cli(args, small_disk, tmp_path / "job")
    line = one_error_line(full)
    assert full.returncode == 1
    cell = small_disk / "cells" / source.name
    assert line.startswith(f"error: cannot write {cell / 'shards'}/") and "the disk is full (ENOSPC)" in line, line
    assert leftovers(cell) == []  # no FAILED, no FAILED.tmp, no shard temporary
    kept = read_shard_set(cell / "shards")
    assert kept.corrupt == [] and sorted(kept.indices) == [0, 1, 2, 3]  # two whole, valid shards

    filler.unlink()
    healthy = run_cli(args, small_disk, tmp_path / "job2")
    assert healthy.returncode == 0, healthy.stderr[-3000:]
    assert "4 of 8 questions resumed" in healthy.stdout + healthy.stderr
    assert (cell / "predictions.jsonl").read_bytes() == (source / "predictions.jsonl").read_bytes()
    assert leftovers(cell) == ["DONE"]


def test_a_read_only_output_folder_stops_the_cell_in_one_line_and_a_rerun_completes_it(reference, small_disk,
                                                                                       tmp_path):
    """Half the cell's shards are in place, then the filesystem turns read-only."""
    source = single_cell_dir(reference)
    cell = copy_cell(source, small_disk, only=("config.yaml",))
    (cell / "shards").mkdir()
    for shard in sorted((source / "shards").iterdir())[:2]:
        (cell / "shards" / shard.name).write_bytes(shard.read_bytes())
    remount(small_disk, "ro")
    args = [*SINGLE, "logger.mode=disabled"]

    blocked = run_cli(args, small_disk, tmp_path / "job")
    line = one_error_line(blocked)
    assert blocked.returncode == 1
    assert line.startswith(f"error: cannot write {cell}") and "read-only (EROFS)" in line, line
    assert sorted(read_shard_set(cell / "shards").indices) == [0, 1, 2, 3]

    remount(small_disk, "rw")
    assert leftovers(cell) == []
    healthy = run_cli(args, small_disk, tmp_path / "job2")
    assert healthy.returncode == 0, healthy.stderr[-3000:]
    assert "4 of 8 questions resumed" in healthy.stdout + healthy.stderr
    assert (cell / "predictions.jsonl").read_bytes() == (source / "predictions.jsonl").read_bytes()
    assert leftovers(cell) == ["DONE"]
