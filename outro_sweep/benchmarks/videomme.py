"""Video-MME (Fu et al., 2024), 900 videos x 3 four-option questions, in its json layout.

``qa_file`` (github BradyFU/Video-MME, ``evaluation/output_test_template.json``) is a list
with one object per video::

    {"video_id": "001", "duration_category": "short", "video_category": "Knowledge",
     "video_subcategory": "Humanity & History", "url": "https://www.youtube.com/watch?v=...",
     "questions": [{"question_id": "001-1", "task_type": "Object Reasoning",
                    "question": "...", "choices": ["A. ...", "B. ...", "C. ...", "D. ..."],
                    "answer": "A", "response": "..."}]}

The names of the Hugging Face release's rows are accepted too (``duration``, ``domain``,
``sub_category``, ``options``, ``videoID``). Video files are named by YouTube id,
``<videoID>.mp4`` (as distributed): ``videoID`` where given, else the ``v=`` value of
``url``. ``video_name: video_id`` names them ``<video_id>.mp4`` ("001.mp4") instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlparse

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import (
    VideoBenchmark,
    Question,
    ask,
    strip_letter,
)
from outro_sweep.config.schema import check_arguments

DURATIONS = ("short", "medium", "long")
VIDEO_NAMES = ("youtube_id", "video_id")
_ALIASES = {
    "duration": ("duration_category", "duration"),
    "domain": ("video_category", "domain"),
    "sub_category": ("video_subcategory", "sub_category"),
    "options": ("choices", "options"),
}
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]+")


def _get(record: dict, field: str):
    for key in _ALIASES.get(field, (field,)):
        if key in record:
            return record[key]
    return None


def youtube_id(url: str) -> str | None:
    """The ``v=`` parameter of a YouTube watch url (or the last path part of a youtu.be one)."""
    parsed = urlparse(url)
    value = parse_qs(parsed.query).get("v", [None])[0]
    if value is None and parsed.netloc.endswith("youtu.be"):
        value = parsed.path.strip("/")
    return value if value and _YOUTUBE_ID.fullmatch(value) else None


class VideoMME(VideoBenchmark):
    name = "videomme"
    layout = "qa_file: the Video-MME json (a list of videos, each with duration_category, url and questions)"
    kinds = ("mc",)

    def __init__(
        self,
        data_dir: str,
        qa_file: str = "videomme_900videos_2700q.json",
        durations="all",
        video_name: Literal[VIDEO_NAMES] = "youtube_id",
        **kwargs,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        check_arguments(VideoMME, locals(), self.config_key)
        self.qa_path = self._file(str(qa_file), key="benchmark.qa_file")
        self.durations = self._select("durations", durations, DURATIONS)
        self.video_name = video_name

    def describe(self) -> str:
        return f"durations=[{', '.join(self.durations)}]"

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.qa_path)

    def _video_file(self, number: int, record: dict) -> str:
        if self.video_name == "video_id":
            return str(record["video_id"]) + self.video_ext
        vid = record.get("videoID") or youtube_id(str(record.get("url", "")))
        if not vid:
            raise self._malformed(self.qa_path, f"video {number} (video_id {record.get('video_id')!r})",
                                  "videos with a videoID or a YouTube url (or set benchmark.video_name=video_id)")
        return str(vid) + self.video_ext

    def _load(self) -> list[Question]:
        data = self._read_json(self.qa_path)
        expected = "objects with video_id, duration_category, video_category, questions[{question_id, ...}]"
        if not isinstance(data, list):
            raise self._malformed(self.qa_path, "top level", "a list of " + expected)
        questions = []
        for number, record in enumerate(data):
            if not isinstance(record, dict) or "video_id" not in record or not isinstance(record.get("questions"), list):
                raise self._malformed(self.qa_path, f"video {number}", expected)
            duration = _get(record, "duration")
            if duration not in DURATIONS:
                raise self._malformed(self.qa_path, f"video {number} (duration {duration!r})",
                                      f"videos whose duration is one of {', '.join(DURATIONS)}")
            if duration not in self.durations:
                continue
            video = self._video_file(number, record)
            for q in record["questions"]:
                options = _get(q, "options") if isinstance(q, dict) else None
                if not isinstance(options, list) or not {"question_id", "question", "answer", "task_type"} <= set(q):
                    raise self._malformed(self.qa_path, f"video {number} question", "question_id, task_type, question, "
                                          "choices, answer")
                letters = option_letters(len(options))
                if q["answer"] not in letters:
                    raise self._malformed(self.qa_path, f"question {q['question_id']!r} (answer {q['answer']!r})",
                                          f"answers among {', '.join(letters)}")
                questions.append(
                    ask(
                        id=f"{self.name}/{q['question_id']}",
                        video=video,
                        question=q["question"],
                        options=tuple(strip_letter(o, letter) for o, letter in zip(options, letters)),
                        answer=q["answer"],
                        kind="mc",
                        categories=(
                            ("task_type", str(q["task_type"])),
                            ("duration", duration),
                            ("domain", str(_get(record, "domain"))),
                            ("sub_category", str(_get(record, "sub_category"))),
                        ),
                    )
                )
        return questions

