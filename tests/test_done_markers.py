"""Markers that cannot lie: DONE names the digests of predictions.jsonl and metrics.json and
every reader checks them; shards carry a checksum of their records; the W&B summary is
written before DONE.

Real cells: the real SmolLM2-135M through the CLI (tests/cell_runs.py), W&B offline (the W&B
server cannot exist here; its offline run files are decoded by tests/wandb_offline.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from outro_sweep.cell.store import CellStore
from outro_sweep.predict.shards import HEADER_KEY, read_shard_set, write_shard
from tests.cell_runs import (SINGLE, SWEEP, copy_cell, prediction_indices, reference_sweep, run_cli,
                             single_cell_dir, start_cli)
from tests.wandb_offline import find_runs, read_run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_sweep(tmp_path_factory)


def delete(cell: Path, name: str) -> None:
    (cell / name).unlink()


def empty_done(cell: Path) -> None:
    (cell / "DONE").write_text("")


def done_a_folder(cell: Path) -> None:
    (cell / "DONE").unlink()
    (cell / "DONE").mkdir()


def changed_metrics(cell: Path) -> None:
    metrics = json.loads((cell / "metrics.json").read_text())
    (cell / "metrics.json").write_text(json.dumps({**metrics, "accuracy": 1.0}))


DAMAGES = {  # how a finished cell is damaged -> the words its warning must hold
    "predictions deleted": (lambda cell: delete(cell, "predictions.jsonl"), "predictions.jsonl is missing"),
    "metrics deleted": (lambda cell: delete(cell, "metrics.json"), "metrics.json is missing"),
    "empty DONE": (empty_done, "DONE marker is unreadable"),
    "DONE a folder": (done_a_folder, "DONE marker is unreadable"),
    "metrics edited": (changed_metrics, "metrics.json differs from the digest"),
}


def warnings_about(text: str, identity: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning: cell " + identity + ":")]


def assert_completed(cell: Path, reference_cell: Path) -> None:
    store = CellStore(cell.parent.parent, cell.name)
    assert store.state() == "done" and store.done_problem() is None
    assert not (cell / "FAILED").exists()
    assert (cell / "predictions.jsonl").read_bytes() == (reference_cell / "predictions.jsonl").read_bytes()
    assert prediction_indices(cell) == list(range(8))


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_finished_cell_warns_once_and_the_rerun_completes_it(reference, tmp_path, damage):
    source = single_cell_dir(reference)
    cell = copy_cell(source, tmp_path / "out")
    harm, words = DAMAGES[damage]
    harm(cell)
    store = CellStore(tmp_path / "out", cell.name)
    assert store.state() == "partial" and words in store.describe()  # describe() names it, never raises

    result = run_cli([*SINGLE, "logger.mode=offline"], tmp_path / "out", tmp_path / "job")
    assert result.returncode == 0, result.stderr[-3000:]
    warned = warnings_about(result.stdout + result.stderr, cell.name)
    assert len(warned) == 1 and words in warned[0], warned
    assert "0 to predict now" in result.stdout + result.stderr  # merged again from its shards, no model call
    assert_completed(cell, source)
    assert len(find_runs(cell)) == len(find_runs(source)) + 1  # the same W&B run id, continued


@pytest.mark.slow
def test_a_sweep_over_damaged_cells_warns_and_completes_each(reference, tmp_path):
    """Three cells damaged three ways (the empty DONE used to abort the sweep while it planned)."""
    out = tmp_path / "out"
    shutil.copytree(reference / "cells", out / "cells", ignore=shutil.ignore_patterns("LOCK"))
    cells = sorted((out / "cells").iterdir())
    chosen = ("predictions deleted", "metrics deleted", "empty DONE")
    for cell, damage in zip(cells, chosen):
        DAMAGES[damage][0](cell)

    result = run_cli(SWEEP, out, out / "sweep")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "sweep: 3 succeeded, 0 skipped (already done), 0 failed, of 3 cells"
    for cell, damage in zip(cells, chosen):
        warned = warnings_about(text, cell.name)
        assert len(warned) == 1 and DAMAGES[damage][1] in warned[0], (damage, warned)
        assert_completed(cell, reference / "cells" / cell.name)
    again = run_cli(SWEEP, out, out / "sweep2")  # now every DONE holds: nothing runs
    assert again.stdout.strip().splitlines()[-1] == "sweep: 0 succeeded, 3 skipped (already done), 0 failed, of 3 cells"


@pytest.mark.slow
def test_a_shard_altered_in_place_is_set_aside_and_predicted_again(reference, tmp_path):
    """A cell stopped before merging, whose shard of questions 2-3 was then edited into other
    valid JSON (a different winning letter): the edit is found, the shard set aside, its two
    questions predicted again, and predictions.jsonl equals the clean run's byte for byte."""
    source = single_cell_dir(reference)
    cell = copy_cell(source, tmp_path / "out", only=("config.yaml", "shards"))
    (shard,) = (cell / "shards").glob("00000002-00000003-*.jsonl")
    header, first, *rest = shard.read_text().splitlines()
    record = json.loads(first)
    logits = record["logits"]
    loser = min(logits, key=logits.get)
    record["logits"] = {**logits, loser: max(logits.values()) + 5.0}
    shard.write_text("\n".join([header, json.dumps(record, sort_keys=True), *rest]) + "\n")

    result = run_cli([*SINGLE, "logger.mode=disabled"], tmp_path / "out", tmp_path / "job")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-3000:]
    assert f"prediction shard {shard} is unreadable and is set aside" in text and "checksum" in text
    assert "6 of 8 questions resumed" in text
    assert shard.with_name(shard.name + ".corrupt").is_file() and not shard.exists()
    assert_completed(cell, source)
    replaced = list((cell / "shards").glob("00000002-00000003-*.jsonl"))
    assert len(replaced) == 1 and replaced[0] != shard


def test_shard_checksum_and_the_older_format(tmp_path):
    """In-process: a shard written now carries the sha256 of its record lines; one written
    before checksums existed (no ``sha256`` in its header) is still read when it parses."""
    records = [{"index": 0, "prediction": "A"}, {"index": 1, "prediction": "B"}]
    path = write_shard(tmp_path / "new", records, rank=0)
    header = json.loads(path.read_text().splitlines()[0])[HEADER_KEY]
    assert len(header["sha256"]) == 64
    assert read_shard_set(tmp_path / "new").indices == {0, 1}
    path.write_text(path.read_text().replace('"B"', '"C"'))
    altered = read_shard_set(tmp_path / "new")
    assert altered.indices == set() and altered.corrupt == [path.name]
    assert [p.name for p in (tmp_path / "new").iterdir()] == [path.name + ".corrupt"]

    older = tmp_path / "older" / path.name
    older.parent.mkdir()
    lines = path.with_name(path.name + ".corrupt").read_text().splitlines()
    head = json.loads(lines[0])
    del head[HEADER_KEY]["sha256"]
    older.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    assert read_shard_set(older.parent).records[1]["prediction"] == "C"


@pytest.mark.slow
def test_sigkill_right_after_done_leaves_a_w_and_b_run_with_its_summary(reference, tmp_path):
    """The cell's shards are complete (it merges and logs in about a second); the process is
    SIGKILLed the moment DONE appears. Its W&B run must already hold the summary."""
    source = single_cell_dir(reference)
    cell = copy_cell(source, tmp_path / "out", only=("config.yaml", "shards"))
    process = start_cli([*SINGLE, "logger.mode=offline"], tmp_path / "out", tmp_path / "job")
    try:
        deadline = time.monotonic() + 300
        while not (cell / "DONE").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL  # killed, not finished on its own
    assert CellStore(tmp_path / "out", cell.name).state() == "done"
    metrics = json.loads((cell / "metrics.json").read_text())
    (run_file,) = find_runs(cell)
    run = read_run(run_file)
    assert run.run_id == cell.name
    assert run.summary["accuracy"] == pytest.approx(metrics["accuracy"]) and run.summary["n"] == 8
