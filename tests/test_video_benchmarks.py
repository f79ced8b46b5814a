"""Video benchmarks: each loader against its real annotation files (../shared/data/video_qa),
re-read here with csv/json alone, or against small files written in the native layout;
the open-ended scoring (exact match, yes/no, WUPS arithmetic); the one-line config errors."""

from __future__ import annotations

import csv
import inspect
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from outro_sweep.benchmarks.activitynet_qa import ActivityNetQA
from outro_sweep.benchmarks.avhbench import AVHBench
from outro_sweep.benchmarks.dailyomni import DailyOmni
from outro_sweep.benchmarks.egoschema import EgoSchema
from outro_sweep.benchmarks.msrvtt_qa import MSRVTTQA
from outro_sweep.benchmarks.msvd_qa import MSVDQA
from outro_sweep.benchmarks.mvbench import MVBench
from outro_sweep.benchmarks.nextqa import NExTQAMC, NExTQAOE
from outro_sweep.benchmarks.perception_test import PerceptionTest
from outro_sweep.benchmarks.prompting import MC_INSTRUCTION, SHORT_ANSWER_INSTRUCTION
from outro_sweep.benchmarks.tgif_qa import TGIFQA
from outro_sweep.benchmarks.base import Question, ask
from outro_sweep.benchmarks.video_base import VideoBenchmark
from outro_sweep.benchmarks.videomme import VideoMME
from outro_sweep.errors import ConfigError
from outro_sweep.scoring.open_answers import (
    exact_match,
    nextoe_score,
    normalize_answer,
    parse_yes_no,
    wordnet_similarity,
    wup,
    wups,
    wups_score,
)

REPO = Path(__file__).resolve().parents[1]
LETTERS = "ABCDE"


@pytest.fixture(scope="session")
def vqa(shared_data) -> Path:
    root = shared_data / "video_qa"
    if not root.is_dir():
        pytest.skip(f"real video QA annotations not found at {root}")
    return root


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def by_id(questions: list[Question]) -> dict[str, Question]:
    table = {q.id: q for q in questions}
    assert len(table) == len(questions), "question ids are not unique"
    return table


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- Question


def test_video_question_properties():
    q = ask(
        id="x/1", video="a/b.mp4", question="What? ", options=("red ", "blue"), answer="B", kind="mc",
        categories=(("type", "color"), ("duration", "short")),
    )
    assert q.letters == ("A", "B")
    assert q.category_dict == {"type": "color", "duration": "short"}
    assert q.category == "color"
    assert q.prompt == f"What?\nA. red\nB. blue\n{MC_INSTRUCTION}"  # stray outer whitespace dropped
    assert (q.answer, q.references, q.video) == ("B", ("B",), "a/b.mp4")
    hash(q)  # frozen and hashable: categories are tuples
    open_q = ask("x/2", "Who?", (), "a man", "open", extra_answers=("man",), video="v.mp4")
    assert open_q.prompt == f"Who?\n{SHORT_ANSWER_INSTRUCTION}" and open_q.extra_answers == ("man",)
    with pytest.raises(ValueError):
        ask("x", "q", ("a", "b"), "C", "mc", video="v")
    with pytest.raises(ValueError):
        ask("x", "q", (), "maybe", "yesno", video="v")
    with pytest.raises(ValueError):
        ask("x", "q", (), "a", "free", video="v")


# ---------------------------------------------------------------- NExT-QA (real files)


def nextqa_rows(root: Path, split: str) -> list[dict]:
    with open(root / f"{split}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("split", ["val", "test"])
def test_nextqa_mc_matches_raw_csv(vqa, split):
    root = vqa / "nextqa"
    rows = nextqa_rows(root, split)
    mapping = json.loads((root / "map_vid_vidorID.json").read_text())
    bench = NExTQAMC(data_dir=str(root), split=split, video_dir="/videos")
    questions = bench.load()
    assert len(questions) == len(rows)
    table = by_id(questions)
    for index in (0, 1, len(rows) // 2, len(rows) - 1):
        row = rows[index]
        q = table[f"nextqa_mc/{split}/{row['qid']}_{row['video']}"]
        assert questions[index] is q  # file order kept
        assert q.question == row["question"]
        assert q.options == tuple(row[f"a{i}"] for i in range(5))
        assert q.answer == LETTERS[int(row["answer"])]
        assert q.video == mapping[row["video"]] + ".mp4"
        assert re.fullmatch(r"\d{4}/\d+\.mp4", q.video)
        folder, vidor_id = mapping[row["video"]].split("/")
        assert bench.video_path(q) == Path("/videos") / folder / (vidor_id + ".mp4")
        assert q.category_dict == {"type": row["type"],
                                   "group": {"C": "Causal", "T": "Temporal", "D": "Descriptive"}[row["type"][0]]}
        assert q.kind == "mc"
    assert Counter(q.category_dict["type"] for q in questions) == Counter(r["type"] for r in rows)
    assert Counter(q.answer for q in questions) == Counter(LETTERS[int(r["answer"])] for r in rows)


def test_nextqa_first_val_record_literally(vqa):
    q = NExTQAMC(data_dir=str(vqa / "nextqa"), split="val").load()[0]
    assert q.id == "nextqa_mc/val/6_4010069381"
    assert q.question == "how do the two man play the instrument"
    assert q.options == ("roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand")
    assert q.answer == "A"
    assert q.categories == (("type", "CH"), ("group", "Causal"))


def test_nextqa_oe_native_layout(tmp_path):
    header = "video,frame_count,width,height,question,answer,qid,type,additional_ref_answer\n"
    (tmp_path / "val.csv").write_text(
        header
        + "4924794333,1058,640,360,is the baby old enough to converse,no,4,DB,\n"
        + '3747890905,1152,640,360,"how does the adult get rid of the food, near the end",uses the spoon,8,CH,spoon\n'
        + "3118473217,870,640,360,how many children are presented,nine,8,DC,\n",
        encoding="utf-8",
    )
    write_json(tmp_path / "map_vid_vidorID.json",
               {"4924794333": "0001/4924794333", "3747890905": "0002/3747890905", "3118473217": "0003/3118473217"})
    write_json(tmp_path / "add_reference_answer_val.json", {"3118473217": {"8": "9 children"}})
    questions = NExTQAOE(data_dir=str(tmp_path), split="val").load()
    assert [q.id for q in questions] == ["nextqa_oe/val/4_4924794333", "nextqa_oe/val/8_3747890905",
                                         "nextqa_oe/val/8_3118473217"]
    first, second, third = questions
    assert first.kind == "open" and first.options == () and first.answer == "no"
    assert first.category_dict == {"type": "DB", "group": "Descriptive"}
    assert second.question == "how does the adult get rid of the food, near the end"
    assert second.answer == "uses the spoon" and second.extra_answers == ("spoon",)
    assert second.video == "0002/3747890905.mp4"
    assert third.extra_answers == ("9 children",)
    assert third.category_dict["group"] == "Descriptive"

    (tmp_path / "test.csv").write_text("video,question,answer\n1,q,a\n", encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        NExTQAOE(data_dir=str(tmp_path), split="test").load()
    one_line_error(excinfo, "test.csv", "header")


# ---------------------------------------------------------------- Video-MME (real file)


def test_videomme_matches_raw_json(vqa):
    root = vqa / "videomme"
    raw = json.loads((root / "videomme_900videos_2700q.json").read_text())
    flat = [(video, q) for video in raw for q in video["questions"]]
    bench = VideoMME(data_dir=str(root))
    questions = bench.load()
    assert len(questions) == len(flat) == 2700
    table = by_id(questions)
    for index in (0, 1, 1234, len(flat) - 1):
        video, raw_q = flat[index]
        q = table[f"videomme/{raw_q['question_id']}"]
        assert questions[index] is q
        assert q.question == raw_q["question"]
        assert q.options == tuple(re.sub(r"^[A-D]\. ", "", o) for o in raw_q["choices"])
        assert all(not re.match(r"^[A-D]\. ", o) for o in q.options)
        assert q.answer == raw_q["answer"]
        assert q.video == re.search(r"[?&]v=([^&]+)", video["url"]).group(1) + ".mp4"
        assert q.category_dict == {"task_type": raw_q["task_type"], "duration": video["duration_category"],
                                   "domain": video["video_category"], "sub_category": video["video_subcategory"]}
    assert questions[0].video == "AGCHk5_2skY.mp4"
    assert Counter(q.category_dict["duration"] for q in questions) == Counter(
        v["duration_category"] for v, _ in flat)
    long_only = VideoMME(data_dir=str(root), durations=["long"]).load()
    assert len(long_only) == sum(len(v["questions"]) for v in raw if v["duration_category"] == "long")
    numbered = VideoMME(data_dir=str(root), video_name="video_id").load()
    assert numbered[0].video == "001.mp4"


# ---------------------------------------------------------------- ActivityNet-QA (real files)


def test_activitynet_qa_matches_raw_json(vqa):
    root = vqa / "activitynet_qa"
    qs = json.loads((root / "test_q.json").read_text())
    answers = {a["question_id"]: a for a in json.loads((root / "test_a.json").read_text())}
    names = ["motion", "spatial relation", "temporal relation", "yes/no", "color", "object", "location", "number",
             "other"]
    questions = ActivityNetQA(data_dir=str(root)).load()
    assert len(questions) == len(qs)
    table = by_id(questions)
    for index in (0, 1, 4000, len(qs) - 1):
        raw, ans = qs[index], answers[qs[index]["question_id"]]
        q = table[f"activitynet_qa/test/{raw['question_id']}"]
        assert questions[index] is q
        assert q.question == raw["question"] and q.answer == ans["answer"]
        assert q.video == f"v_{raw['video_name']}.mp4"
        assert q.category_dict == {"type": names[ans["type"]]}
        assert q.kind == ("yesno" if ans["type"] == 3 else "open")
    assert Counter(q.category for q in questions) == Counter(names[a["type"]] for a in answers.values())
    assert sum(q.kind == "yesno" for q in questions) == sum(a["type"] == 3 for a in answers.values())
    assert {q.answer for q in questions if q.kind == "yesno"} == {"yes", "no"}
    plain = ActivityNetQA(data_dir=str(root), video_prefix="", video_ext="mkv").load()
    assert plain[0].video == qs[0]["video_name"] + ".mkv"


# ---------------------------------------------------------------- TGIF-QA (real files)


def tgif_raw(root: Path, task: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows by splitting lines on CRLF and tabs (the files have no embedded newlines);
    a csv-quoted field, such as the quoted respond ""no"", is unquoted by hand."""
    text = (root / f"Test_{task}_question.csv").read_bytes().decode("utf-8")
    lines = [line for line in text.split("\r\n") if line]

    def unquote(field: str) -> str:
        return field[1:-1].replace('""', '"') if len(field) > 1 and field[0] == field[-1] == '"' else field

    return lines[0].split("\t"), [[unquote(f) for f in line.split("\t")] for line in lines[1:]]


@pytest.mark.parametrize("task", ["action", "transition", "frameqa", "count"])
def test_tgif_qa_matches_raw_tsv(vqa, task):
    root = vqa / "tgif_qa"
    header, rows = tgif_raw(root, task)
    questions = TGIFQA(data_dir=str(root), task=task).load()
    assert len(questions) == len(rows)
    table = by_id(questions)
    col = {name: i for i, name in enumerate(header)}
    quoted = [i for i, row in enumerate(rows) if any('"' in f for f in row)]
    for index in (0, 1, len(rows) // 3, len(rows) - 1, *quoted):
        row = rows[index]
        q = table[f"tgif_qa/{task}/test/{row[col['vid_id']]}"]
        assert questions[index] is q
        assert q.question == row[col["question"]]
        assert q.video == row[col["gif_name"]] + ".gif"
        if task in ("action", "transition"):
            assert q.kind == "mc"
            assert q.options == tuple(row[col[f"a{i}"]] for i in range(1, 6))
            assert q.answer == LETTERS[int(row[col["answer"]])]
        else:
            assert q.kind == "open" and q.options == ()
            assert q.answer == row[col["answer"]]
    assert all(q.category_dict["task"] == task for q in questions)
    if task == "frameqa":
        types = {"0": "object", "1": "number", "2": "color", "3": "location"}
        assert Counter(q.category_dict["type"] for q in questions) == Counter(types[r[col["type"]]] for r in rows)
    if task == "transition":  # csv-quoted fields: "respond ""no""" -> respond "no"
        quoted = [q for q in questions if any('"' in o for o in q.options)]
        assert {o for q in quoted for o in q.options if '"' in o} == {'respond "no"', 'write "i love you"'}


def test_tgif_qa_first_action_literally(vqa):
    q = TGIFQA(data_dir=str(vqa / "tgif_qa"), task="action").load()[0]
    assert q.id == "tgif_qa/action/test/ACTION4"
    assert q.video == "tumblr_nk172bbdPI1u1lr18o1_250.gif"
    assert q.question == "What does the butterfly do 10 or more than 10 times ?"
    assert q.options[4] == "flap wings" and q.answer == "E"


# ---------------------------------------------------------------- Daily-Omni (real files + example videos)


def test_dailyomni_matches_raw_json(vqa):
    root = vqa / "dailyomni"
    raw = json.loads((root / "qa.json").read_text())
    questions = DailyOmni(data_dir=str(root)).load()
    assert len(questions) == len(raw) == 1197
    by_id(questions)
    for index in (0, 1, 600, len(raw) - 1):
        record, q = raw[index], questions[index]
        assert q.question == record["Question"]
        assert q.options == tuple(c[3:] for c in record["Choice"])
        assert [c[:3] for c in record["Choice"]] == ["A. ", "B. ", "C. ", "D. "]
        assert q.answer == record["Answer"]
        vid = record["video_id"]
        assert q.video == f"{vid}/{vid}_video.mp4"
        assert q.id.startswith(f"dailyomni/{vid}/")
        assert q.category_dict["type"] == record["Type"]
        assert q.category_dict["duration"] == record["video_duration"]
        assert q.category_dict["video_category"] == record["video_category"]
    assert Counter(q.category_dict["type"] for q in questions) == Counter(r["Type"] for r in raw)
    unknown = sum(1 for r in raw if r.get("content_parent_category") in (None, "No content_parent_category provided"))
    assert sum(q.category_dict["content_parent_category"] == "unknown" for q in questions) == unknown > 0
    first = questions[0]
    assert first.id == "dailyomni/Ec_lQgZ9wlg/0"
    assert first.category_dict["content_fine_category"] == "Skincare Routines"


def test_dailyomni_example_subset_with_videos(shared_data, vqa):
    examples = shared_data / "videos" / "dailyomni_examples"
    if not examples.is_dir():
        pytest.skip(f"Daily-Omni example videos not found at {examples}")
    raw = json.loads((examples / "qa_for_these_3_videos.json").read_text())
    bench = DailyOmni(data_dir=str(examples), qa_file="qa_for_these_3_videos.json", video_dir=str(examples),
                      skip_missing=True)
    questions = bench.load()
    assert len(questions) == len(raw) == 9
    assert bench.missing_videos(questions) == []
    assert all(bench.video_path(q).is_file() for q in questions)
    assert {q.video for q in questions} == {f"{v}/{v}_video.mp4" for v in ("G_VTkkb34gw", "bswbQtOPk6E", "d6b4OmUFt7I")}
    # The subset keeps each of its videos' records in order, so its ids are those of the full file.
    full = {(q.video, q.question): q for q in DailyOmni(data_dir=str(vqa / "dailyomni")).load()}
    for q in questions:
        assert full[(q.video, q.question)] == q
    # The same questions with their videos absent: skip_missing drops them all, which is an error.
    with pytest.raises(ConfigError) as excinfo:
        DailyOmni(data_dir=str(examples), qa_file="qa_for_these_3_videos.json", video_dir=str(examples / "nowhere"),
                  skip_missing=True).load()
    one_line_error(excinfo, "no questions", "skip_missing")


# ---------------------------------------------------------------- tmp-file benchmarks


def test_mvbench_native_layout(tmp_path):
    write_json(tmp_path / "json" / "action_sequence.json", [
        {"video": "ZS9XR.mp4", "question": "What did the person do first?", "candidates": ["Sat", "Ran", "Ate"],
         "answer": "Ran", "start": 11.1, "end": 19.5},
        {"video": "4RWUE.mp4", "question": "Which came last?", "candidates": ["Slept", "Read"], "answer": "Slept",
         "start": 0, "end": 3},
    ])
    write_json(tmp_path / "json" / "object_shuffle.json", [
        {"video": "video_1.mp4", "question": "Where is the ball?", "candidates": ["left", "middle", "right"],
         "answer": "right"},
    ])
    bench = MVBench(data_dir=str(tmp_path), video_dir=str(tmp_path / "video"))
    questions = bench.load()
    assert [q.id for q in questions] == ["mvbench/action_sequence/0", "mvbench/action_sequence/1",
                                         "mvbench/object_shuffle/0"]
    assert [q.answer for q in questions] == ["B", "A", "C"]
    assert questions[0].options == ("Sat", "Ran", "Ate")
    assert questions[0].segment == (11.1, 19.5) and questions[2].segment is None
    assert questions[0].video == "star/Charades_v1_480/ZS9XR.mp4"
    assert questions[2].video == "perception/videos/video_1.mp4"
    assert bench.video_path(questions[2]) == tmp_path / "video" / "perception" / "videos" / "video_1.mp4"
    assert [q.category_dict["task"] for q in questions] == ["action_sequence", "action_sequence", "object_shuffle"]
    assert len(MVBench(data_dir=str(tmp_path), tasks=["object_shuffle"]).load()) == 1
    with pytest.raises(ConfigError) as excinfo:
        MVBench(data_dir=str(tmp_path), tasks=["action_antonym"])
    one_line_error(excinfo, "benchmark.tasks", "action_sequence, object_shuffle")
    with pytest.raises(ConfigError) as excinfo:
        MVBench(data_dir=str(tmp_path), video_ext=".mp4")
    one_line_error(excinfo, "benchmark.video_ext", "null")
    write_json(tmp_path / "json" / "bad.json", [{"video": "v.mp4", "question": "q", "candidates": ["a"],
                                                 "answer": "z"}])
    with pytest.raises(ConfigError) as excinfo:
        MVBench(data_dir=str(tmp_path), tasks="bad").load()
    one_line_error(excinfo, "bad.json", "record 0")


def test_egoschema_native_layout(tmp_path):
    options = {f"option {i}": f"choice {i}" for i in range(5)}
    write_json(tmp_path / "questions.json", [
        {"q_uid": "uid-a", "google_drive_id": "g1", "question": "What is C doing?", **options},
        {"q_uid": "uid-b", "google_drive_id": "g2", "question": "Why?", **options},
        {"q_uid": "uid-c", "google_drive_id": "g3", "question": "Where?", **options},
    ])
    write_json(tmp_path / "subset_answers.json", {"uid-c": 4, "uid-a": 0})
    questions = EgoSchema(data_dir=str(tmp_path)).load()
    assert [q.id for q in questions] == ["egoschema/uid-a", "egoschema/uid-c"]  # questions.json order
    assert [q.answer for q in questions] == ["A", "E"]
    assert questions[0].options == tuple(f"choice {i}" for i in range(5))
    assert questions[0].video == "uid-a.mp4"
    assert questions[0].category_dict == {"subset": "subset"}
    write_json(tmp_path / "subset_answers.json", {"uid-a": 7})
    with pytest.raises(ConfigError) as excinfo:
        EgoSchema(data_dir=str(tmp_path)).load()
    one_line_error(excinfo, "subset_answers.json", "0-4")


@pytest.mark.parametrize("cls, ext", [(MSVDQA, ".avi"), (MSRVTTQA, ".mp4")])
def test_msvd_msrvtt_split_layout(tmp_path, cls, ext):
    write_json(tmp_path / "test_q.json", [
        {"video_name": "vid1", "question": "what is a man playing?", "question_id": "v_0"},
        {"video_name": "vid2", "question": "who is cooking?", "question_id": "v_1"},
        {"video_name": "vid3.webm", "question": "is it raining?", "question_id": "v_2"},
    ])
    write_json(tmp_path / "test_a.json", [
        {"answer": "woman", "question_id": "v_1"},
        {"answer": "guitar", "question_id": "v_0", "type": "what"},
        {"answer": "yes", "question_id": "v_2"},
    ])
    questions = cls(data_dir=str(tmp_path)).load()
    assert [q.id for q in questions] == [f"{cls.name}/v_0", f"{cls.name}/v_1", f"{cls.name}/v_2"]
    assert [q.answer for q in questions] == ["guitar", "woman", "yes"]
    assert [q.video for q in questions] == [f"vid1{ext}", f"vid2{ext}", "vid3.webm"]
    assert all(q.kind == "open" for q in questions)
    assert [q.category_dict["question_word"] for q in questions] == ["what", "who", "other"]
    assert questions[0].category_dict["type"] == "what"
    write_json(tmp_path / "test_a.json", [{"answer": "guitar", "question_id": "v_0"}])
    with pytest.raises(ConfigError) as excinfo:
        cls(data_dir=str(tmp_path)).load()
    one_line_error(excinfo, "test_a.json", "v_1")


def test_msvd_single_file_layout(tmp_path):
    write_json(tmp_path / "msvd_qa.json", [
        {"video": "-4wsuPCjDBc_5_15", "question": "what is a group of people playing?", "answer": "basketball",
         "question_id": 7},
        {"video_name": "abc_1_2", "question": "how many cats are there?", "answer": "two", "question_id": 8},
    ])
    questions = MSVDQA(data_dir=str(tmp_path), question_file="msvd_qa.json", answer_file=None).load()
    assert [q.id for q in questions] == ["msvd_qa/7", "msvd_qa/8"]
    assert [q.video for q in questions] == ["-4wsuPCjDBc_5_15.avi", "abc_1_2.avi"]
    assert [q.answer for q in questions] == ["basketball", "two"]
    assert questions[1].category_dict == {"question_word": "how"}


def test_perception_test_native_layout(tmp_path):
    write_json(tmp_path / "mc_question_valid.json", {
        "video_10909": {"mc_question": [
            {"id": 0, "question": "How many objects?", "options": ["1", "2", "3"], "answer_id": 2,
             "area": "physics", "reasoning": "descriptive", "tag": ["counting", "objects"]},
            {"id": 1, "question": "What happens next?", "options": ["a", "b", "c"], "answer_id": 0,
             "area": "semantics", "reasoning": "predictive", "tag": []},
        ]},
        "video_222": {"metadata": {"split": "valid"}},  # no mc_question: skipped
        "video_35": {"mc_question": [
            {"id": 0, "question": "Is it?", "options": ["x", "y", "z"], "answer_id": 1, "area": "memory",
             "reasoning": "explanatory", "tag": ["change"]},
        ]},
    })
    questions = PerceptionTest(data_dir=str(tmp_path)).load()
    assert [q.id for q in questions] == ["perception_test/video_10909/0", "perception_test/video_10909/1",
                                         "perception_test/video_35/0"]
    assert [q.answer for q in questions] == ["C", "A", "B"]
    assert questions[0].video == "video_10909.mp4"
    assert questions[0].category_dict == {"area": "physics", "reasoning": "descriptive", "tags": "counting,objects"}
    write_json(tmp_path / "mc_question_test.json", {"video_1": {"mc_question": [
        {"id": 0, "question": "q", "options": ["a", "b", "c"], "area": "physics", "reasoning": "descriptive"}]}})
    with pytest.raises(ConfigError) as excinfo:
        PerceptionTest(data_dir=str(tmp_path), qa_file="mc_question_test.json").load()
    one_line_error(excinfo, "answer_id", "valid split")


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


def test_avhbench_per_video_layout(tmp_path):
    write_json(tmp_path / "json" / "00191.json", AVH_RECORDS)
    write_json(tmp_path / "json" / "00006.json", [
        {"video_id": "00006_swap", "task": "AV Hallucination (Video)", "text": "Is the dog visible in the video?",
         "label": "no"},
    ])
    questions = AVHBench(data_dir=str(tmp_path), video_dir=str(tmp_path / "video")).load()
    assert [q.id for q in questions] == ["avhbench/00006_swap/0", "avhbench/00191/0", "avhbench/00191/1",
                                         "avhbench/00191/2"]  # files in name order, captioning left out
    assert [q.answer for q in questions] == ["no", "yes", "no", "yes"]
    assert all(q.kind == "yesno" and q.options == () for q in questions)
    assert [q.category for q in questions] == ["audio_driven_video_hallucination", "video_driven_audio_hallucination",
                                               "audio_driven_video_hallucination", "av_matching"]
    assert questions[0].video == "00006_swap.mp4"
    everything = AVHBench(data_dir=str(tmp_path), tasks="all").load()
    caption = everything[-1]
    assert caption.id == "avhbench/00191/3" and caption.kind == "open"
    assert caption.answer == "A young man is laying in bed."
    with pytest.raises(ConfigError) as excinfo:
        AVHBench(data_dir=str(tmp_path), tasks=["hallucination"])
    one_line_error(excinfo, "benchmark.tasks", "av_matching")


def test_avhbench_single_file_layout(tmp_path):
    write_json(tmp_path / "qa.json", AVH_RECORDS + [{**AVH_RECORDS[0], "label": "Maybe"}])
    with pytest.raises(ConfigError) as excinfo:
        AVHBench(data_dir=str(tmp_path), qa_file="qa.json").load()
    one_line_error(excinfo, "qa.json", "record 4", "Yes or No")
    write_json(tmp_path / "qa.json", AVH_RECORDS)
    questions = AVHBench(data_dir=str(tmp_path), qa_file="qa.json", tasks=["av_matching"]).load()
    assert [(q.id, q.answer) for q in questions] == [("avhbench/00191/2", "yes")]


# ---------------------------------------------------------------- config errors


ALL_CLASSES = [NExTQAMC, NExTQAOE, VideoMME, MVBench, EgoSchema, ActivityNetQA, MSVDQA, MSRVTTQA, TGIFQA,
               PerceptionTest, DailyOmni, AVHBench]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.name)
def test_missing_data_dir_is_one_line_error(tmp_path, cls):
    with pytest.raises(ConfigError) as excinfo:
        cls(data_dir=str(tmp_path / "absent"))
    message = one_line_error(excinfo, "benchmark.data_dir", "valid values are a folder holding")
    assert str(tmp_path / "absent") in message


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.name)
def test_empty_data_dir_names_the_missing_file(tmp_path, cls):
    with pytest.raises(ConfigError) as excinfo:
        cls(data_dir=str(tmp_path))
    one_line_error(excinfo, "is missing from benchmark.data_dir", "valid values are a folder holding")


def test_unknown_split_task_and_settings(vqa, tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        NExTQAMC(data_dir=str(vqa / "nextqa"), split="dev")
    one_line_error(excinfo, "benchmark.split=dev", "train, val, test")
    with pytest.raises(ConfigError) as excinfo:
        NExTQAMC(data_dir=str(vqa / "nextqa"), split="train")  # a valid split whose file is absent
    one_line_error(excinfo, "benchmark.split", "train.csv")
    with pytest.raises(ConfigError) as excinfo:
        ActivityNetQA(data_dir=str(vqa / "activitynet_qa"), split="testing")
    one_line_error(excinfo, "benchmark.split=testing", "train, val, test")
    with pytest.raises(ConfigError) as excinfo:
        TGIFQA(data_dir=str(vqa / "tgif_qa"), task="caption")
    one_line_error(excinfo, "benchmark.task=caption", "action, transition, frameqa, count")
    with pytest.raises(ConfigError) as excinfo:
        TGIFQA(data_dir=str(vqa / "tgif_qa"), task="count", scoring="logits")
    one_line_error(excinfo, "benchmark.scoring=logits", "scoring=generate")
    assert TGIFQA(data_dir=str(vqa / "tgif_qa"), task="action", scoring="logits").scoring == "logits"
    with pytest.raises(ConfigError) as excinfo:
        ActivityNetQA(data_dir=str(vqa / "activitynet_qa"), scoring="logits")
    one_line_error(excinfo, "benchmark.scoring=logits", "scoring=generate")
    with pytest.raises(ConfigError) as excinfo:
        VideoMME(data_dir=str(vqa / "videomme"), durations=["short", "tiny"])
    one_line_error(excinfo, "benchmark.durations", "short, medium, long")
    with pytest.raises(ConfigError) as excinfo:
        VideoMME(data_dir=str(vqa / "videomme"), video_name="url")
    one_line_error(excinfo, "benchmark.video_name=url", "youtube_id, video_id")
    with pytest.raises(ConfigError) as excinfo:
        VideoMME(data_dir=str(vqa / "videomme"), qa_file="missing.json")
    one_line_error(excinfo, "benchmark.qa_file", "missing.json")
    with pytest.raises(ConfigError) as excinfo:
        NExTQAMC(data_dir=str(vqa / "nextqa"), video_ext="m p4")
    one_line_error(excinfo, "benchmark.video_ext", ".mp4")
    with pytest.raises(ConfigError) as excinfo:
        NExTQAMC(data_dir=str(vqa / "nextqa"), skip_missing=True)
    one_line_error(excinfo, "benchmark.skip_missing", "video_dir")
    bench = NExTQAMC(data_dir=str(vqa / "nextqa"), limit=3)
    questions = bench.load()
    assert len(questions) == 3
    with pytest.raises(ConfigError) as excinfo:
        bench.video_path(questions[0])
    one_line_error(excinfo, "benchmark.video_dir")


def test_malformed_rows_are_one_line_errors(tmp_path):
    (tmp_path / "val.csv").write_text(
        "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n1,1,1,1,q,7,0,CW,a,b,c,d,e\n",
        encoding="utf-8")
    write_json(tmp_path / "map_vid_vidorID.json", {"1": "0000/1"})
    with pytest.raises(ConfigError) as excinfo:
        NExTQAMC(data_dir=str(tmp_path)).load()
    one_line_error(excinfo, "val.csv row 1", "0-4")
    (tmp_path / "qa.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        DailyOmni(data_dir=str(tmp_path)).load()
    one_line_error(excinfo, "qa.json is not valid JSON")


# ---------------------------------------------------------------- YAML configs

YAMLS = {
    "nextqa_mc": NExTQAMC, "nextqa_oe": NExTQAOE, "videomme": VideoMME, "mvbench": MVBench,
    "egoschema": EgoSchema, "activitynet_qa": ActivityNetQA, "msvd_qa": MSVDQA, "msrvtt_qa": MSRVTTQA,
    "tgif_qa": TGIFQA, "perception_test": PerceptionTest, "dailyomni": DailyOmni, "avhbench": AVHBench,
}


def _init_params(cls) -> set[str]:
    params: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            params |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return params


@pytest.mark.parametrize("name", sorted(YAMLS))
def test_yaml_keys_are_parameters_and_commented(name):
    path = REPO / "conf" / "benchmark" / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    cls = YAMLS[name]
    assert cfg._target_ == f"{cls.__module__}.{cls.__name__}"
    assert issubclass(cls, VideoBenchmark) and cls.name == name
    assert set(cfg) - {"_target_"} <= _init_params(cls)
    assert OmegaConf.is_missing(cfg, "data_dir")
    assert {"limit", "scoring", "max_new_tokens", "video_dir", "skip_missing"} <= set(cfg)
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("_target_"):
            assert "#" in line, f"{name}.yaml: uncommented key line {line!r}"


def test_yamls_instantiate_on_real_data(vqa, tmp_path):
    def build(name: str, **overrides):
        cfg = OmegaConf.load(REPO / "conf" / "benchmark" / f"{name}.yaml")
        cfg.merge_with(overrides)
        return instantiate(cfg)

    assert len(build("nextqa_mc", data_dir=str(vqa / "nextqa"), video_dir=str(tmp_path)).load()) == 4996
    assert len(build("videomme", data_dir=str(vqa / "videomme"), video_dir=str(tmp_path)).load()) == 2700
    assert len(build("activitynet_qa", data_dir=str(vqa / "activitynet_qa"), video_dir=str(tmp_path)).load()) == 8000
    assert len(build("tgif_qa", data_dir=str(vqa / "tgif_qa"), video_dir=str(tmp_path), task="count").load()) == 3554
    assert len(build("dailyomni", data_dir=str(vqa / "dailyomni"), video_dir=str(tmp_path), limit=5).load()) == 5
    write_json(tmp_path / "mv" / "json" / "action_count.json",
               [{"video": "a.mp4", "question": "q", "candidates": ["1", "2"], "answer": "2"}])
    mv = build("mvbench", data_dir=str(tmp_path / "mv"))
    assert mv.video_path(mv.load()[0]) == tmp_path / "mv" / "video" / "perception" / "videos" / "a.mp4"
    write_json(tmp_path / "avh" / "json" / "1.json", AVH_RECORDS)
    assert len(build("avhbench", data_dir=str(tmp_path / "avh")).load()) == 3


# ---------------------------------------------------------------- open-ended scoring


def test_normalize_and_exact_match():
    assert normalize_answer("The  Two dogs!") == "2 dogs"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("baby's toy") == "baby s toy"
    assert exact_match("Two.", "2")
    assert exact_match("a guitar", ["piano", "Guitar"])
    assert not exact_match("guitars", "guitar")
    assert not exact_match("", "guitar")


@pytest.mark.parametrize("text, expected", [
    ("Yes", "yes"), ("no.", "no"), ("Yes, the man is wearing a hat.", "yes"), ("Nope", "no"),
    ("The answer is no.", "no"), ("**Yes**", "yes"), ("I think yes", "yes"),
    ("yes or no", "yes"),  # the first word decides
    ("It could be yes or no", None), ("The man is wearing a hat", None), ("", None), ("nothing", None),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


TABLE = {("dog", "cat"): 0.8, ("run", "cat"): 0.2, ("run", "dog"): 0.3}


def table_similarity(w1: str, w2: str):
    return TABLE.get((w1, w2), TABLE.get((w2, w1)))


def test_wup_threshold_and_identity():
    assert wup("dog", "dog", 0.9, table_similarity) == 1.0
    assert wup("dog", "cat", 0.0, table_similarity) == pytest.approx(0.8)
    assert wup("dog", "cat", 0.9, table_similarity) == pytest.approx(0.08)  # below alpha: x 0.1
    assert wup("dog", "xyz", 0.0, table_similarity) == 0.0  # no synset


def test_wups_arithmetic_by_hand():
    # pred {dog, run} vs ref {cat}: pred->ref = 0.8 * 0.2; ref->pred = max(0.8, 0.2); score = min
    assert wups(["dog", "run"], ["cat"], 0.0, table_similarity) == pytest.approx(0.16)
    assert wups(["cat"], ["dog", "run"], 0.0, table_similarity) == pytest.approx(0.8)
    assert wups_score("dog run", "cat", 0.0, table_similarity) == pytest.approx(0.16)
    # WUPS@0.9: every similarity is below 0.9, so each is scaled by 0.1
    assert wups_score("dog run", "cat", 0.9, table_similarity) == pytest.approx(0.08 * 0.02)
    # a word with no similar word is skipped, not zeroed; all skipped -> 0
    assert wups_score("dog xyz", "cat", 0.0, table_similarity) == pytest.approx(0.8)
    assert wups_score("xyz", "cat", 0.0, table_similarity) == 0.0
    assert wups_score("The Dog", "dog", 0.0, table_similarity) == 1.0  # "the" has no synset here: skipped
    assert wups_score("the dog", "dog", 0.0, table_similarity, stopwords={"the"}) == 1.0
    assert wups_score("", "dog", 0.0, table_similarity) == 0.0


def test_nextoe_score_rules():
    # counts and binary questions: exact match only (digits and number words agree)
    assert nextoe_score("nine", "9", "DC", 0.0, table_similarity) == 1.0
    assert nextoe_score("8", "nine", "DC", 0.0, table_similarity) == 0.0
    assert nextoe_score("No.", ["no"], "DB", 0.0, table_similarity) == 1.0
    # other types: WUPS, best over the references
    assert nextoe_score("dog", ["run", "cat"], "CW", 0.0, table_similarity) == pytest.approx(0.8)
    assert nextoe_score("dog", ["run", "cat"], "CW", 0.9, table_similarity) == pytest.approx(0.08)


def test_wordnet_similarity_without_nltk_is_config_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(ConfigError) as excinfo:
        wordnet_similarity()
    one_line_error(excinfo, "benchmark.open_metric=wups", "nltk", "valid values are")


def test_wordnet_similarity_real_when_installed():
    nltk = pytest.importorskip("nltk", reason="nltk is not installed (WUPS arithmetic is tested with a table)")
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            pytest.skip("nltk's WordNet corpus is not installed (nltk.download('wordnet') needs the network)")
    similarity = wordnet_similarity()
    assert 0.8 < similarity("dog", "cat") < 0.9  # 0.857 in WordNet 3.0
    assert wups_score("dog", "dog", 0.9, similarity) == 1.0
