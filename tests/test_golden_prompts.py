"""Golden snapshots of the exact prompt each benchmark sends, video and text.

For every video benchmark config (``conf/benchmark/*.yaml`` whose ``_target_`` is a
``VideoBenchmark``), and for every kind of question it yields, the FIRST question of that
kind is taken from the benchmark's loader, built from its YAML the way the pipeline builds
it (``hydra.utils.instantiate``, only ``data_dir``/``video_dir``/task overridden), so the
YAML defaults (split, task, tasks, ...) are part of what is pinned. Its golden file
``tests/golden/prompts/<case>.txt`` holds:

* a header line: the case, the question id and its kind;
* the user-message text, ``Question.prompt``, exactly;
* the whole chat as ``VideoLMLoader.render`` renders it through the REAL Qwen2.5-VL and
  Qwen3-VL chat templates (the checkpoints' own processor files, read from
  ``../shared/data/hf_configs`` by ``tests/tiny_vlms.py``: Qwen2.5-VL adds its default system
  turn, Qwen3-VL has none), then through the tiny LLaVA-OneVision processor's hand-written
  template (its video placeholder differs).

Each section follows a ``----- <name> -----`` line and ends with one newline of its own, so
a body that itself ends in a newline shows as a blank line before the next separator.
The file is compared byte for byte; a mismatch fails with a unified diff.

Every case needs the real Qwen processor files, so all of them skip when ../shared/data is
absent. Questions come from the real annotation files in ``../shared/data/video_qa`` (nextqa_mc,
videomme, activitynet_qa, tgif_qa, dailyomni: those cases skip when the folder is absent),
or, for the benchmarks without shared data, from a small native-layout file written into
tmp_path here (nextqa_oe, mvbench, egoschema, msvd_qa, msrvtt_qa, perception_test, avhbench).

Text benchmarks: every other ``conf/benchmark/*.yaml`` is a case of its own, found by
listing the folder (a new text benchmark is covered without editing this file), composed the
way the command composes it (``compose_config`` with ``benchmark=<name>``), its FIRST
question rendered through SmolLM2's real chat template (the ``smollm2`` fixture). MMLU reads
the real files in ``../shared/data/text_mc/mmlu``, zero-shot and 5-shot. A YAML with a
required key (``???``) and no data here skips, naming the key.

A benchmark outside this repository (your own package and conf folder) is one more case,
named after its ``benchmark=`` choice, when ``OUTRO_GOLDEN_RUN`` holds the overrides that
select it, as on the command line, and its golden file goes to ``OUTRO_GOLDEN_DIR``
(default: here), e.g. from the README's example project folder:

    OUTRO_GOLDEN_RUN="benchmark=tiny hydra.searchpath=[file://$PWD/conf] benchmark.data_dir=$PWD/tiny_data" \
    OUTRO_GOLDEN_DIR=$PWD/golden OUTRO_UPDATE_GOLDEN=1 PYTHONPATH=$PWD \
    python -m pytest -q $OUTRO/tests/test_golden_prompts.py -k run-tiny

Updating the snapshots (after a deliberate prompt change only): run

    OUTRO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_prompts.py

which (re)writes every golden file and passes; then read the diff of tests/golden/prompts/
before checking it in. Without it, a missing golden file fails and says how to create it.

Independently of the snapshots, each video case also checks that the prompt ends with the right
instruction (MC_INSTRUCTION for mc, SHORT_ANSWER_INSTRUCTION for open and yes/no), that
each mc option appears once as "X. text" in letter order, and that each rendered chat holds
the prompt once and the video placeholder exactly once, before the question text; each text
case checks the same of its prompt, and that SmolLM2's chat holds the prompt once.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from outro_sweep.benchmarks.prompting import MC_INSTRUCTION, SHORT_ANSWER_INSTRUCTION, format_cloze_prompt, option_letters
from outro_sweep.benchmarks.base import Question
from outro_sweep.benchmarks.video_base import VideoBenchmark
from outro_sweep.config.compose import compose_config, job_config
from outro_sweep.models.llava_onevision import LlavaOnevision
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from outro_sweep.models.qwen3_vl import Qwen3VL

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "benchmark"
GOLDEN = Path(__file__).resolve().parent / "golden" / "prompts"
UPDATE_ENV = "OUTRO_UPDATE_GOLDEN"
UPDATE = os.environ.get(UPDATE_ENV) == "1"
UPDATE_COMMAND = f"{UPDATE_ENV}=1 .venv/bin/python -m pytest -q tests/test_golden_prompts.py"
RUN_ENV = "OUTRO_GOLDEN_RUN"  # overrides selecting one more benchmark, e.g. your own package's
RUN_DIR_ENV = "OUTRO_GOLDEN_DIR"  # where that benchmark's golden file goes (default: GOLDEN)

INSTRUCTIONS = {"mc": MC_INSTRUCTION, "open": SHORT_ANSWER_INSTRUCTION, "yesno": SHORT_ANSWER_INSTRUCTION}

# (family in tests/tiny_vlms.py, the loader class that renders for it)
RENDERERS = (("qwen2_5_vl", Qwen2_5VL), ("qwen3_vl", Qwen3VL), ("llava_onevision", LlavaOnevision))


# ---------------------------------------------------------------- native-layout fixtures


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_nextqa_oe(root: Path) -> None:
    """NExT-OE's val.csv + map_vid_vidorID.json + add_reference_answer_val.json."""
    header = "video,frame_count,width,height,question,answer,qid,type,additional_ref_answer\n"
    (root / "val.csv").write_text(
        header
        + "4924794333,1058,640,360,is the baby old enough to converse,no,4,DB,\n"
        + '3747890905,1152,640,360,"how does the adult get rid of the food, near the end",uses the spoon,8,CH,spoon\n'
        + "3118473217,870,640,360,how many children are presented,nine,8,DC,\n",
        encoding="utf-8",
    )
    write_json(root / "map_vid_vidorID.json",
               {"4924794333": "0001/4924794333", "3747890905": "0002/3747890905", "3118473217": "0003/3118473217"})
    write_json(root / "add_reference_answer_val.json", {"3118473217": {"8": "9 children"}})


def write_mvbench(root: Path) -> None:
    """json/<task>.json, tasks read in sorted name order (action_sequence first)."""
    write_json(root / "json" / "action_sequence.json", [
        {"video": "ZS9XR.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle.",
                        "Took the box."],
         "answer": "Ate the medicine.", "start": 11.1, "end": 19.5},
        {"video": "4RWUE.mp4", "question": "What happened after the person held the clothes?",
         "candidates": ["Took the towel/s.", "Put down the bag.", "Threw the clothes.", "Opened the door."],
         "answer": "Threw the clothes.", "start": 0.0, "end": 8.3},
    ])
    write_json(root / "json" / "object_shuffle.json", [
        {"video": "video_1.mp4", "question": "The person uses multiple similar objects to play an occlusion game. "
                                             "Where is the hidden object at the end of the game from the person's "
                                             "point of view?",
         "candidates": ["Under the first object from the left.", "Under the second object from the left.",
                        "Under the third object from the left."],
         "answer": "Under the third object from the left."},
    ])


def write_egoschema(root: Path) -> None:
    """questions.json + subset_answers.json; the first question has no public answer (skipped)."""
    write_json(root / "questions.json", [
        {"q_uid": "0074f737-11cb-497d-8d07-77c3a8127391", "google_drive_id": "1Kk8kdg0Gml5M8cW-wUdt",
         "question": "What is the overarching theme of the video, considering the activities performed by c?",
         "option 0": "C is cooking a meal.", "option 1": "C is cleaning the kitchen.",
         "option 2": "C is doing laundry.", "option 3": "C is washing dishes.", "option 4": "C is organizing items."},
        {"q_uid": "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "google_drive_id": "1Zl0Ah6Qyyh0dWhoITHyu",
         "question": "Taking into account all the actions performed by c, what can you deduce about the primary "
                     "objective and focus within the video content?",
         "option 0": "C is cooking.", "option 1": "C is doing housework.", "option 2": "C is taking care of plants.",
         "option 3": "C is cleaning the house.", "option 4": "C is repairing a bicycle."},
    ])
    write_json(root / "subset_answers.json", {"00b9a0de-c59e-49cb-a127-6081e2fb8c8e": 2})


def write_video_chatgpt(root: Path, names: tuple[str, str], texts: tuple[str, str], answers: tuple[str, str]) -> None:
    """The Video-ChatGPT evaluation layout: test_q.json + test_a.json paired by question_id."""
    write_json(root / "test_q.json", [
        {"video_name": names[0], "question": texts[0], "question_id": "v_0"},
        {"video_name": names[1], "question": texts[1], "question_id": "v_1"},
    ])
    write_json(root / "test_a.json", [
        {"answer": answers[1], "question_id": "v_1"},
        {"answer": answers[0], "question_id": "v_0"},
    ])


def write_msvd_qa(root: Path) -> None:
    write_video_chatgpt(root, ("-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208"),
                        ("what is a group of people playing?", "who is cutting a tomato?"), ("basketball", "woman"))


def write_msrvtt_qa(root: Path) -> None:
    write_video_chatgpt(root, ("video7010", "video7011"),
                        ("what is a man playing?", "who is singing on stage?"), ("guitar", "man"))


def write_perception_test(root: Path) -> None:
    """mc_question_valid.json: {video_id: {mc_question: [...]}}; a video without mc questions first."""
    write_json(root / "mc_question_valid.json", {
        "video_222": {"metadata": {"split": "valid"}},
        "video_10909": {"mc_question": [
            {"id": 0, "question": "Is the camera moving or static?",
             "options": ["I don't know", "moving", "static or shaking"], "answer_id": 2,
             "area": "physics", "reasoning": "descriptive", "tag": ["motion"]},
            {"id": 1, "question": "How many objects are put in the backpack throughout the video?",
             "options": ["2", "3", "4"], "answer_id": 0,
             "area": "memory", "reasoning": "descriptive", "tag": ["counting", "objects"]},
        ]},
    })


AVH_RECORDS = [
    {"video_id": "00191", "task": "Video-driven Audio Hallucination", "text": "Is the sleeping man making sound?",
     "label": "Yes"},
    {"video_id": "00191", "task": "Audio-driven Video Hallucination", "text": "Is the person walking visible?",
     "label": "No"},
    {"video_id": "00191", "task": "AV Matching", "text": "Are the contexts of audio and visual content matching?",
     "label": "Yes"},
    {"video_id": "00191", "task": "AV Captioning", "text": "Describe what you see and hear in a single sentence.",
     "label": "A young man is laying in bed."},
]


def write_avhbench(root: Path) -> None:
    """The v0 per-video layout: json/<video_id>.json, read in sorted name order."""
    write_json(root / "json" / "00006.json", [
        {"video_id": "00006_swap", "task": "AV Hallucination (Video)", "text": "Is the dog visible in the video?",
         "label": "no"},
    ])
    write_json(root / "json" / "00191.json", AVH_RECORDS)


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str  # golden file stem
    config: str  # conf/benchmark/<config>.yaml
    kind: str  # the kind of question pinned: the first of this kind the loader yields
    shared: str | None = None  # folder under ../shared/data/video_qa holding the real annotations
    write: Callable[[Path], None] | None = None  # else: writes a native-layout fixture into data_dir
    overrides: dict = field(default_factory=dict)  # beyond data_dir / video_dir


CASES = (
    Case("nextqa_mc", "nextqa_mc", "mc", shared="nextqa"),
    Case("nextqa_oe", "nextqa_oe", "open", write=write_nextqa_oe),
    Case("videomme", "videomme", "mc", shared="videomme"),
    Case("mvbench", "mvbench", "mc", write=write_mvbench),
    Case("egoschema", "egoschema", "mc", write=write_egoschema),
    Case("activitynet_qa_yesno", "activitynet_qa", "yesno", shared="activitynet_qa"),
    Case("activitynet_qa_open", "activitynet_qa", "open", shared="activitynet_qa"),
    Case("msvd_qa", "msvd_qa", "open", write=write_msvd_qa),
    Case("msrvtt_qa", "msrvtt_qa", "open", write=write_msrvtt_qa),
    Case("tgif_qa_action", "tgif_qa", "mc", shared="tgif_qa", overrides={"task": "action"}),
    Case("tgif_qa_transition", "tgif_qa", "mc", shared="tgif_qa", overrides={"task": "transition"}),
    Case("tgif_qa_frameqa", "tgif_qa", "open", shared="tgif_qa", overrides={"task": "frameqa"}),
    Case("tgif_qa_count", "tgif_qa", "open", shared="tgif_qa", overrides={"task": "count"}),
    Case("perception_test", "perception_test", "mc", write=write_perception_test),
    Case("dailyomni", "dailyomni", "mc", shared="dailyomni"),
    # The YAML's default tasks are the three yes/no ones; tasks=all adds AV captioning (open).
    Case("avhbench_yesno", "avhbench", "yesno", write=write_avhbench),
    Case("avhbench_open", "avhbench", "open", write=write_avhbench, overrides={"tasks": "all"}),
)
CASE_IDS = [case.name for case in CASES]


def build_benchmark(case: Case, data_dir: Path, video_dir: Path) -> VideoBenchmark:
    """The benchmark as the pipeline builds it: its YAML, data_dir/video_dir (and case overrides) set."""
    cfg = OmegaConf.load(CONF / f"{case.config}.yaml")
    overrides = {"data_dir": str(data_dir), **case.overrides}
    if OmegaConf.is_missing(cfg, "video_dir"):  # keep a YAML default such as ${.data_dir}/video
        overrides["video_dir"] = str(video_dir)
    cfg.merge_with(overrides)
    bench = instantiate(cfg)
    assert isinstance(bench, VideoBenchmark), type(bench)
    return bench


def first_question(case: Case, request, tmp_path: Path) -> Question:
    if case.shared is not None:
        shared_data = request.getfixturevalue("shared_data")  # skips with a reason when ../shared/data is absent
        data_dir = shared_data / "video_qa" / case.shared
        if not data_dir.is_dir():
            pytest.skip(f"real {case.config} annotations not found at {data_dir}")
    else:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        case.write(data_dir)
    bench = build_benchmark(case, data_dir, tmp_path / "videos")
    for question in bench.load():
        if question.kind == case.kind:
            return question
    raise AssertionError(f"{case.name}: benchmark={case.config} yielded no {case.kind} question")


# ---------------------------------------------------------------- rendering and the golden text


@pytest.fixture(scope="module")
def renderers():
    """(family, loader, processor, video placeholder) for each template family; the Qwen
    processors are the real ones (their build skips when ../shared/data is absent)."""
    from tests.tiny_vlms import build

    found = []
    for family, cls in RENDERERS:
        _, processor = build(family)
        loader = cls(path="unused", name=f"golden_{family}")  # the constructor never reads path
        placeholder = processor.video_token
        assert placeholder, f"{family}: processor has no video_token"
        found.append((family, loader, processor, placeholder))
    return found


def separator(title: str) -> str:
    return f"----- {title} -----\n"


def golden_text(case: Case, question: Question, rendered: list[tuple[str, str, str]]) -> str:
    parts = [f"===== case: {case.name} | id: {question.id} | kind: {question.kind} =====\n"]
    parts += [separator("prompt (Question.prompt)"), question.prompt + "\n"]
    if question.cloze:  # what each option is scored as: its continuation of the prompt
        parts += [separator("continuations (Question.continuations)"),
                  "".join(repr(continuation) + "\n" for continuation in question.continuations)]
    for family, loader_name, chat in rendered:
        parts += [separator(f"rendered: {family} ({loader_name}.render)"), chat + "\n"]
    parts.append(separator("end"))
    return "".join(parts)


def mismatch_message(path: Path, expected: str, actual: str) -> str:
    old, new = expected.splitlines(keepends=True), actual.splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(old, new, fromfile=f"{path} (checked in)", tofile="generated now"))
    first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    got = new[first] if first < len(new) else "<end of text>"
    was = old[first] if first < len(old) else "<end of file>"
    return (
        f"{path.name}: the prompt differs from the golden snapshot (a silent prompt change changes every score).\n"
        f"{diff}\nfirst difference at line {first + 1}: checked in {was!r}, generated {got!r}\n"
        f"If the change is deliberate, regenerate with: {UPDATE_COMMAND}"
    )


def check_snapshot(path: Path, text: str) -> None:
    """``text`` against the golden file at ``path``, byte for byte; with OUTRO_UPDATE_GOLDEN=1, (re)write it."""
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        return
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing: create it with {UPDATE_COMMAND}, read it, then check it in",
                    pytrace=False)
    expected = path.read_bytes()
    if expected != text.encode("utf-8"):
        pytest.fail(mismatch_message(path, expected.decode("utf-8", errors="replace"), text), pytrace=False)


# ---------------------------------------------------------------- snapshot-independent checks


def check_prompt(case: Case, question: Question) -> None:
    prompt = question.prompt
    if question.category_dict.get("task") == "av_captioning":  # asks for a sentence: no short-answer line
        assert prompt == question.question.strip() and SHORT_ANSWER_INSTRUCTION not in prompt
        return
    if question.cloze:  # benchmark.scoring=cloze: the question alone, each option its continuation
        assert prompt.endswith(format_cloze_prompt(question.question.strip())), f"{case.name}: {prompt!r}"
        assert MC_INSTRUCTION not in prompt
        assert question.continuations == tuple(" " + option.strip() for option in question.options)
        return
    instruction = INSTRUCTIONS[question.kind]
    assert prompt.endswith("\n" + instruction), f"{case.name}: prompt does not end with {instruction!r}: {prompt!r}"
    assert prompt.count(instruction) == 1, f"{case.name}: instruction repeated in {prompt!r}"
    assert question.question.strip() in prompt
    if question.kind != "mc":
        assert question.options == ()
        return
    assert len(question.options) >= 2
    asked = prompt[prompt.rindex(question.question):]  # after any few-shot examples, which have options too
    positions = []
    for letter, option in zip(option_letters(len(question.options)), question.options):
        line = f"\n{letter}. {option}\n"
        assert asked.count(line) == 1, f"{case.name}: option line {line!r} is not in the question asked exactly once"
        positions.append(asked.index(line))
    assert positions == sorted(positions), f"{case.name}: options are not in letter order"


def check_rendered(case: Case, family: str, chat: str, prompt: str, placeholder: str) -> None:
    where = f"{case.name} via {family}"
    assert chat.count(prompt) == 1, f"{where}: the prompt is not in the rendered chat exactly once"
    assert chat.count(placeholder) == 1, f"{where}: {placeholder!r} appears {chat.count(placeholder)} times"
    assert chat.index(placeholder) < chat.index(prompt), f"{where}: the video placeholder comes after the question"


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_golden_prompt(case: Case, request, tmp_path, renderers):
    question = first_question(case, request, tmp_path)
    assert question.kind == case.kind
    check_prompt(case, question)
    rendered = []
    for family, loader, processor, placeholder in renderers:
        chat = loader.render(processor, question.prompt)
        check_rendered(case, family, chat, question.prompt, placeholder)
        rendered.append((family, type(loader).__name__, chat))
    check_snapshot(GOLDEN / f"{case.name}.txt", golden_text(case, question, rendered))


def _configs() -> dict[str, type]:
    """conf/benchmark/<name>.yaml -> the class its _target_ names."""
    found = {}
    for path in sorted(CONF.glob("*.yaml")):
        module, _, attr = str(OmegaConf.load(path)._target_).rpartition(".")
        found[path.stem] = getattr(importlib.import_module(module), attr)
    return found


def _video_configs() -> dict[str, type]:
    """The VideoBenchmark ones of ``_configs``."""
    return {name: cls for name, cls in _configs().items() if isinstance(cls, type) and issubclass(cls, VideoBenchmark)}


def test_every_video_benchmark_and_kind_has_a_case():
    configs = _video_configs()
    assert set(configs) == {case.config for case in CASES}, "a video benchmark config has no golden case (or vice versa)"
    for name, cls in configs.items():
        covered = {case.kind for case in CASES if case.config == name}
        kinds = set(cls.kinds) if name != "tgif_qa" else {"mc", "open"}  # tgif_qa sets kinds per task
        assert kinds <= covered, f"{name}: kinds {sorted(kinds - covered)} have no golden case"
    tasks = {case.overrides.get("task") for case in CASES if case.config == "tgif_qa"}
    assert tasks == {"action", "transition", "frameqa", "count"}


# ---------------------------------------------------------------- text benchmarks


@dataclass(frozen=True)
class TextCase:
    name: str  # golden file stem
    overrides: tuple[str, ...]  # command-line overrides that select and configure the benchmark
    shared: str | None = None  # folder under ../shared/data given as benchmark.data_dir
    golden_dir: Path = GOLDEN
    from_run: bool = False  # selected by OUTRO_GOLDEN_RUN

    @property
    def id(self) -> str:
        return f"run-{self.name}" if self.from_run else self.name


MMLU = "text_mc/mmlu"
# Text configs that need more than their YAML: real data, and the settings worth pinning.
TEXT_VARIANTS = {
    "mmlu": (TextCase("mmlu", ("benchmark=mmlu",), shared=MMLU),
             TextCase("mmlu_5shot", ("benchmark=mmlu", "benchmark.num_fewshot=5"), shared=MMLU)),
}


def run_case() -> TextCase | None:
    """The benchmark selected by OUTRO_GOLDEN_RUN (overrides as on the command line), if set."""
    overrides = tuple(shlex.split(os.environ.get(RUN_ENV, "")))
    if not overrides:
        return None
    choice = next((o.split("=", 1)[1] for o in overrides if o.startswith("benchmark=")), None)
    if not choice:
        raise ValueError(f"{RUN_ENV}={' '.join(overrides)!r} selects no benchmark: valid values hold benchmark=<name>")
    return TextCase(choice, overrides, golden_dir=Path(os.environ.get(RUN_DIR_ENV, GOLDEN)).resolve(), from_run=True)


def text_cases() -> tuple[TextCase, ...]:
    """Every text config of conf/benchmark (its variants where listed), then OUTRO_GOLDEN_RUN's."""
    video = _video_configs()
    cases = []
    for name in _configs():
        if name not in video:
            cases += TEXT_VARIANTS.get(name, (TextCase(name, (f"benchmark={name}",)),))
    extra = run_case()
    return (*cases, *([extra] if extra else []))


TEXT_CASES = text_cases()


def build_text_benchmark(case: TextCase, request):
    """The benchmark exactly as the command builds it from ``case.overrides``."""
    overrides = list(case.overrides)
    if case.shared is not None:
        data_dir = request.getfixturevalue("shared_data") / case.shared
        if not data_dir.is_dir():
            pytest.skip(f"real {case.name} files not found at {data_dir}")
        overrides.append(f"benchmark.data_dir={data_dir}")
    node = job_config(compose_config(overrides, REPO / "conf")).benchmark
    missing = [str(key) for key in node if OmegaConf.is_missing(node, key)]
    if missing:
        pytest.skip(f"benchmark.{missing[0]} is required (???) and no data is given here: create the golden file "
                    f"with {RUN_ENV}='{' '.join(case.overrides)} benchmark.{missing[0]}=...' {UPDATE_COMMAND}")
    return instantiate(node)


@pytest.mark.parametrize("case", TEXT_CASES, ids=[case.id for case in TEXT_CASES])
def test_golden_text_prompt(case: TextCase, request, smollm2):
    question = build_text_benchmark(case, request).load()[0]
    assert question.video is None, f"{case.name}: a video question; video benchmarks need a case in CASES"
    check_prompt(case, question)
    chat = smollm2.loader.render(smollm2.processor, question.prompt)
    assert chat.count(question.prompt) == 1, f"{case.name}: the prompt is not in SmolLM2's chat exactly once"
    assert chat != question.prompt, f"{case.name}: SmolLM2's chat template was not applied"
    rendered = [("smollm2", type(smollm2.loader).__name__, chat)]
    check_snapshot(case.golden_dir / f"{case.name}.txt", golden_text(case, question, rendered))


def test_no_orphan_golden_files():
    names = set(CASE_IDS) | {case.name for case in TEXT_CASES if case.golden_dir == GOLDEN.resolve()}
    orphans = sorted(p.name for p in GOLDEN.glob("*.txt") if p.stem not in names) if GOLDEN.is_dir() else []
    assert not orphans, f"golden files with no case in {Path(__file__).name}: {orphans} (delete them)"
