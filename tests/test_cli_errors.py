"""Bad input: one line naming the key and the valid values, before the model loads,
a non-zero exit code, and no metrics.json left behind."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from tests.test_sweep_e2e import run_cli

CASES = {
    "negative alpha": (["outro.alpha=-1"], ["outro.alpha", ">= 0"]),
    "nan alpha": (["outro.alpha=nan"], ["outro.alpha", ">= 0"]),
    "zero temperature": (["outro.temperature=0"], ["outro.temperature", "> 0"]),
    "layer out of range": (["outro.layer=30"], ["outro.layer", "0..29"]),
    "rotate_decode not a bool nor official": (["outro.rotate_decode=maybe"], ["outro.rotate_decode", "official"]),
    "layer list out of range": (["outro.layer=[2,31]"], ["outro.layer", "0..29"]),
    "unknown sink": (["sink=nonsense"], ["sink=nonsense", "massive_activation", "first_k"]),
    "unknown model in a sweep": (["-m", "model=smollm2_135m,gpt5"], ["model=gpt5", "hf_causal_lm"]),
    "text benchmark with a video model": (["model=qwen2_5_vl_7b", "model.path=/tmp"], ["model=qwen2_5_vl_7b", "video"]),
    "video model with bad pixel limits": (
        ["model=qwen2_5_vl_7b", "model.min_pixels=5000", "model.max_pixels=100"], ["model.min_pixels", "max_pixels"]),
    "audio on a video-only model": (["model=qwen2_5_vl_7b", "model.use_audio=true"], ["model.use_audio", "omni"]),
    "missing data_dir": (["benchmark=mmlu", "benchmark.data_dir=/nonexistent/mmlu"], ["benchmark.data_dir"]),
    "no questions": (["benchmark.limit=0"], ["no questions", "benchmark.limit"]),
    "video benchmark with a text model": (
        ["benchmark=tgif_qa", "benchmark.data_dir=" + str(SHARED_DATA / "video_qa" / "tgif_qa"), "benchmark.video_dir=/tmp"],
        ["benchmark=tgif_qa", "model=smollm2_135m", "qwen2_5_vl_7b"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, tmp_path):
    args, needles = CASES[name]
    if "video" in name and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real TGIF-QA annotations under {SHARED_DATA}")
    if "-m" in args:
        args = [*args, f"hydra.sweep.dir={tmp_path}/multirun"]
    result = run_cli(args, tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0]
    assert "Traceback" not in result.stderr
    assert "Loading weights" not in result.stderr + result.stdout  # the model never loaded
    assert not list(tmp_path.rglob("metrics.json"))
    assert not list(tmp_path.rglob("*.wandb"))
