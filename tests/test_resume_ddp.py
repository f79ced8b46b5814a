"""Nothing of a cell is lost or counted twice: durable shards, resume after SIGKILL, and
multi-process (DDP) prediction.

Unit tests cover the shard files, the split of questions between processes and the launcher
environments; three subprocess tests run the real CLI on the real SmolLM2 (7 questions,
batches of 2, 2 new tokens, one thread per process so that every run computes the same
floats): an uninterrupted reference run, a run killed with SIGKILL mid-cell and resumed, and a
2-process run under torchrun (gloo) whose metrics must equal the reference's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outro_sweep.predict import distributed, shards
from outro_sweep.predict.run import share_of
from outro_sweep.predict.writer import ShardPredictionWriter
from tests.cell_runs import free_port

REPO = Path(__file__).resolve().parents[1]


def record(index: int, **extra) -> dict:
    return {"index": index, "id": f"q{index}", "prompt_hash": f"{index:016x}", "output": "A", **extra}


def shard_files(shard_dir: Path) -> list[Path]:
    return sorted(p for p in shard_dir.iterdir() if shards.SHARD_NAME.match(p.name)) if shard_dir.is_dir() else []


# ----------------------------------------------------------------------------- shard files


def test_shard_is_written_whole_under_its_name(tmp_path):
    path = shards.write_shard(tmp_path / "shards", [record(5), record(3)], rank=1, seconds=0.5,
                              diagnostic_sums={"outro": {"cos_before/2": 1.0, "n/2": 4.0}})
    match = shards.SHARD_NAME.match(path.name)
    assert match and match.groups()[:3] == ("00000003", "00000005", "1")
    text = path.read_text()
    lines = text.splitlines()
    body = text.split("\n", 1)[1].encode()  # the checksum covers every byte after the header line
    assert json.loads(lines[0]) == {"_shard": {"rank": 1, "count": 2, "seconds": 0.5,
                                               "sha256": hashlib.sha256(body).hexdigest(),
                                               "diagnostic_sums": {"outro": {"cos_before/2": 1.0,
                                                                             "n/2": 4.0}}}}
    assert lines[1:] == [json.dumps(record(5), sort_keys=True), json.dumps(record(3), sort_keys=True)]
    assert [p.name for p in (tmp_path / "shards").iterdir()] == [path.name]  # no temporary left behind


def test_a_write_that_dies_before_the_rename_leaves_no_shard(tmp_path, monkeypatch):
    def crash(*args):
        raise KeyboardInterrupt  # the process dies between fsync and rename

    from outro_sweep.files import atomic

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        shards.write_shard(tmp_path, [record(0)], rank=0)
    assert list(tmp_path.iterdir()) == []
    assert shards.read_shards(tmp_path) == []


def test_read_dedupes_sorts_and_ignores_temporaries(tmp_path):
    shards.write_shard(tmp_path, [record(4), record(5)], rank=0)
    shards.write_shard(tmp_path, [record(0), record(1)], rank=1)
    shards.write_shard(tmp_path, [record(1)], rank=0)  # the same batch predicted twice: identical
    (tmp_path / ".00000002-00000003-r0-0123abcd.jsonl.9f9f9f9f.tmp").write_text('{"index": 2, "outp')  # killed writer
    (tmp_path / "notes.txt").write_text("not a shard")
    got = shards.read_shards(tmp_path)
    assert [r["index"] for r in got] == [0, 1, 4, 5]
    assert got[1] == record(1)
    assert shards.remove_stale_temporaries(tmp_path) == 1
    assert (tmp_path / "notes.txt").exists()


def test_two_different_records_for_one_index_is_an_error(tmp_path):
    first = shards.write_shard(tmp_path, [record(2)], rank=0)
    second = shards.write_shard(tmp_path, [record(2, output="B")], rank=1)
    with pytest.raises(shards.ShardConflictError, match="question index 2 has two different predictions") as err:
        shards.read_shards(tmp_path)
    assert first.name in str(err.value) and second.name in str(err.value)


def test_a_corrupt_shard_is_reported_by_name_and_skipped(tmp_path, caplog):
    shards.write_shard(tmp_path, [record(0)], rank=0)
    bad = tmp_path / "00000001-00000002-r0-deadbeef.jsonl"
    bad.write_text('{"_shard": {"count": 2}}\n' + json.dumps(record(1)) + "\n")  # one record short
    cut = tmp_path / "00000003-00000003-r0-cafecafe.jsonl"
    cut.write_text(json.dumps(record(3))[:20])  # truncated mid-line
    with caplog.at_level(logging.WARNING, logger="outro_sweep.predict.shards"):
        found = shards.read_shard_set(tmp_path)
    assert sorted(found.corrupt) == [bad.name, cut.name]
    assert [r["index"] for r in found.records] == [0]
    assert bad.name in caplog.text and cut.name in caplog.text


def test_completeness_check_names_missing_and_extra_indices(tmp_path):
    shards.write_shard(tmp_path / "a", [record(0), record(1), record(3), record(9)], rank=0)
    with pytest.raises(RuntimeError, match=r"missing indices \[2, 4\] \(2\); unexpected indices \[9\] \(1\)"):
        shards.check_complete(shards.read_shard_set(tmp_path / "a"), 5, tmp_path)
    shards.write_shard(tmp_path / "b", [record(1), record(0)], rank=0)
    shards.write_shard(tmp_path / "b", [record(2)], rank=1)
    shards.check_complete(shards.read_shard_set(tmp_path / "b"), 3, tmp_path)  # complete: no error


# ----------------------------------------------------------------------------- the writer


class FakeAttached:
    """Additive running sums, like an attached intervention stack's ``running_sums()``."""

    def __init__(self):
        self.sums = {}

    def add(self, layer, before, after, n):
        group = self.sums.setdefault("outro", {})
        for key, value in ((f"cos_before/{layer}", before), (f"cos_after/{layer}", after), (f"n/{layer}", n)):
            group[key] = group.get(key, 0.0) + value

    def running_sums(self):
        return {group: dict(values) for group, values in self.sums.items()}


def test_writer_puts_each_batch_and_its_diagnostics_in_its_own_shard(tmp_path):
    from outro_sweep.interventions.outro import rotation_cosines

    class Module:
        seconds = 0.0
        attached = FakeAttached()

    class Trainer:
        global_rank = 3

    module, writer = Module(), ShardPredictionWriter(tmp_path / "shards")
    writer.on_predict_start(Trainer(), module)
    batches = [([record(0), record(1)], [(1, 0.1, 0.3, 10), (4, 0.2, 0.6, 7)]),
               ([record(2)], [(1, 0.25, 0.5, 3)]),
               ([record(3), record(4)], [])]  # a batch where no token was rotated
    for step, (records, cosines) in enumerate(batches):
        module.seconds += 0.25
        for layer, before, after, n in cosines:
            module.attached.add(layer, before * n, after * n, n)
        writer.write_on_batch_end(Trainer(), module, records, None, None, step, 0)
    assert len(writer.written) == 3 and all("-r3-" in p.name for p in writer.written)
    found = shards.read_shard_set(tmp_path / "shards")
    assert [r["index"] for r in found.records] == [0, 1, 2, 3, 4]
    assert shards.timing(found.shards) == (pytest.approx(0.75), 5)
    assert [s.diagnostic_sums for s in found.shards if s.records[0]["index"] == 3] == [{}]
    merged = rotation_cosines(shards.diagnostic_sums(found.shards)["outro"])
    # Written from the spec: per layer, the n-weighted mean of the batches' cosines.
    expected = {"1": (0.1 * 10 + 0.25 * 3, 0.3 * 10 + 0.5 * 3, 13), "4": (0.2 * 7, 0.6 * 7, 7)}
    assert merged.keys() == expected.keys()
    for layer, (before, after, n) in expected.items():
        assert merged[layer]["n"] == n
        assert merged[layer]["cos_before"] == pytest.approx(before / n, abs=1e-12)
        assert merged[layer]["cos_after"] == pytest.approx(after / n, abs=1e-12)


def test_timing_covers_only_the_shards_that_carry_it(tmp_path):
    """A resumed cell: seconds_per_sample is what was measured over the samples it covers."""
    shards.write_shard(tmp_path, [record(0), record(1)], rank=0, seconds=2.0)
    shards.write_shard(tmp_path, [record(2)], rank=0, seconds=0.5)
    (tmp_path / "00000003-00000004-r0-0badc0de.jsonl").write_text(
        "".join(json.dumps(record(i)) + "\n" for i in (3, 4)))  # a shard without a header: no timing
    found = shards.read_shard_set(tmp_path)
    assert len(found.records) == 5 and shards.timing(found.shards) == (2.5, 3)


# ----------------------------------------------------------------------------- splitting work


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_shares_are_disjoint_whole_batches_of_the_one_process_batching(n, world, batch):
    remaining = [i * 3 + 1 for i in range(n)]  # a resumed cell: any subset of indices
    parts = [share_of(remaining, batch, rank, world) for rank in range(world)]
    assert [i for part in parts for i in part] == remaining  # contiguous, in order, nothing lost or doubled
    one_process = [remaining[i:i + batch] for i in range(0, n, batch)]
    for part in parts:
        assert [part[i:i + batch] for i in range(0, len(part), batch)] == \
            [b for b in one_process if set(b) <= set(part)]  # the same batches a single process forms
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= batch


def test_lightning_predict_sampler_partitions_but_needs_a_sample_per_rank():
    """Why the cell splits the questions itself (share_of, use_distributed_sampler=False):
    Lightning's predict sampler splits without padding (no sample doubled or dropped) but
    asserts when a rank would get nothing, which a resumed cell with few questions left hits."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
    from torch.utils.data import SequentialSampler

    def parts(n, world):
        return [list(UnrepeatedDistributedSamplerWrapper(SequentialSampler(range(n)), num_replicas=world, rank=r,
                                                         shuffle=False)) for r in range(world)]

    assert parts(7, 2) == [[0, 2, 4, 6], [1, 3, 5]]
    for n in range(1, 12):
        for world in range(1, min(n, 4) + 1):
            assert sorted(i for part in parts(n, world) for i in part) == list(range(n))
    with pytest.raises(AssertionError):
        parts(1, 2)


# ----------------------------------------------------------------------------- launcher environments

LAUNCH_VARS = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES", "SLURM_JOB_NUM_NODES",
               "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_LOCALID", "SUBMITIT_LOCAL_JOB_ID",
               "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


@pytest.fixture
def launch_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    return set_env


def test_one_process_gets_no_overrides(launch_env):
    launch_env(SLURM_NTASKS=1, SLURM_PROCID=0)  # an ordinary one-task SLURM cell
    assert (distributed.launcher(), distributed.process_rank(), distributed.world_size()) == (None, 0, 1)
    assert distributed.trainer_overrides() == {}


def test_slurm_tasks_become_a_ddp_group_without_lightning_requeue(launch_env):
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    launch_env(SLURM_NTASKS=8, SLURM_PROCID=5, SLURM_NTASKS_PER_NODE=4, SLURM_NNODES=2, RANK=0, WORLD_SIZE=1)
    assert (distributed.launcher(), distributed.process_rank(), distributed.world_size()) == ("slurm", 5, 8)
    overrides = distributed.trainer_overrides()
    assert overrides["devices"] == 4 and overrides["num_nodes"] == 2
    strategy = overrides["strategy"]
    assert isinstance(strategy, DDPStrategy)
    assert isinstance(strategy.cluster_environment, SLURMEnvironment)
    assert strategy.cluster_environment.auto_requeue is False  # submitit requeues, not Lightning
    assert strategy.process_group_backend == ("nccl" if __import__("torch").cuda.is_available() else "gloo")
    assert distributed.trainer_overrides("cpu")["strategy"].process_group_backend == "gloo"


def test_torchrun_and_local_submitit_ranks(launch_env):
    from lightning.pytorch.plugins.environments import TorchElasticEnvironment

    launch_env(RANK=1, WORLD_SIZE=2, LOCAL_RANK=1, LOCAL_WORLD_SIZE=2, GROUP_RANK=0)
    assert (distributed.launcher(), distributed.process_rank(), distributed.world_size()) == ("torchrun", 1, 2)
    overrides = distributed.trainer_overrides()
    assert (overrides["devices"], overrides["num_nodes"]) == (2, 1)
    assert isinstance(overrides["strategy"].cluster_environment, TorchElasticEnvironment)

    launch_env(SUBMITIT_LOCAL_NTASKS=3, SUBMITIT_LOCAL_GLOBALID=2, SUBMITIT_LOCAL_LOCALID=2,
               SUBMITIT_LOCAL_JOB_ID=4242)
    assert (distributed.launcher(), distributed.process_rank(), distributed.world_size()) == ("submitit_local", 2, 3)
    environment = distributed.trainer_overrides()["strategy"].cluster_environment
    assert (environment.global_rank(), environment.world_size(), environment.local_rank()) == (2, 3, 2)
    assert environment.main_port == 24242


# ----------------------------------------------------------------------------- the CLI, end to end

# On the CPU also where a GPU is visible: the 2-process run needs two devices, and every run
# must compute the same floats.
ARGS = ["benchmark.limit=7", "predict.batch_size=2", "benchmark.max_new_tokens=2", "logger.mode=disabled",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
N = 7


def cli_env() -> dict:
    # One thread per process: every run (1 or 2 processes) computes the same floats, and the
    # 2-core test machine is not oversubscribed.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}


def cli_command(run_dir: Path) -> list[str]:
    return [*ARGS, f"paths.output_dir={run_dir}", f"hydra.run.dir={run_dir / 'job'}"]


def run_cli(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outro_sweep", *cli_command(run_dir)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=600, check=False)


def cell(run_dir: Path) -> Path:
    return run_dir / "job" / "cell"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The cell, uninterrupted, in one process."""
    run_dir = tmp_path_factory.mktemp("reference")
    result = run_cli(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(line)["index"] for line in lines(cell(run_dir) / "predictions.jsonl")] == list(range(N))
    return run_dir


@pytest.mark.slow
def test_sigkill_mid_cell_then_resume(reference, tmp_path):
    run_dir = tmp_path / "run"
    shard_dir = cell(run_dir) / "shards"
    log_file = tmp_path / "killed.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "outro_sweep", *cli_command(run_dir)], cwd=REPO,
                                   env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while len(shard_files(shard_dir)) < 1:  # 4 batches of 2: kill once the first is durable
            assert process.poll() is None, f"the cell ended before it could be killed: {log_file.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no shard appeared within 300 s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    survivors = shard_files(shard_dir)
    assert 1 <= len(survivors) < 4, [p.name for p in survivors]
    assert not (cell(run_dir) / "metrics.json").exists() and not (cell(run_dir) / "DONE").exists()
    kept = {json.loads(line)["index"]: line for path in survivors for line in lines(path)[1:]}

    result = run_cli(run_dir)  # the same command, the same folders
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert re.search(rf"\b{len(kept)} of {N} questions resumed from {len(survivors)} shards", output), output[-3000:]
    assert f"predictions: {len(kept)} resumed + {N - len(kept)} predicted now = {N}" in output
    final = lines(cell(run_dir) / "predictions.jsonl")
    assert [json.loads(line)["index"] for line in final] == list(range(N))  # each index exactly once
    for index, line in kept.items():  # resumed raw records kept as they were, scored once with the rest
        assert json.loads(final[index]).items() >= json.loads(line).items()
    assert set(survivors) <= set(shard_files(shard_dir))
    assert final == lines(cell(reference) / "predictions.jsonl")  # as if it had never been killed
    assert_same_metrics(run_dir, reference)  # rotation cosines included: the killed attempt's batches count


def assert_same_metrics(run_dir: Path, reference: Path) -> None:
    """metrics.json equal but for timing (the seconds per sample, and the decode speed, whose
    token counts depend on which questions share a batch); rotation cosines within 1e-6."""
    got = json.loads((cell(run_dir) / "metrics.json").read_text())
    want = json.loads((cell(reference) / "metrics.json").read_text())
    speeds = []
    for metrics in (got, want):
        metrics.pop("seconds_per_sample")
        speeds.append(metrics.pop("speed", None))
    assert (speeds[0] is None) == (speeds[1] is None)
    got_cos = got["diagnostics"]["outro"].pop("rotation_cosine_per_layer")
    want_cos = want["diagnostics"]["outro"].pop("rotation_cosine_per_layer")
    assert got == want
    assert got_cos.keys() == want_cos.keys() and want_cos
    for layer, values in want_cos.items():
        assert got_cos[layer]["n"] == values["n"]
        for key in ("cos_before", "cos_after"):
            assert abs(got_cos[layer][key] - values[key]) <= 1e-6, (layer, key)


def run_torchrun(run_dir: Path) -> str:
    """The cell as 2 torchrun processes (gloo on the CPU); their output."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "outro_sweep",
         *cli_command(run_dir)],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one(reference, tmp_path):
    run_dir = tmp_path / "ddp"
    output = run_torchrun(run_dir)
    assert "7 to predict now on 2 processes" in output
    assert output.count("accuracy ") == 1  # only rank 0 reports
    final = lines(cell(run_dir) / "predictions.jsonl")
    assert [json.loads(line)["index"] for line in final] == list(range(N))
    names = [p.name for p in shard_files(cell(run_dir) / "shards")]
    assert any("-r0-" in name for name in names) and any("-r1-" in name for name in names), names
    assert final == lines(cell(reference) / "predictions.jsonl")

    assert_same_metrics(run_dir, reference)


@pytest.mark.slow
def test_two_processes_resume_with_fewer_questions_left_than_processes(reference, tmp_path):
    """One question left for two processes: one of them gets no batch (Lightning's own predict
    sampler would assert here), takes part in the collectives and writes nothing."""
    run_dir = tmp_path / "ddp_resume"
    done = shard_files(cell(reference) / "shards")[:3]  # indices 0-5
    shard_dir = run_dir / "cells" / cell(reference).resolve().name / "shards"
    shard_dir.mkdir(parents=True)
    for path in done:
        (shard_dir / path.name).write_bytes(path.read_bytes())
    output = run_torchrun(run_dir)
    assert f"6 of {N} questions resumed from 3 shards" in output and "1 to predict now on 2 processes" in output
    assert "predicted 0 questions" in output  # the rank without a share
    new = [p for p in shard_files(shard_dir) if p.name not in {d.name for d in done}]
    assert len(new) == 1 and new[0].name.startswith("00000006-00000006-r")
    assert lines(cell(run_dir) / "predictions.jsonl") == lines(cell(reference) / "predictions.jsonl")
    assert_same_metrics(run_dir, reference)  # the resumed shards' rotation sums count too


# ----------------------------------------------------------------------------- video cells resume too


@pytest.mark.slow
def test_video_cell_resumes_from_another_attempts_shards(shared_data, tmp_path):
    """The video path (tiny random-weight Qwen2.5-VL, real NExT-QA annotations, stand-in clips,
    one corrupt): a cell that finds two batches' shards of an earlier attempt predicts only the
    rest, and ends with the records of an uninterrupted run (error record included)."""
    import csv

    from tests import tiny_vlms
    from tests.test_video_decode import write_mp4
    from tests.test_video_pipeline import SMALL

    data_dir = shared_data / "video_qa" / "nextqa"
    mapping = json.loads((data_dir / "map_vid_vidorID.json").read_text())
    with open(data_dir / "val.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:5]
    video_dir = tmp_path / "videos"
    for number, name in enumerate(dict.fromkeys(mapping[row["video"]] + ".mp4" for row in rows)):
        path = video_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if number == 1:
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)  # corrupt: an error record
        else:
            write_mp4(path, audio=False, num_frames=8, fps=6, noise=True)
    model = tiny_vlms.save("qwen2_5_vl", tmp_path / "tiny_qwen")
    args = ["model=qwen2_5_vl_7b", f"model.path={model}", *SMALL, "benchmark=nextqa_mc",
            f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}", "benchmark.limit=5",
            "benchmark.max_new_tokens=2", "predict.batch_size=2", "outro.layer=1", "outro.alpha=1.0",
            "logger.mode=disabled", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]

    def run(name: str) -> subprocess.CompletedProcess:
        run_dir = tmp_path / name
        return subprocess.run(
            [sys.executable, "-m", "outro_sweep", *args, f"paths.output_dir={run_dir}",
             f"paths.cache_dir={run_dir / 'cache'}", f"hydra.run.dir={run_dir / 'job'}"],
            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600, check=False,
        )

    first = run("first")
    assert first.returncode == 0, first.stderr[-3000:]
    whole = lines(cell(tmp_path / "first") / "predictions.jsonl")
    assert len(whole) == 5 and sum(json.loads(line)["error"] is not None for line in whole) >= 1
    # The second attempt's cell folder (same identity, other output_dir) holds two of the first's shards.
    earlier = shard_files(cell(tmp_path / "first") / "shards")[:2]
    second_shards = tmp_path / "second" / "cells" / cell(tmp_path / "first").resolve().name / "shards"
    second_shards.mkdir(parents=True)
    for path in earlier:
        (second_shards / path.name).write_bytes(path.read_bytes())
    second = run("second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "predictions: 4 resumed + 1 predicted now = 5" in second.stdout + second.stderr
    assert len(shard_files(second_shards)) == 3
    assert lines(cell(tmp_path / "second") / "predictions.jsonl") == whole
