"""Bad input: one line naming the key and the valid values, before the model loads.

Every case is checked in process: the config is composed from conf/ as ``python -m outro_sweep``
composes it, then the checks a cell makes before its model loads run on it. One case of each
kind of error also runs the real command in a subprocess (slow): the exit code, the single
``error:`` line on stderr, no traceback, no model load and no metrics.json left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from outro_sweep.config.command_line import CONF_DIR, check_group_choices
from outro_sweep.errors import ConfigError
from outro_sweep.preflight.checks import check_cell
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
    # Every clip is absent from the (empty) video folder; model.path is never read by the check.
    "missing videos": (
        ["model=qwen2_5_vl_7b", "model.path=/tmp", "benchmark=nextqa_mc",
         "benchmark.data_dir=" + str(SHARED_DATA / "video_qa" / "nextqa"), "benchmark.video_dir={tmp_path}"],
        ["benchmark.video_dir=", "videos are missing", "benchmark.skip_missing=true"],
    ),
}
# One case per kind of error, run through the real command: an unknown group choice (rejected
# before Hydra starts), a bad value (rejected by the cell before its model loads) and a missing
# data folder (rejected when the benchmark reads it). Missing videos: tests/test_video_pipeline.py.
SUBPROCESS_CASES = ["unknown sink", "negative alpha", "missing data_dir"]


def check(overrides: list[str], tmp_path: Path) -> str:
    """The ConfigError message ``python -m outro_sweep <overrides>`` prints (after ``error: ``).

    The group choices are checked on the command line as the CLI does, then the composed config
    goes through the cell's checks (``check_cell``: everything that needs no model weights); a
    config that passes them fails the test.
    """
    try:
        check_group_choices(overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*overrides, f"paths.output_dir={tmp_path}"],
                          return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # the checks read the group choices from it
        with open_dict(cfg):
            del cfg["hydra"]  # a job's config has no hydra node
        check_cell(cfg)
    except ConfigError as err:
        return str(err)
    finally:
        HydraConfig.instance().cfg = None
    pytest.fail(f"{overrides}: no ConfigError, every check passed")


def case_args(name: str, tmp_path: Path) -> list[str]:
    args, _ = CASES[name]
    if "video" in name and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real video annotations under {SHARED_DATA}")
    return [arg.replace("{tmp_path}", str(tmp_path)) for arg in args]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, tmp_path):
    message = check([a for a in case_args(name, tmp_path) if a != "-m"], tmp_path)
    assert "\n" not in message and message.strip() == message, message
    for needle in CASES[name][1]:
        assert needle in message, message


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_on_the_command_line(name, tmp_path):
    args, needles = case_args(name, tmp_path), CASES[name][1]
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
