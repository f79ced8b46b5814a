"""Cell groups in the launchers: the sweeper's group order, ``hydra.launcher.cells_per_task``, and
local sweeps that run each group's cells in one task process.

The fast tests compose real configs in-process. The slow ones run ``python -m outro_sweep -m
hydra/launcher=local`` as the user does, on the real SmolLM2 (4 built-in questions, logits
scoring); a task process is counted by its submitit job folder (one per submitted job) and by
the job id (the controller's pid) each cell's Hydra config records.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from omegaconf import OmegaConf

from outro_sweep.cell.baseline import baseline_identity, is_baseline
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError
from outro_sweep.group.key import group_key
from outro_sweep.sweep.group_task import CellsPerTask, task_slices
from outro_sweep.sweep.sweeper import by_group
from tests.cell_runs import cli_command, cli_env, free_port, run_cli
from tests.wandb_offline import find_runs, read_run

REPO = Path(__file__).resolve().parents[1]
LIGHT = ["benchmark.scoring=logits", "trainer.enable_progress_bar=false"]


def _compose(overrides: list[str]):
    from outro_sweep.config.compose import compose_config
    from outro_sweep.sweep.slurm_launcher import register_launcher

    register_launcher()  # hydra/launcher=local and =slurm name the project's launcher configs
    return compose_config(overrides, CONF_DIR)


def _plain(overrides: list[str]) -> dict:
    from outro_sweep.config.compose import job_config

    return OmegaConf.to_container(job_config(_compose(overrides)), resolve=True)


def test_group_key_is_the_baseline_identity_and_ignores_intervention_settings():
    cells = {alpha: _plain([f"outro.alpha={alpha}", "outro.layer=2"]) for alpha in (0.1, 0.3)}
    baseline = _plain(["outro.enabled=false"])
    other = _plain(["outro.alpha=0.1", "benchmark.limit=4"])
    assert group_key(cells[0.1]) == group_key(cells[0.3]) == group_key(baseline) == baseline_identity(cells[0.1])
    assert group_key(other) != group_key(baseline)  # another benchmark sample: another group
    assert is_baseline(baseline) and not is_baseline(cells[0.1])


def test_jobs_are_ordered_by_group_with_the_baseline_first():
    jobs = [(["a1", "L3"], "g3", False), (["base", "L3"], "g3", True), (["a1", "L4"], "g4", False),
            (["base", "L4"], "g4", True), (["a3", "L3"], "g3", False), (["a3", "L4"], "g4", False)]
    ordered = [overrides for overrides, _, _ in by_group(jobs)]
    assert ordered == [["base", "L3"], ["a1", "L3"], ["a3", "L3"], ["base", "L4"], ["a1", "L4"], ["a3", "L4"]]
    keys = [key for _, key, _ in by_group(jobs)]
    assert task_slices(keys, CellsPerTask.group) == [range(0, 3), range(3, 6)]
    assert task_slices(keys, CellsPerTask.cell) == [range(i, i + 1) for i in range(6)]


def test_cells_per_task_defaults_and_a_bad_value_is_one_line():
    assert _compose(["hydra/launcher=local"]).hydra.launcher.cells_per_task == CellsPerTask.group
    assert _compose(["hydra/launcher=slurm"]).hydra.launcher.cells_per_task == CellsPerTask.cell
    assert _compose(["hydra/launcher=slurm", "hydra.launcher.cells_per_task=group"]).hydra.launcher.cells_per_task \
        == CellsPerTask.group
    with pytest.raises(ConfigError) as err:
        _compose(["hydra/launcher=local", "hydra.launcher.cells_per_task=node"])
    assert str(err.value) == ("hydra.launcher.cells_per_task=node is invalid: Invalid value 'node', expected one of "
                              "[group, cell]")


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:1].isdigit()),
                  key=lambda p: int(p.name.split("_")[0]))


def _task_folders(sweep_dir: Path) -> list[Path]:
    """submitit's job folders: one per submitted task (its first, template-named folder is not one)."""
    return [p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]


def _job_id(job: Path) -> str:
    return str(yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def _identity(job: Path) -> str:
    return json.loads((job / "status.json").read_text())["identity"]


@pytest.mark.slow
def test_a_local_sweep_runs_one_process_per_group(tmp_path):
    """Two groups (two benchmark samples) of three cells (two OutRo strengths and their
    baseline), named interleaved on the command line: two task processes, each running its
    group's cells as separate Hydra jobs, baseline first."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=local", "outro.alpha=0.1,0.3", "benchmark.limit=3,4", *LIGHT,
                      "logger.mode=disabled"], tmp_path, sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep: 6 succeeded, 0 skipped (already done), 0 failed, of 6 cells" in result.stdout
    assert len(list((tmp_path / "cells").glob("*/DONE"))) == 6
    jobs = _jobs(sweep_dir)
    assert [int(j.name.split("_")[0]) for j in jobs] == list(range(6))
    limits = [re.search(r"benchmark\.limit=(\d)", j.name)[1] for j in jobs]
    assert limits == ["3", "3", "3", "4", "4", "4"]  # each group's cells consecutive
    assert ["outro.enabled=false" in j.name for j in jobs] == [True, False, False, True, False, False]
    tasks = _task_folders(sweep_dir)
    assert len(tasks) == 2  # one process per group
    ids = [_job_id(j) for j in jobs]
    assert ids[:3] == [ids[0]] * 3 and ids[3:] == [ids[3]] * 3 and {ids[0], ids[3]} == {t.name for t in tasks}
    for job in jobs:  # each cell is its own job: its own status and its own log
        status = json.loads((job / "status.json").read_text())
        assert status["status"] == "succeeded" and 0 < status["seconds"] < 600  # the wall seconds of its cell
        (log,) = job.glob("*.log")
        assert f"cell {_identity(job)}:" in log.read_text()
        assert sum(f"cell {_identity(other)}:" in log.read_text() for other in jobs) == 1
    plan = json.loads((sweep_dir / "plan.json").read_text())
    assert len({entry["group"] for entry in plan}) == 2


@pytest.mark.slow
def test_the_basic_launcher_runs_each_group_back_to_back_baseline_first(tmp_path):
    """The default launcher runs the jobs in the sweeper's order (a dry run: no model)."""
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "outro.alpha=0.1,0.3", "benchmark.limit=3,4", "+dry_run=true", *LIGHT], tmp_path, sweep_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _jobs(sweep_dir)
    assert [re.search(r"benchmark\.limit=(\d)", j.name)[1] for j in jobs] == ["3", "3", "3", "4", "4", "4"]
    assert ["outro.enabled=false" in j.name for j in jobs] == [True, False, False, True, False, False]
    assert not (sweep_dir / ".submitit").exists()  # in the submitting process


def _conflicting_shards(cell: Path) -> None:
    """Two valid shards that disagree on question 0: reading them raises ShardConflictError
    inside the cell, after its W&B run has started."""
    from outro_sweep.predict.shards import write_shard

    write_shard(cell / "shards", [{"index": 0, "letter": "A"}], rank=0)
    write_shard(cell / "shards", [{"index": 0, "letter": "B"}], rank=0)


@pytest.mark.slow
def test_a_failing_cell_of_a_group_fails_alone(tmp_path):
    """The middle cell of a three-cell group fails; the group's task runs the next cell, and the
    summary, markers, statuses and W&B runs say which one failed."""
    args = ["outro.alpha=0.1,0.3", "benchmark.limit=3", *LIGHT, "logger.mode=offline"]
    failing = _plain(["outro.alpha=0.1", "benchmark.limit=3", *LIGHT, f"paths.output_dir={tmp_path}"])
    from outro_sweep.cell.identity import cell_identity

    bad_cell = tmp_path / "cells" / cell_identity(failing)
    _conflicting_shards(bad_cell)
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=local", *args], tmp_path, sweep_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "sweep: 2 succeeded, 0 skipped (already done), 1 failed, of 3 cells" in result.stdout
    assert len(_task_folders(sweep_dir)) == 1  # the three cells ran in one process
    statuses = {_identity(job): json.loads((job / "status.json").read_text()) for job in _jobs(sweep_dir)}
    assert statuses[bad_cell.name]["status"] == "failed"
    assert "two different predictions" in statuses[bad_cell.name]["error"]
    assert sorted(s["status"] for s in statuses.values()) == ["failed", "succeeded", "succeeded"]
    assert list(statuses)[1] == bad_cell.name  # the middle job: the job after it ran in the same process
    for cell in (tmp_path / "cells").iterdir():
        failed = cell == bad_cell
        assert (cell / "FAILED").exists() == failed and (cell / "DONE").exists() != failed
        (run_file,) = find_runs(cell)
        assert read_run(run_file).exit_code == (1 if failed else 0)


def _shard_indices(cell: Path) -> list[int]:
    """Every question index of every shard of ``cell``, duplicates kept."""
    from outro_sweep.predict.shards import read_shard_set

    return sorted(r["index"] for shard in read_shard_set(cell / "shards").shards for r in shard.records)


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the submitting process and every process below it (its controllers and task)."""
    below = psutil.Process(process.pid).children(recursive=True)
    for p in [psutil.Process(process.pid), *below]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    process.wait(timeout=60)
    psutil.wait_procs(below, timeout=30)


@pytest.mark.slow
def test_a_killed_grouped_sweep_resumes_every_sample_once(tmp_path):
    """SIGKILL of the whole grouped run while its second cell is half done (one question per
    batch and shard): the rerun skips the finished baseline, resumes the second cell from its
    shards and runs the third; every cell holds every question exactly once."""
    limit = 6
    args = ["-m", "hydra/launcher=local", "outro.alpha=0.1,0.3", f"benchmark.limit={limit}",
            "benchmark.scoring=generate", "benchmark.max_new_tokens=2", "predict.batch_size=1",
            "trainer.enable_progress_bar=false", "logger.mode=disabled"]
    first = subprocess.Popen(cli_command(args, tmp_path, tmp_path / "sweep1"), cwd=REPO, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cells = tmp_path / "cells"

    def half_done() -> Path | None:
        done = list(cells.glob("*/DONE")) if cells.is_dir() else []
        partial = [c for c in cells.glob("*") if not (c / "DONE").exists() and 0 < len(_shard_indices(c)) < limit]
        return partial[0] if len(done) == 1 and partial else None

    deadline, partial = time.monotonic() + 600, None
    while partial is None and first.poll() is None and time.monotonic() < deadline:
        partial = half_done()
        time.sleep(0.05)
    assert partial is not None, "the second cell never had some but not all of its shards"
    _kill_tree(first)
    resumed = len(_shard_indices(partial))
    rerun = run_cli(args, tmp_path, tmp_path / "sweep2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "sweep: 2 succeeded, 1 skipped (already done), 0 failed, of 3 cells" in rerun.stdout
    assert len(_task_folders(tmp_path / "sweep2")) == 1
    for cell in cells.iterdir():
        assert (cell / "DONE").exists()
        assert _shard_indices(cell) == list(range(limit)), cell.name
        assert [json.loads(line)["index"] for line in (cell / "predictions.jsonl").read_text().splitlines()] \
            == list(range(limit))
    logs = "".join(p.read_text() for p in (tmp_path / "sweep2").glob("*/*.log"))
    assert f"predictions: {resumed} resumed + {limit - resumed} predicted now = {limit}" in logs


@pytest.mark.slow
def test_ctrl_c_on_a_grouped_local_sweep_leaves_no_child(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group) while the group's task predicts:
    the task process is stopped, its shards are kept and no cell is marked failed."""
    from tests import test_signals as sig

    out, log = tmp_path / "out", tmp_path / "run.log"
    process = sig._start(sig._command(out, ["-m", "hydra/launcher=local", "outro.alpha=0.1,0.3", "baseline=false",
                                            *sig.LONG, "benchmark.limit=8"]), log)
    sig._wait_until(lambda: (len(sig._cell_tasks(process)) == 1 and sig._shards(out)) or process.poll() is not None,
                    600, "the group's task with a shard")
    assert process.poll() is None, log.read_text()[-2000:]
    below = psutil.Process(process.pid).children(recursive=True)
    sig._stop(process, signal.SIGINT, group=True)
    text = log.read_text()
    assert process.returncode == 130, text[-3000:]
    assert "interrupted by SIGINT: stopped 1 running task process (their shards are kept)" in text
    assert not sig._alive(below) and not sig._using(out)
    assert "Traceback" not in text
    assert sig._shards(out) and not sig._failed_markers(out)


@pytest.mark.slow
def test_a_killed_group_task_fails_the_cells_it_had_not_finished(tmp_path):
    """SIGKILL of the group's task process (as the OOM killer would) while its second cell
    predicts: the finished first cell counts as succeeded, the second and the never-started third
    as failed, each named; the summary counts cells."""
    from tests import test_signals as sig

    out, log = tmp_path / "out", tmp_path / "run.log"
    sweep_dir = tmp_path / "sweep"
    process = sig._start(sig._command(out, ["-m", "hydra/launcher=local", "outro.alpha=0.1,0.3", *sig.LONG,
                                            "benchmark.limit=6", f"hydra.sweep.dir={sweep_dir}"]), log)

    def second_cell_predicting():
        second = next(iter(sweep_dir.glob("1_*")), None)
        shards = second / "cell" / "shards" if second is not None else None
        return shards is not None and shards.is_dir() and any(shards.glob("*.jsonl")) and sig._cell_tasks(process)

    (task,) = sig._wait_until(lambda: second_cell_predicting() or process.poll() is not None, 600,
                              "the group's second cell with a shard")
    task.kill()
    process.wait(timeout=900)
    text = log.read_text()
    assert process.returncode == 1, text[-3000:]
    assert "sweep: 1 succeeded, 0 skipped (already done), 2 failed, of 3 cells" in text
    assert re.search(r"^failed: 1_\S+: .*(killed|died without a status)", text, re.M), text[-3000:]
    assert re.search(r"^failed: 2 \(outro\.alpha=0\.3 .*\): .*(killed|died without a status)", text, re.M), text[-3000:]
    lost = json.loads((sweep_dir / "lost.json").read_text())
    assert sorted(entry["job"] for entry in lost) == [1, 2]  # the baseline reported its own status
    assert len(list(out.glob("cells/*/DONE"))) == 1 and not sig._using(out)


@pytest.mark.slow
def test_a_sweep_under_torchrun_runs_each_group_on_both_processes_and_reports_once(tmp_path):
    """``torchrun --nproc_per_node=2 -m outro_sweep -m ...``: each process runs the sweep's cells
    in one group (the basic launcher), each cell predicts over both processes (gloo on the CPU),
    each process shares its own model load and prefixes, and rank 0 alone reports the sweep;
    the predictions equal the same sweep in one process."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun not found beside {sys.executable}")
    sweep = ["-m", "outro.alpha=0.1,0.3", "benchmark.limit=6", "predict.batch_size=2", "benchmark.max_new_tokens=4",
             "trainer.enable_progress_bar=false", "logger.mode=disabled"]
    one = run_cli(sweep, tmp_path / "one", tmp_path / "one_sweep")
    assert one.returncode == 0, one.stderr[-3000:]
    command = cli_command(sweep, tmp_path / "two", tmp_path / "two_sweep")
    two = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={free_port()}", *command[1:]],
                         cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    output = two.stdout + two.stderr
    assert two.returncode == 0, output[-4000:]
    assert output.count("sweep: 3 succeeded, 0 skipped (already done), 0 failed, of 3 cells") == 1  # rank 0 alone
    assert output.count("to predict now on 2 processes") == 3  # every cell over both processes
    for cell in (tmp_path / "one" / "cells").iterdir():
        twin = tmp_path / "two" / "cells" / cell.name
        assert (twin / "DONE").is_file()
        assert (twin / "predictions.jsonl").read_text() == (cell / "predictions.jsonl").read_text()
    shares = [json.loads(path.read_text()) for path in (tmp_path / "two_sweep").glob("*/sharing.json")]
    assert max(s["model_loads"] for s in shares) == 1  # rank 0's counters: one load for the group
