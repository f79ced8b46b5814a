"""Bad input of every kind is refused in one line, before the model loads and before any cell
folder exists: wrong types and ranges (typed schemas), unknown keys, Hydra's own composition
failures, library settings, data faults, and a sweep with one bad cell.

In process, each case goes through what ``python -m outro_sweep`` runs before Hydra starts
(``preflight``: group choices, composition, every model-free check of the cell). One case per
class of error also runs the real command in a subprocess. Nothing is mocked: the configs are
composed from conf/, the files are real files in tmp_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from outro_sweep.config.schema import Range, check_node
from outro_sweep.errors import ConfigError
from outro_sweep.preflight.command_line import preflight
from outro_sweep.sweep.sweeper import refusal_lines
from tests.test_sweep_e2e import run_cli

MMLU_ROW = 'What is 2 + 2?,3,4,5,6,B\n'

# name: (overrides, needles the one line must contain). {tmp} is the test's own folder, holding
# empty/ (an empty folder), mmlu_nul/ and mmlu_latin1/ (MMLU layouts with one broken csv).
CASES = {
    # Wrong types accepted silently before
    "rotate_decode maybe": (["outro.rotate_decode=maybe"], ["outro.rotate_decode=maybe", "true, false", "official"]),
    "enabled no": (["outro.enabled=no"], ["outro.enabled=no", "true, false"]),
    "alpha true": (["outro.alpha=true"], ["outro.alpha=true", "finite numbers >= 0"]),
    "k true": (["sink=first_k", "sink.k=true"], ["sink.k=true", "integers >= 1"]),
    "negative sink dim": (["sink=sink_dims", "sink.dims=[-1]"], ["sink.dims=[-1]", "integers >= 0"]),
    "empty sink dims": (["sink=sink_dims", "sink.dims=[]"], ["sink.dims=[]", "non-empty list"]),
    "sink dim beyond the hidden size": (["sink=sink_dims", "sink.dims=[576]"], ["sink.dims=[576]", "0..575"]),
    "float seed": (["seed=1.5"], ["seed=1.5", "integers"]),
    "csv with a NUL byte": (["benchmark=mmlu", "benchmark.data_dir={tmp}/mmlu_nul"], ["NUL byte", "benchmark.data_dir"]),
    "judge model path absent": (
        ["judge=llm", "model@judge.model=hf_causal_lm", "judge.model.path=/nonexistent/judge"],
        ["judge.model.path=", "/nonexistent/judge"]),
    # A traceback or several lines before
    "model path an empty folder": (["model=hf_causal_lm", "model.path={tmp}/empty"], ["model.path=", "empty"]),
    "hf_causal_lm without a path": (["model=hf_causal_lm"], ["model.path is required", "hub id"]),
    "non-UTF-8 annotation csv": (["benchmark=mmlu", "benchmark.data_dir={tmp}/mmlu_latin1"],
                                 ["not UTF-8", "benchmark.data_dir"]),
    "video benchmark without video_dir": (["benchmark=msvd_qa", "benchmark.data_dir={tmp}"],
                                          ["benchmark.video_dir is required", "video files"]),
    "sink dims not numbers": (["sink=sink_dims", "sink.dims=[abc]"], ["sink.dims=[abc]", "integers >= 0"]),
    "abs_threshold text": (["sink.abs_threshold=abc"], ["sink.abs_threshold=abc", "numbers >= 0"]),
    "eps text": (["sink=attention_mass", "sink.eps=abc"], ["sink.eps=abc", "numbers in (0, 1)"]),
    "seed text": (["seed=abc"], ["seed=abc", "integers"]),
    "model path a config node": (["model=hf_causal_lm", "model.path={a:1}"], ["model.path={a:1}", "hub id"]),
    "negative num_workers": (["predict.num_workers=-1"], ["predict.num_workers=-1", "integers >= 0"]),
    "unknown accelerator": (["trainer.accelerator=bogus"], ["trainer.accelerator=bogus", "cpu", "cuda", "auto"]),
    "unknown precision": (["trainer.precision=bogus"], ["trainer.precision=bogus", "32-true", "bf16-mixed"]),
    "zero devices": (["trainer.devices=0"], ["trainer.devices=0", "integers >= 1", "auto"]),
    "misspelt outro key": (["outro.alhpa=3"], ["outro.alhpa=3", "did you mean outro.alpha?", "valid keys are"]),
    "cloze on open questions": (["benchmark=passkey", "benchmark.scoring=cloze"],
                                ["benchmark.scoring=cloze", "open questions", "benchmark.scoring=generate"]),
    "lm-eval task unknown": (["benchmark=lm_eval", "benchmark.task=arc_eazy"],
                             ["benchmark.task=arc_eazy is not an lm-eval task", "did you mean arc_easy"]),
    "misspelt benchmark key": (["benchmark.limt=5"], ["benchmark.limt=5", "benchmark.limit", "valid keys are"]),
    "unknown launcher": (["hydra/launcher=bogus"], ["hydra/launcher=bogus", "basic", "local", "slurm"]),
    "--cfg with -m": (["--cfg", "job", "-m", "outro.alpha=1,2"], ["--cfg", "-m", "+dry_run=true"]),
    # More of the same classes
    "added unknown key": (["+outro.alhpa=3"], ["outro.alhpa=3", "did you mean outro.alpha?"]),
    "added top-level typo": (["+seeed=1"], ["seeed=1", "did you mean seed?"]),
    "unknown trainer key": (["+trainer.bogus=1"], ["trainer.bogus=1", "valid keys are", "accelerator"]),
    "eps out of range": (["sink=attention_mass", "sink.eps=1.5"], ["sink.eps=1.5", "(0, 1)"]),
    "alpha infinite": (["outro.alpha=inf"], ["outro.alpha=inf", "finite"]),
    "limit a float": (["benchmark.limit=1.5"], ["benchmark.limit=1.5", "integers >= 0, or null"]),
    "batch size zero": (["predict.batch_size=0"], ["predict.batch_size=0", "integers >= 1"]),
    "force text": (["force=maybe"], ["force=maybe", "true, false"]),
    "logger mode": (["logger.mode=bogus"], ["logger.mode=bogus", "offline"]),
    "dtype": (["model.dtype=float8"], ["model.dtype=float8", "bfloat16"]),
    "scoring": (["benchmark.scoring=guess"], ["benchmark.scoring=guess", "generate, logits"]),
    "layer negative": (["outro.layer=-1"], ["outro.layer=-1", "integers >= 0"]),
    "layer empty list": (["outro.layer=[]"], ["outro.layer=[]", "non-empty list"]),
    "judge on without a judge": (["judge.enabled=true"], ["judge.enabled=true", "judge=llm"]),
    "path under a string": (["model.path.x=1"], ["model.path.x=1"]),
    "malformed override": (["outro.alpha=[1,"], ["[1,"]),
    "sweep value without -m": (["outro.alpha=1,2"], ["outro.alpha=1,2", "--multirun"]),
}
# One case per class of error through the real command: wrong type, unknown key, Hydra group,
# data fault, library setting.
SUBPROCESS_CASES = ["alpha true", "misspelt outro key", "unknown launcher", "csv with a NUL byte", "unknown precision",
                    "cloze on open questions", "lm-eval task unknown"]


class Knobs:
    def __init__(self, n: Annotated[int, Range(ge=1)] = 1, x: float = 0.0, flag: bool = False) -> None:
        pass


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """tmp_path with an empty folder and two MMLU layouts whose test csv is broken."""
    (tmp_path / "empty").mkdir()
    for name, row in (("mmlu_nul", MMLU_ROW.replace("4", "4\x00")), ("mmlu_latin1", MMLU_ROW.replace("4", "4\xe9"))):
        for split in ("dev", "val", "test"):
            (tmp_path / name / split).mkdir(parents=True)
        encoding = "latin-1" if name == "mmlu_latin1" else "utf-8"
        (tmp_path / name / "test" / "arithmetic_test.csv").write_bytes(row.encode(encoding))
    return tmp_path


def case_args(name: str, tmp: Path) -> list[str]:
    return [arg.replace("{tmp}", str(tmp)) for arg in CASES[name][0]]


def refusal(args: list[str], out: Path) -> str:
    """The ConfigError ``python -m outro_sweep <args>`` prints before Hydra starts."""
    try:
        preflight([*args, f"paths.output_dir={out}"])
    except ConfigError as err:
        return str(err)
    pytest.fail(f"{args}: refused nothing")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_before_anything_runs(name, data):
    out = data / "outputs"
    message = refusal(case_args(name, data), out)
    assert "\n" not in message and message == message.strip(), message
    for needle in CASES[name][1]:
        assert needle in message, message
    assert not out.exists()  # no cell folder, no run folder


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_on_the_command_line(name, data):
    out = data / "outputs"
    result = run_cli(case_args(name, data), out)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in CASES[name][1]:
        assert needle in errors[0]
    assert "Traceback" not in result.stderr
    assert not (out / "cells").exists() and not (out / "runs").exists()


@pytest.mark.slow
def test_a_sweep_with_one_bad_cell_launches_nothing(tmp_path):
    out = tmp_path / "outputs"
    result = run_cli(["-m", "outro.alpha=1,2,-1", "benchmark.limit=4", "benchmark.scoring=logits",
                      f"hydra.sweep.dir={tmp_path}/multirun"], out)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: outro.alpha=-1 is invalid: valid values are finite numbers >= 0 "
                      "(cells: outro.alpha=-1; the sweep launched nothing)"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (out / "cells").exists()
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("status.json"))


def test_refusal_names_the_cells_of_each_distinct_error():
    cells = [["outro.alpha=-1", "seed=x"], ["outro.alpha=1", "seed=x"], ["outro.alpha=2", "seed=x"]]
    lines = refusal_lines({"seed=x is invalid": cells, "outro.alpha=-1 is invalid": cells[:1]}, cells)
    assert lines == ["error: seed=x is invalid (cells: all 3 cells; the sweep launched nothing)",
                     "error: outro.alpha=-1 is invalid (cells: outro.alpha=-1; the sweep launched nothing)"]


def test_the_signature_is_the_schema():
    """bool is not an int, a float with a fraction is not an int, ranges and unknown keys."""
    check_node({"n": 2, "x": 3, "flag": True}, Knobs, "k")  # an int is a valid float
    for node, needle in (({"n": True}, "k.n=true"), ({"n": 1.5}, "k.n=1.5"), ({"n": 0}, "integers >= 1"),
                         ({"x": "1"}, "k.x='1'"), ({"flag": "no"}, "k.flag=no"),
                         ({"nn": 1}, "did you mean k.n?")):
        with pytest.raises(ConfigError) as raised:
            check_node(node, Knobs, "k")
        assert needle in str(raised.value), str(raised.value)
