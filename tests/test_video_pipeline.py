"""Video benchmarks through ``python -m outro_sweep``, end to end, in subprocesses.

The models are tiny random-weight ones (tests/tiny_vlms.py) saved to a folder, because real
checkpoints cannot be downloaded here (no Hugging Face Hub); everything else is real: the
real NExT-QA annotation files with stand-in clips written by PyAV under the names they
reference, the three real Daily-Omni clips with their nine real questions and audio, PyAV
decoding, the on-disk frame cache, Lightning's predict loop and the prediction writer.
Random weights answer at random, so the tests check what the pipeline did with the answers
(records, scoring, errors, cache), not how good they are.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import tiny_vlms
from tests.test_video_decode import write_mp4

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test reads the output of a subprocess run
DAILYOMNI_VIDEOS = ("G_VTkkb34gw", "bswbQtOPk6E", "d6b4OmUFt7I")
# Keep the tiny models' inputs small: 4 frames of at most 56x56 pixels.
SMALL = ["model.num_frames=4", "model.fps=null", "model.min_pixels=784", "model.max_pixels=3136",
         "model.dtype=float32"]


def run_cli(args: list[str], run_dir: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """One cell with its own output folder ``run_dir`` (the Hydra job folder is ``run_dir/job``,
    the cell's results ``run_dir/job/cell``); ``cache_dir`` may be shared between runs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "outro_sweep", *args, "logger.mode=disabled", f"paths.output_dir={run_dir}",
         f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir / 'job'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


def cell(run_dir: Path) -> Path:
    return run_dir / "job" / "cell"


def records(run_dir: Path) -> list[dict]:
    lines = (cell(run_dir) / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def metrics(run_dir: Path) -> dict:
    return json.loads((cell(run_dir) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    return tiny_vlms.save("qwen2_5_vl", tmp_path_factory.mktemp("tiny_qwen2_5_vl"))


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory) -> Path:
    return tiny_vlms.save("qwen2_5_omni_thinker", tmp_path_factory.mktemp("tiny_omni"))


# ----------------------------------------------------------------------------- NExT-QA


@pytest.fixture(scope="module")
def nextqa(shared_data, tmp_path_factory) -> dict:
    """The real NExT-QA val annotations; stand-in clips for its first 6 questions' videos: the
    first 4 distinct videos are good mp4s, the 5th is corrupt, the 6th is absent."""
    data_dir = shared_data / "video_qa" / "nextqa"
    mapping = json.loads((data_dir / "map_vid_vidorID.json").read_text())
    with open(data_dir / "val.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:6]
    videos = list(dict.fromkeys(mapping[row["video"]] + ".mp4" for row in rows))
    video_dir = tmp_path_factory.mktemp("nextqa_videos")
    for number, name in enumerate(videos):
        path = video_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if number == len(videos) - 1 and len(videos) > 1:
            continue  # absent
        if number == len(videos) - 2:
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 8)  # corrupt
        else:
            write_mp4(path, audio=False, num_frames=12, fps=6, noise=True)
    return {"data_dir": data_dir, "video_dir": video_dir, "rows": rows, "videos": videos}


def nextqa_args(tiny_qwen: Path, nextqa: dict, *more: str) -> list[str]:
    return ["model=qwen2_5_vl_7b", f"model.path={tiny_qwen}", *SMALL, "benchmark=nextqa_mc",
            f"benchmark.data_dir={nextqa['data_dir']}", f"benchmark.video_dir={nextqa['video_dir']}",
            "benchmark.limit=6", "benchmark.max_new_tokens=3", "predict.batch_size=2", "outro.layer=1",
            "outro.alpha=1.0", *more]


def test_missing_videos_fail_before_the_model_loads(tiny_qwen, nextqa, tmp_path):
    result = run_cli(nextqa_args(tiny_qwen, nextqa), tmp_path / "run", tmp_path / "cache")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert f"1 of {len(nextqa['videos'])} video is missing ({nextqa['videos'][-1]})" in lines[0]
    assert "benchmark.skip_missing=true" in lines[0]
    assert not list((tmp_path / "run").glob("cells/*/predictions.jsonl"))  # nothing ran
    assert not list((tmp_path / "run").glob("cells/*/DONE"))  # nothing looks finished
    assert not (tmp_path / "cache" / "frames").exists()  # not a single clip was decoded


@pytest.fixture(scope="module")
def nextqa_runs(tiny_qwen, nextqa, tmp_path_factory) -> dict:
    """The same cell twice with one frame cache: skip_missing on, one corrupt clip."""
    tmp = tmp_path_factory.mktemp("nextqa_runs")
    args = nextqa_args(tiny_qwen, nextqa, "benchmark.skip_missing=true")
    first = run_cli(args, tmp / "first", tmp / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(args, tmp / "second", tmp / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"first": tmp / "first", "second": tmp / "second", "stdout": first.stdout, "cache": tmp / "cache"}


def expected_questions(nextqa: dict) -> list[dict]:
    """The val.csv rows the cell must answer: in file order, those whose clip exists (skip_missing
    drops the rest of the file too), then the first 6."""
    mapping = json.loads((nextqa["data_dir"] / "map_vid_vidorID.json").read_text())
    with open(nextqa["data_dir"] / "val.csv", newline="") as handle:
        rows = [dict(row, file=mapping[row["video"]] + ".mp4") for row in csv.DictReader(handle)]
    return [row for row in rows if row["file"] in nextqa["videos"][:-1]][:6]


def test_nextqa_records_follow_the_annotations(nextqa_runs, nextqa):
    expected = expected_questions(nextqa)
    got = sorted(records(nextqa_runs["first"]), key=lambda r: r["index"])
    assert [r["id"] for r in got] == [f"nextqa_mc/val/{row['qid']}_{row['video']}" for row in expected]
    for record, row in zip(got, expected):
        assert record["kind"] == "mc" and record["video"] == row["file"]
        assert record["target"] == "ABCDE"[int(row["answer"])]
        assert record["question"] == row["question"]
        assert record["categories"]["type"] == row["type"]
        assert record["valid"] == (record["prediction"] is not None)
        assert record["correct"] == (record["prediction"] == record["target"])


def test_corrupt_video_is_an_error_record_not_a_crash(nextqa_runs, nextqa):
    corrupt = nextqa["videos"][-2]
    got = records(nextqa_runs["first"])
    broken = [r for r in got if r["video"] == corrupt]
    assert broken and all(r["error"] and corrupt.split("/")[-1] in r["error"] for r in broken)
    assert all(not r["valid"] and not r["correct"] and r["frames"] is None for r in broken)
    fine = [r for r in got if r["video"] != corrupt]
    assert fine and all(r["error"] is None and r["frames"] == 4 for r in fine)
    m = metrics(nextqa_runs["first"])
    assert m["errors"] == len(broken)
    assert m["n"] == len(got)  # an error counts as a wrong answer, it is not dropped
    mapping = json.loads((nextqa["data_dir"] / "map_vid_vidorID.json").read_text())
    with open(nextqa["data_dir"] / "val.csv", newline="") as handle:
        absent = sum(1 for row in csv.DictReader(handle) if mapping[row["video"]] + ".mp4" not in nextqa["videos"][:-1])
    assert m["skipped_missing"] == absent >= 1
    assert f"skipped missing={m['skipped_missing']}" in nextqa_runs["stdout"]
    assert set(m["by_category"]) == {"type", "group"}


def test_second_run_loads_every_clip_from_the_cache(nextqa_runs):
    first, second = records(nextqa_runs["first"]), records(nextqa_runs["second"])
    good = {r["video"] for r in first if r["error"] is None}
    # First run: each good clip decoded once; a later question about the same clip is a hit.
    decoded = [r["video"] for r in first if r["video_cache"] == "decoded"]
    assert sorted(decoded) == sorted(good)
    assert metrics(nextqa_runs["first"])["video_cache"]["decoded"] == len(good)
    # Second run: not one decode.
    assert all(r["video_cache"] == "hit" for r in second if r["error"] is None)
    assert metrics(nextqa_runs["second"])["video_cache"] == {"hit": len([r for r in second if r["error"] is None]),
                                                          "decoded": 0, "failed": sum(1 for r in second if r["error"])}
    # Same frames in, same answers out.
    key = lambda r: r["index"]  # noqa: E731
    assert [r["output"] for r in sorted(first, key=key)] == [r["output"] for r in sorted(second, key=key)]
    assert len(list((nextqa_runs["cache"] / "frames").glob("*.npz"))) == len(good)


def test_cell_config_records_the_video_settings(nextqa_runs, tiny_qwen):
    config = yaml.safe_load((cell(nextqa_runs["first"]) / "config.yaml").read_text())
    assert config["model"]["path"] == str(tiny_qwen)
    assert config["model"]["num_frames"] == 4 and config["model"]["max_pixels"] == 3136
    assert config["choices"]["model"] == "qwen2_5_vl_7b" and config["choices"]["benchmark"] == "nextqa_mc"
    assert config["judge"]["enabled"] is False


# ----------------------------------------------------------------------------- Daily-Omni


@pytest.fixture(scope="module")
def dailyomni_run(shared_data, tiny_omni, tmp_path_factory) -> dict:
    """The paper's experiment config on the three real clips, audio on, tiny thinker."""
    examples = shared_data / "videos" / "dailyomni_examples"
    if not examples.is_dir():
        pytest.skip(f"Daily-Omni example videos not found at {examples}")
    tmp = tmp_path_factory.mktemp("dailyomni")
    result = run_cli(
        ["experiment=outro_paper_dailyomni", f"model.path={tiny_omni}", *SMALL, "model.max_side=160",
         f"benchmark.data_dir={examples}", "benchmark.qa_file=qa_for_these_3_videos.json",
         f"benchmark.video_dir={examples}", "predict.batch_size=3"],
        tmp / "run", tmp / "cache",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((examples / "qa_for_these_3_videos.json").read_text())
    return {"run": tmp / "run", "raw": raw, "examples": examples}


def test_paper_experiment_resolves_to_the_paper_settings(dailyomni_run):
    config = yaml.safe_load((cell(dailyomni_run["run"]) / "config.yaml").read_text())
    assert config["choices"]["model"] == "qwen2_5_omni_3b" and config["choices"]["benchmark"] == "dailyomni"
    assert config["outro"] == {**config["outro"], "enabled": True, "alpha": 3.0, "temperature": 0.1, "layer": "auto"}
    assert config["benchmark"]["max_new_tokens"] == 1 and config["model"]["use_audio"] is True


def test_dailyomni_real_clips_decoded_fed_with_audio_and_scored(dailyomni_run):
    got = sorted(records(dailyomni_run["run"]), key=lambda r: r["index"])
    raw = dailyomni_run["raw"]
    assert len(got) == len(raw) == 9
    assert {r["video"] for r in got} == {f"{v}/{v}_video.mp4" for v in DAILYOMNI_VIDEOS}
    for record, question in zip(got, raw):
        assert record["error"] is None and record["frames"] == 4
        assert 29.5 < record["audio_seconds"] < 30.5  # each real clip's own 30 s track was decoded
        assert record["target"] == question["Answer"]
        assert record["categories"]["type"] == question["Type"]
        assert len(record["output"]) <= 16  # one greedy token
        assert record["correct"] == (record["prediction"] == record["target"])
    m = metrics(dailyomni_run["run"])
    assert m["n"] == 9 and m["video_cache"]["decoded"] == 3 and m["video_cache"]["hit"] == 6
    assert m["diagnostics"]["outro"]["samples"] == 9  # OutRo ran on every answered question


def test_omni_audio_reaches_the_model_as_audio_tokens(dailyomni_run, tiny_omni, tmp_path):
    """The processor batch the pipeline builds for a real clip holds its audio features and
    audio placeholder tokens in proportion to the 30 s track (25 tokens per second)."""
    from outro_sweep.benchmarks.dailyomni import DailyOmni
    from outro_sweep.models.qwen2_5_omni import Qwen2_5Omni
    from outro_sweep.predict.data import ClipSource, Collator, QuestionDataset
    from outro_sweep.media.cache import FrameCache

    examples = dailyomni_run["examples"]
    bench = DailyOmni(data_dir=str(examples), qa_file="qa_for_these_3_videos.json", video_dir=str(examples))
    loader = Qwen2_5Omni(path=str(tiny_omni), name="omni", num_frames=4, use_audio=True, min_pixels=784,
                         max_pixels=3136, max_side=160)
    loaded = loader.load()
    dataset = QuestionDataset(bench.load()[:1], clips=ClipSource(bench, loader.sampling, FrameCache(tmp_path)))
    batch = Collator(loaded)([dataset[0]])
    inputs = batch["inputs"]
    assert inputs["input_features"].shape[0] == 1
    audio_id = loaded.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    audio_tokens = int((inputs["input_ids"] == audio_id).sum())
    assert 700 <= audio_tokens <= 760, audio_tokens  # 30 s * 25 audio tokens / s
    assert loader.generate_kwargs() == {"use_audio_in_video": True}


# ----------------------------------------------------------------------------- LLM judge


def test_llm_judge_grades_open_answers_and_is_recorded(shared_data, tiny_qwen, tmp_path):
    """ActivityNet-QA (real annotations, stand-in clips): the tiny VLM answers, the real SmolLM2
    judges the open answers; verdicts land in the records, identity and prompt in config and
    metrics."""
    data_dir = shared_data / "video_qa" / "activitynet_qa"
    questions = json.loads((data_dir / "test_q.json").read_text())
    answers = {a["question_id"]: a for a in json.loads((data_dir / "test_a.json").read_text())}
    video_dir = tmp_path / "videos"
    video_dir.mkdir()
    kind = lambda q: "yesno" if answers[q["question_id"]]["type"] == 3 else "open"  # noqa: E731
    # A clip for the first yes/no question's video; skip_missing drops every question about
    # another video, then limit=4 keeps the first four about this one (yes/no and open mixed).
    chosen = [q for q in questions if kind(q) == "yesno"][:1]
    wanted = [q for q in questions if q["video_name"] == chosen[0]["video_name"]][:4]
    kinds = [kind(q) for q in wanted]
    assert "open" in kinds and "yesno" in kinds, kinds
    for q in chosen:
        write_mp4(video_dir / f"v_{q['video_name']}.mp4", audio=False, num_frames=12, fps=6, noise=True)
    run = tmp_path / "run"
    result = run_cli(
        ["model=qwen2_5_vl_7b", f"model.path={tiny_qwen}", *SMALL, "benchmark=activitynet_qa",
         f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}", "benchmark.skip_missing=true",
         "benchmark.limit=4", "benchmark.max_new_tokens=4", "outro=off", "judge=llm", "judge.max_new_tokens=12"],
        run, tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = sorted(records(run), key=lambda r: r["index"])
    assert [r["kind"] for r in got] == kinds
    for record in got:
        if record["kind"] != "open":
            assert record["judge"] is None  # yes/no is scored exactly, never judged
            continue
        assert set(record["judge"]) == {"output", "verdict", "score"}
        assert isinstance(record["judge"]["output"], str) and record["judge"]["output"]
    config = yaml.safe_load((cell(run) / "config.yaml").read_text())
    identity = config["judge_identity"]
    assert identity["model"] == "smollm2_135m" and "{prediction}" in identity["prompt"]
    m = metrics(run)
    assert m["judge"] == identity and m["judge_n"] == kinds.count("open")
    assert m["judge_yes"] == sum(r["judge"]["verdict"] == "yes" for r in got if r["judge"])
