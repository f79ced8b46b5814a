"""The cell identity changes exactly when a cell's results could.

Configs are composed in-process from the real conf/ (as the sweeper composes them) with the
tiny random Llama of tests/conftest.py as a local model folder, copies of real MMLU CSVs and
real clips from ../shared/data; the sweeper, the job and the golden prediction digest run the
real CLI in subprocesses. Nothing is mocked: a "new process" is simulated by clearing the
fingerprint module's in-process memo, and file reads are counted by wrapping ``sha256_file``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import outro_sweep

from outro_sweep.cell.identity import identity_inputs, identity_of
from outro_sweep.cells import main as cells_main
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.files import fingerprint

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "model.safetensors"


def composed(*overrides: str):
    """The cell config the sweeper composes for ``overrides`` (no hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def identity(*overrides: str) -> str:
    return identity_of(composed(*overrides))


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model folder (its files may be rewritten)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture()
def fresh_memo(monkeypatch):
    """An empty in-process fingerprint memo: the next computation behaves as a new process's."""
    monkeypatch.setattr(fingerprint, "_memo", {})


def tiny(model: Path, cache: Path, *more: str) -> list[str]:
    return ["model=hf_causal_lm", f"model.path={model}", f"paths.cache_dir={cache}", "benchmark.limit=2",
            "benchmark.scoring=logits", *more]


def run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "outro_sweep", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def environment(tmp_path: Path, name: str, **extra: str) -> dict:
    """A process environment with its own HOME and cache location."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "HOME": str(tmp_path / f"home_{name}"),
           "OUTRO_SWEEP_CACHE": str(tmp_path / f"cache_{name}"), **extra}
    env.pop("PYTHONPATH", None)
    return {**env, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------------------- sweeper = job


@pytest.mark.slow
def test_the_sweeper_and_the_job_agree_in_different_environments(tiny_model_dir, tmp_path, monkeypatch):
    """The sweeper plans the cell (``+dry_run=true``: plan.json holds the identities it computed)
    in one environment; the job runs it in another, with a secret-named variable equal to the
    model path (so config.yaml shows ``***`` there), and records its identity in config.yaml.
    The two agree, and so does an in-process composition in a third environment."""
    out = tmp_path / "out"
    cell = ["model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark.limit=2", "benchmark.scoring=logits",
            "outro.layer=auto", "logger.mode=disabled", f"paths.output_dir={out}"]
    run_cli(["-m", *cell, "+dry_run=true", f"hydra.sweep.dir={tmp_path / 'plan'}"], environment(tmp_path, "a"))
    planned = json.loads((tmp_path / "plan" / "plan.json").read_text())
    job_env = environment(tmp_path, "b", MY_API_TOKEN=str(tiny_model_dir), A_TOKEN="generate")
    run_cli([*cell, f"hydra.run.dir={tmp_path / 'run'}"], job_env)
    [cell_dir] = (out / "cells").iterdir()
    written = yaml.safe_load((cell_dir / "config.yaml").read_text())
    assert written["model"]["path"] == "***"  # masked on output ...
    on_cell = [entry["identity"] for entry in planned if not entry["baseline"]]
    assert on_cell == [written["identity"]] == [cell_dir.name]  # ... never in what is hashed
    assert {entry["identity"] for entry in planned if entry["baseline"]} == {written["baseline_identity"]}
    monkeypatch.setenv("HOME", str(tmp_path / "home_c"))
    monkeypatch.setenv("OUTRO_SWEEP_CACHE", str(tmp_path / "cache_c"))
    assert identity(*cell) == written["identity"]


# ---------------------------------------------------------------------------- content


def test_new_weights_at_the_same_path_make_a_new_cell_and_are_hashed_once(model_copy, tmp_path, monkeypatch,
                                                                          fresh_memo):
    reads = []
    real_sha = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda path: reads.append(Path(path).name) or real_sha(path))
    cache = tmp_path / "cache"
    args = tiny(model_copy, cache)
    before = identity(*args)
    assert WEIGHTS in reads and "config.json" in reads and "tokenizer.json" in reads
    entries = json.loads((cache / fingerprint.CACHE_FILE).read_text())
    assert str((model_copy / WEIGHTS).resolve()) in entries

    reads.clear()
    monkeypatch.setattr(fingerprint, "_memo", {})  # a new process: only the cache file remains
    assert identity(*args) == before and reads == []  # the cache answered; no file content was read

    weights = model_copy / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor: same name, same size, new bytes
    weights.write_bytes(bytes(data))
    after = identity(*args)
    assert after != before and reads == [WEIGHTS]  # only the rewritten file is read again


def test_new_weights_of_the_judge_model_make_a_new_cell(model_copy, tmp_path, fresh_memo):
    """judge=llm: the judge's model grades the answers, so its files are fingerprinted like the
    cell's own model; judge=off cells have no such input."""
    judged = ["judge=llm", "model@judge.model=hf_causal_lm", f"judge.model.path={model_copy}",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    before = identity(*judged)
    assert "judge_model_files" not in identity_inputs(OmegaConf.to_container(composed(), resolve=True))
    weights = model_copy / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert identity(*judged) != before


def test_a_hub_id_is_fingerprinted_from_its_snapshot_in_the_local_hf_cache(model_copy, tmp_path, monkeypatch,
                                                                            fresh_memo):
    """A local HF cache in its real layout (refs/main -> snapshots/<commit>/), holding the tiny
    model under a hub id: the id's files are those of its snapshot, hashed like a folder's."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--tiny"
    commit = "0" * 40
    shutil.copytree(model_copy, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cache = tmp_path / "cache"
    by_id = identity_inputs(OmegaConf.to_container(composed(*tiny("org/tiny", cache)), resolve=True))
    by_folder = identity_inputs(OmegaConf.to_container(composed(*tiny(model_copy, cache)), resolve=True))
    assert by_id["model_files"] == by_folder["model_files"] and WEIGHTS in by_id["model_files"]
    before = identity(*tiny("org/tiny", cache))
    (repo / "snapshots" / commit / "config.json").write_text((model_copy / "config.json").read_text() + "\n")
    assert identity(*tiny("org/tiny", cache)) != before  # the id now names other content


def test_an_edited_answer_key_makes_a_new_cell(shared_data, tmp_path, fresh_memo):
    data = tmp_path / "mmlu"
    for split in ("dev", "val", "test"):
        (data / split).mkdir(parents=True)
        shutil.copy(shared_data / "text_mc" / "mmlu" / split / f"anatomy_{split}.csv", data / split)
    args = ["benchmark=mmlu", f"benchmark.data_dir={data}", "benchmark.subjects=[anatomy]", "benchmark.limit=4",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    before = identity(*args)
    inputs = identity_inputs(OmegaConf.to_container(composed(*args), resolve=True))
    assert list(inputs["benchmark_files"]) == ["test/anatomy_test.csv"]  # what this cell reads, no more
    answers = data / "test" / "anatomy_test.csv"
    with open(answers, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    rows[0][5] = "B" if rows[0][5] != "B" else "C"  # the first question's answer letter, edited in place
    with open(answers, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    assert identity(*args) != before
    assert identity(*args, "benchmark.num_fewshot=2") != identity(*args)  # dev/ is read then


def test_adding_removing_or_replacing_a_clip_makes_a_new_cell(shared_data, tmp_path, fresh_memo):
    """A video benchmark's identity holds the names and sizes of its clips (the model is a hub
    id that is not cached here: only the benchmark side is under test)."""
    videos = Path(shutil.copytree(shared_data / "videos" / "dailyomni_examples", tmp_path / "videos"))
    args = ["model=qwen2_5_vl_3b", "benchmark=dailyomni", f"benchmark.data_dir={videos}",
            "benchmark.qa_file=qa_for_these_3_videos.json", f"benchmark.video_dir={videos}", "outro=off",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    reference = identity(*args)
    media = identity_inputs(OmegaConf.to_container(composed(*args), resolve=True))["media"]
    assert len(media) == 3 and all(name.endswith("_video.mp4") for name in media)
    clip = next(videos.rglob("*_video.mp4"))
    moved = clip.with_name("hidden.bin")
    clip.rename(moved)
    removed = identity(*args)
    moved.rename(clip)
    assert identity(*args) == reference  # the same clips again: the same cell
    with open(clip, "ab") as handle:
        handle.write(b"\0" * 16)  # replaced by a different file
    assert len({reference, removed, identity(*args)}) == 3


def test_a_new_results_version_makes_a_new_cell(monkeypatch):
    before = identity("benchmark.limit=2")
    monkeypatch.setattr(outro_sweep, "RESULTS_VERSION", outro_sweep.RESULTS_VERSION + 1)
    assert identity("benchmark.limit=2") != before


# ---------------------------------------------------------------------------- the environment


def test_secrets_in_the_environment_never_merge_two_cells(model_copy, tmp_path, monkeypatch):
    """Values equal to secret-looking variables are masked in config.yaml; the identities differ."""
    monkeypatch.setenv("A_TOKEN", "generate")
    monkeypatch.setenv("B_TOKEN", "logits")
    assert identity("benchmark.scoring=logits") != identity("benchmark.scoring=generate")
    other = Path(shutil.copytree(model_copy, tmp_path / "model-13b"))  # same bytes, another model.path
    monkeypatch.setenv("TOKENIZER_PATH", str(model_copy))
    cache = tmp_path / "cache"
    assert identity(*tiny(model_copy, cache)) != identity(*tiny(other, cache))


def test_where_files_go_does_not_change_the_identity(model_copy, tmp_path, monkeypatch):
    args = tiny(model_copy, tmp_path / "cache")
    reference = identity(*args)
    assert identity(*args, "logger.mode=disabled") == reference
    assert identity(*args, f"paths.output_dir={tmp_path / 'elsewhere'}") == reference
    assert identity(*args, "predict.num_workers=3") == reference
    assert identity(*args[:2], *args[3:], f"paths.cache_dir={tmp_path / 'moved'}") == reference
    monkeypatch.setenv("OUTRO_SWEEP_CACHE", str(tmp_path / "env_cache"))  # the default cache_dir follows it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert identity(*args[:2], *args[3:]) == reference
    assert identity(*args, "predict.batch_size=1") != reference  # batching changes padding: a new cell


# ---------------------------------------------------------------------------- canonical settings


def test_equal_settings_written_differently_are_one_cell(model_copy, tmp_path):
    """3 and 3.0 hash alike; ``layer: auto`` hashes as the layers it resolves to (the 4-layer
    tiny model: step max(1, 4 // 7) = 1 below L - 2 = 2, so [0, 1])."""
    args = tiny(model_copy, tmp_path / "cache")
    assert identity(*args, "outro.alpha=3") == identity(*args, "outro.alpha=3.0")
    assert identity(*args, "outro.alpha=3") != identity(*args, "outro.alpha=3.5")
    auto = identity(*args, "outro.layer=auto")
    assert auto == identity(*args, "outro.layer=[0,1]") == identity(*args, "outro.layer=[1,0]")
    assert identity(*args, "outro.layer=1") == identity(*args, "outro.layer=[1]") != auto
    assert identity(*args, "seed=1") != identity(*args, "seed=1.5")  # a non-integral float stays itself


# ---------------------------------------------------------------------------- cells diff


def test_cells_diff_names_the_differing_inputs(tmp_path, capsys):
    cells = tmp_path / "cells"
    inputs = {"results_version": 1, "config": {"benchmark": {"scoring": "logits"}, "seed": 0},
              "model_files": {"model.safetensors": "aa", "config.json": "cc"}, "benchmark_files": {}, "media": {}}
    other = json.loads(json.dumps(inputs))
    other["config"]["benchmark"]["scoring"] = "generate"
    other["model_files"]["model.safetensors"] = "bb"
    for name, recorded in (("aaaaaaaaaaaa", inputs), ("bbbbbbbbbbbb", other)):
        (cells / name).mkdir(parents=True)
        (cells / name / "config.yaml").write_text(yaml.safe_dump({"identity": name, "identity_inputs": recorded}))
    assert cells_main(["diff", "aaaaaaaaaaaa", str(cells / "bbbbbbbbbbbb"), "--output-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["  config.benchmark.scoring: logits | generate", "  model_files[model.safetensors]: aa | bb"]
    assert cells_main(["diff", "aaaaaaaaaaaa", "aaaaaaaaaaaa", "--output-dir", str(tmp_path)]) == 0
    assert cells_main(["show", "missing", "--output-dir", str(tmp_path)]) == 2
    assert "error: cell 'missing'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the results version

# sha256 of every (scoring, outro on/off, question id, output, parsed letter) of the tiny sweep
# below, and the RESULTS_VERSION it was made with. Predictions changed on purpose: bump
# outro_sweep.RESULTS_VERSION, then put the new version and the digest the failure prints here.
GOLDEN_VERSION = 1
GOLDEN_DIGEST = "053e48d4c4f676d7"


@pytest.mark.slow
def test_predictions_match_the_golden_digest_of_this_results_version(tmp_path):
    """Two scorings x OutRo on/off on four builtin_mc questions, on the real SmolLM2 on the CPU,
    through the real CLI (prediction, parsing, scoring); the digest covers what a cell predicts,
    not float logits."""
    out = tmp_path / "out"
    run_cli(["-m", "benchmark.limit=4", "benchmark.max_new_tokens=6", "benchmark.scoring=logits,generate",
             "outro.enabled=true,false", "trainer.accelerator=cpu", "logger.mode=disabled", "baseline=false",
             f"paths.output_dir={out}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"})
    rows = []
    for cell in sorted((out / "cells").iterdir()):
        config = yaml.safe_load((cell / "config.yaml").read_text())
        for line in (cell / "predictions.jsonl").read_text().splitlines():
            record = json.loads(line)
            rows.append([config["benchmark"]["scoring"], config["outro"]["enabled"], record["id"],
                         record["output"], record["prediction"]])
    assert len(rows) == 16
    digest = hashlib.sha256(json.dumps(sorted(rows, key=str)).encode()).hexdigest()[:16]
    if outro_sweep.RESULTS_VERSION != GOLDEN_VERSION:
        pytest.fail(f"RESULTS_VERSION is {outro_sweep.RESULTS_VERSION}, the golden digest was made with "
                    f"{GOLDEN_VERSION}: set GOLDEN_VERSION = {outro_sweep.RESULTS_VERSION} and "
                    f"GOLDEN_DIGEST = {digest!r} in tests/test_identity.py")
    assert digest == GOLDEN_DIGEST, (f"predictions changed: bump RESULTS_VERSION and update the digest "
                                     f"(GOLDEN_DIGEST = {digest!r} in tests/test_identity.py)")
