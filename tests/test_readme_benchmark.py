"""The "Adding a benchmark" example of docs/extending.md, followed literally: nothing here but what it says.

Its files (each code block of that section preceded by a line "`<path>`:") are written into a
project folder in tmp_path, with the empty ``mybench/__init__.py`` it names, and its two
commands (the run and the golden-prompt step) are read from its bash blocks, ``$PWD`` being
that folder and ``$OUTRO`` this checkout. So the page cannot drift from what works.

In-process: the benchmark composes through the user's ``hydra.searchpath`` as the command
composes it, loads, and refuses a bad ``data_dir`` in one line. Subprocesses (slow): the
page's run command on the real SmolLM2 finishes its cell with two records, and its golden
step writes and then checks the golden prompt.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from outro_sweep.benchmarks.base import ask
from outro_sweep.benchmarks.prompting import MAX_OPTIONS, option_letters
from outro_sweep.config.command_line import check_group_choices
from outro_sweep.config.compose import compose_config, job_config
from outro_sweep.errors import ConfigError
from outro_sweep.predict.letter_logits import letter_token_ids
from outro_sweep.preflight.checks import build
from outro_sweep.scoring.letters import parse_choice

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"
SECTION_START, SECTION_END = "\n## Adding a benchmark\n", "\n## Benchmark data that needs care\n"
FILE_BLOCK = re.compile(r"^`([\w./]+)`:\n\n```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section() -> str:
    text = PAGE.read_text(encoding="utf-8")
    return text[text.index(SECTION_START):text.index(SECTION_END)]


def write_project(root: Path) -> Path:
    """The page's example project: its file blocks, and the empty package marker it names."""
    files = dict(FILE_BLOCK.findall(section()))
    assert {"mybench/tiny.py", "conf/benchmark/tiny.yaml", "tiny_data/questions.jsonl"} <= set(files), sorted(files)
    assert "empty `mybench/__init__.py`" in section()
    for name, body in {**files, "mybench/__init__.py": ""}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return root


def command(marker: str, project: Path) -> tuple[dict[str, str], list[str]]:
    """The page's bash block containing ``marker``, as (environment assignments, arguments after
    ``python``), with ``$PWD`` the project folder and ``$OUTRO`` this checkout."""
    blocks = [b for b in BASH_BLOCK.findall(section()) if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} bash blocks of the page's section hold {marker!r}"
    text = blocks[0].replace("\\\n", " ").replace("$PWD", str(project)).replace("$OUTRO", str(REPO))
    words = shlex.split(text, comments=True)
    env = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0], re.DOTALL):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == "python", words
    return env, words[1:]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = write_project(tmp_path / "myproject")
    monkeypatch.syspath_prepend(str(root))  # the page's PYTHONPATH=$PWD
    yield root
    sys.modules.pop("mybench.tiny", None)
    sys.modules.pop("mybench", None)


def run_overrides(project: Path) -> list[str]:
    env, args = command("-m outro_sweep benchmark=tiny", project)
    assert env == {"PYTHONPATH": str(project)} and args[:2] == ["-m", "outro_sweep"]
    return args[2:]


def test_the_example_loads_through_the_users_search_path(project):
    overrides = run_overrides(project)
    check_group_choices(overrides)  # benchmark=tiny is a choice once the search path names its folder
    bench = build(job_config(compose_config(overrides, REPO / "conf")).benchmark)
    assert type(bench).__module__ == "mybench.tiny" and bench.name == "tiny"
    questions = bench.load()
    assert [q.id for q in questions] == ["tiny/q1", "tiny/q2"]  # benchmark.limit=2
    assert [q.answer for q in questions] == ["B", "A"]  # the letters of answer indices 1 and 0
    assert [q.category_dict for q in questions] == [{"topic": "astronomy"}, {"topic": "geography"}]
    assert questions[0].prompt.endswith("B. Mercury\nC. Mars\nAnswer with the option's letter from the given "
                                        "choices directly.")
    assert bench.data_files() == {"questions.jsonl": project / "tiny_data" / "questions.jsonl"}


def test_the_example_refuses_bad_settings_in_one_line(project):
    overrides = [o for o in run_overrides(project) if not o.startswith("benchmark.data_dir=")]
    node = job_config(compose_config([*overrides, f"benchmark.data_dir={project}"], REPO / "conf")).benchmark
    with pytest.raises(ConfigError) as err:
        build(node)  # as the cell's checks build it, before the model loads
    assert str(err.value) == (f"benchmark.data_dir={str(project)!r} has no questions.jsonl: valid values are a folder "
                       "holding questions.jsonl")


def test_an_unknown_choice_lists_the_users_benchmarks_too(project):
    searchpath = next(o for o in run_overrides(project) if o.startswith("hydra.searchpath="))
    with pytest.raises(ConfigError, match=r"^benchmark=tinny is not a known choice: valid values are .*\btiny\b"):
        check_group_choices(["benchmark=tinny", searchpath])
    with pytest.raises(ConfigError, match="benchmark=tiny is not a known choice"):
        check_group_choices(["benchmark=tiny"])  # without the search path it is not one
    check_group_choices(["--config-dir", str(project / "conf"), "benchmark=tiny"])  # Hydra's other way to add it


def test_an_mc_question_takes_2_to_26_options(smollm2):
    """The page's bound: letters A..Z, each one the parser reads and one SmolLM2 token."""
    assert MAX_OPTIONS == 26 and "2 to 26 of them" in section()
    texts = tuple(f"option {i}" for i in range(MAX_OPTIONS + 1))
    question = ask("q/26", "Which?", texts[:MAX_OPTIONS], answer="Z")
    assert question.letters[-1] == "Z" and "\nZ. option 25\n" in question.prompt
    assert parse_choice("Z", question.letters) == "Z" and parse_choice("The answer is (Y)", question.letters) == "Y"
    assert len(letter_token_ids(smollm2.tokenizer, question.letters)) == MAX_OPTIONS
    for options, answer in ((texts, "A"), (texts[:1], "A")):
        with pytest.raises(ValueError, match=f"mc needs 2..26 options .* got {len(options)} options"):
            ask("q/bad", "Which?", options, answer=answer)
    with pytest.raises(ValueError, match="got 3 options and 'D'"):
        ask("q/letter", "Which?", texts[:3], answer="D")
    assert option_letters(3) == ("A", "B", "C")


def run(env: dict[str, str], args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **env}
    full_env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", ""), str(REPO)])  # this checkout, uninstalled
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_the_pages_run_and_golden_step(project, tmp_path):
    env, args = command("-m outro_sweep benchmark=tiny", project)
    out = tmp_path / "out"
    result = run(env, [*args, f"paths.output_dir={out}", "logger.mode=disabled"], project)
    assert result.returncode == 0, result.stderr[-3000:]
    (cell,) = list((out / "cells").iterdir())
    assert (cell / "DONE").is_file()
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["tiny/q1", "tiny/q2"]
    assert json.loads((cell / "metrics.json").read_text())["n"] == 2
    # The page's sample output is this run's: the same accuracy line, up to the cell's folder.
    (printed,) = [line for line in result.stdout.splitlines() if line.startswith("accuracy ")]
    assert printed.endswith(f" -> {cell}")
    (sample,) = [line for line in section().splitlines() if line.startswith("accuracy ")]
    assert sample.split(" -> ")[0] == printed.split(" -> ")[0], "refresh the sample output in docs/extending.md"

    env, args = command("OUTRO_GOLDEN_RUN=", project)
    golden = Path(env["OUTRO_GOLDEN_DIR"]) / "tiny.txt"
    written = run(env, args, project)
    assert written.returncode == 0, written.stdout[-3000:]
    text = golden.read_text(encoding="utf-8")
    assert text.startswith("===== case: tiny | id: tiny/q1 | kind: mc =====\n")
    assert "<|im_start|>user\nWhich planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\n" in text

    check_env = {k: v for k, v in env.items() if k != "OUTRO_UPDATE_GOLDEN"}
    assert run(check_env, args, project).returncode == 0  # the prompt matches its snapshot
    golden.write_text(text.replace("Mercury", "Mercure"), encoding="utf-8")
    moved = run(check_env, args, project)
    assert moved.returncode == 1 and "tiny.txt: the prompt differs from the golden snapshot" in moved.stdout
