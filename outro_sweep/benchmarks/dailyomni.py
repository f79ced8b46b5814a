"""Daily-Omni (2025), audio-visual four-option questions on 30 s and 60 s YouTube clips, in
the release's layout (github Lliar-liar/Daily-Omni).

``qa_file`` (``qa.json``) is a list of::

    {"Question": "...", "Choice": ["A. ...", "B. ...", "C. ...", "D. ..."], "Answer": "B",
     "video_id": "Ec_lQgZ9wlg", "Type": "Event Sequence", "video_category": "Howto & Style",
     "content_parent_category": "Lifestyle", "content_fine_category": "Skincare Routines",
     "video_duration": "30s"}

Some records lack the content categories or hold the placeholder "No content_..._category
provided"; both are recorded as "unknown". Records have no id: a question's id is
``dailyomni/<video_id>/<n>``, n counting that video's questions in file order, so a
filtered copy that keeps all of a video's records in order gets the same ids. The video is
``<video_id>/<video_id>_video.mp4`` (the release's example_videos/ layout).

Use qa.json for the answers: each clip's QAs_revise.json orders the options differently.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import (
    VideoBenchmark,
    Question,
    ask,
    strip_letter,
)

FIELDS = ("Question", "Choice", "Answer", "video_id", "Type")
CATEGORY_KEYS = (
    ("type", "Type"),
    ("video_category", "video_category"),
    ("content_parent_category", "content_parent_category"),
    ("content_fine_category", "content_fine_category"),
    ("duration", "video_duration"),
)
UNKNOWN = "unknown"


def _category(record: dict, key: str) -> str:
    value = record.get(key)
    if value is None or not str(value).strip() or str(value).startswith("No ") and str(value).endswith(" provided"):
        return UNKNOWN
    return str(value).strip()


class DailyOmni(VideoBenchmark):
    name = "dailyomni"
    layout = "qa_file: the Daily-Omni qa.json (a list of {Question, Choice, Answer, video_id, Type, ...})"
    kinds = ("mc",)

    def __init__(self, data_dir: str, qa_file: str = "qa.json", **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.qa_path = self._file(str(qa_file), key="benchmark.qa_file")

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.qa_path)

    def _load(self) -> list[Question]:
        data = self._read_json(self.qa_path)
        expected = "objects with " + ", ".join(FIELDS) + " (Choice a list of 'A. ...' options, Answer one letter)"
        if not isinstance(data, list):
            raise self._malformed(self.qa_path, "top level", "a list of " + expected)
        seen: Counter[str] = Counter()
        questions = []
        for number, record in enumerate(data):
            if not isinstance(record, dict) or not set(FIELDS) <= set(record) or not isinstance(record["Choice"], list):
                raise self._malformed(self.qa_path, f"record {number}", expected)
            letters = option_letters(len(record["Choice"]))
            answer = str(record["Answer"]).strip()
            if answer not in letters:
                raise self._malformed(self.qa_path, f"record {number} (Answer {answer!r})", expected)
            vid = str(record["video_id"])
            questions.append(
                ask(
                    id=f"{self.name}/{vid}/{seen[vid]}",
                    video=f"{vid}/{vid}_video{self.video_ext}",
                    question=record["Question"],
                    options=tuple(strip_letter(str(c), letter) for c, letter in zip(record["Choice"], letters)),
                    answer=answer,
                    kind="mc",
                    categories=tuple((name, _category(record, key)) for name, key in CATEGORY_KEYS),
                )
            )
            seen[vid] += 1
        return questions
