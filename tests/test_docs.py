"""The README and docs/*.md against the tree: short README, links that resolve, commands that name
real modules and real config choices, and the first commands that CI and the launchers use.

Fast (no model, no subprocess): ``importlib.util.find_spec`` only imports the parent packages of a
module, which import nothing heavy.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONF = REPO / "conf"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
PAGE_IDS = [str(page.relative_to(REPO)) for page in PAGES]

README_MAX_LINES = 300
USER_SWEEP = "python -m outro_sweep -m outro.layer=1,2,4 outro.alpha=0.1,0.3"

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MODULE = re.compile(r"-m\s+(outro_sweep(?:\.\w+)*)(?![\w.<])")
SHELL_LANGS = {"bash", "sh", "shell"}
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:python|bash|torchrun)\s")
PLACEHOLDER = re.compile(r"[<>$\[\]{}*]|\.\.\.")
REPO_PATH = re.compile(r"^(?:outro_sweep|tests|conf|launchers|docs)/[\w./-]*$")
FILE_LABEL = re.compile(r"^`[^`\n]+`:$", re.MULTILINE)


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def without_code(text: str) -> str:
    """The page's prose: fenced blocks and inline code removed (links live outside them)."""
    return INLINE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, punctuation dropped,
    spaces as hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", text_of(page))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def shell_commands(text: str) -> list[str]:
    """Every shell command the page shows: each line of a bash block (continuations joined), each
    line of an unlabelled block that starts like a command, and inline code that starts like one."""
    commands = []
    for lang, body in FENCE.findall(text):
        lines = body.replace("\\\n", " ").splitlines()
        if lang in SHELL_LANGS:
            commands += [line for line in lines if line.strip()]
        elif not lang:
            commands += [line for line in lines if COMMAND_START.match(line)]
    commands += [span for span in INLINE.findall(without_fences(text)) if COMMAND_START.match(span)]
    return commands


def without_fences(text: str) -> str:
    return FENCE.sub("", text)


def words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in an illustrative fragment
        return command.split()


def group_choices(command: str) -> list[tuple[str, str]]:
    """(group, choice) for every ``group=choice`` override of a config group of conf/ (keys with
    dots are values, not groups); none for a command that adds its own config folders."""
    tokens = words(command)
    if any(t.startswith("hydra.searchpath=") or t == "--config-dir" for t in tokens):
        return []
    found = []
    for token in tokens:
        key, sep, value = token.partition("=")
        group = key.lstrip("+~").split("@")[0]
        if not sep or not group or "." in group or not (CONF / group).is_dir():
            continue
        found += [(group, choice) for choice in value.split(",") if choice and not PLACEHOLDER.search(choice)]
    return found


def test_the_readme_is_short():
    lines = len(text_of(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/ (limit {README_MAX_LINES})"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(without_code(text_of(page))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or REPO not in resolved.parents:
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_module_run_with_python_m_exists(page):
    modules = sorted(set(MODULE.findall(text_of(page))))
    missing = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or (REPO / "outro_sweep") not in Path(spec.origin).parents:
            missing.append(name)  # not found, or found outside this checkout
        elif spec.submodule_search_locations is not None and importlib.util.find_spec(f"{name}.__main__") is None:
            missing.append(f"{name} (a package without __main__)")
    assert not missing, f"{page.name} runs modules that are not in the tree: {missing}"


def test_the_docs_run_the_tools():
    """The module check above is not vacuous: the pages do name the tools."""
    named = set().union(*(MODULE.findall(text_of(page)) for page in PAGES))
    assert {"outro_sweep", "outro_sweep.atlas", "outro_sweep.report", "outro_sweep.perf.sweep"} <= named, named


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_group_choice_in_a_command_is_a_conf_file(page):
    unknown = sorted({f"{group}={choice}" for command in shell_commands(text_of(page))
                      for group, choice in group_choices(command)
                      if not (CONF / group / f"{choice}.yaml").is_file()})
    assert not unknown, f"{page.name}: no conf/<group>/<choice>.yaml for {unknown}"


def test_the_choice_check_sees_the_commands():
    """The choice check reads the commands it should: many choices across the pages, the grouped
    and comma-swept forms among them."""
    choices = {f"{g}={c}" for page in PAGES for command in shell_commands(text_of(page))
               for g, c in group_choices(command)}
    assert len(choices) >= 15, sorted(choices)
    assert {"benchmark=builtin_story", "hydra/launcher=slurm", "sink=first_k", "outro=off"} <= choices, sorted(choices)
    assert group_choices("python -m outro_sweep -m benchmark=nosuch,mmlu outro.alpha=1") == [
        ("benchmark", "nosuch"), ("benchmark", "mmlu")]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_repository_paths_exist(page):
    """Files the page names by their path in this repository (placeholders left out, and the
    labels of an example project's file blocks, "`conf/benchmark/tiny.yaml`:", which are the
    user's files)."""
    prose = FILE_LABEL.sub("", without_fences(text_of(page)))
    missing = sorted({span for span in INLINE.findall(prose)
                      if REPO_PATH.match(span) and not (REPO / span.rstrip("/")).exists()})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_readme_gives_the_first_commands_ci_runs():
    text = text_of(README)
    first = FENCE.findall(text)[0][1]
    assert [line.split("#")[0].strip() for line in first.splitlines()] == ["bash launchers/run.sh",
                                                                            "bash launchers/test.sh"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("bash ")]
    assert len(ci) == 1 and ci[0].startswith("bash launchers/test.sh"), ci  # CI runs the README's test command
    assert (REPO / "launchers" / "run.sh").is_file() and (REPO / "launchers" / "test.sh").is_file()
    assert USER_SWEEP in text
