"""MSVD-QA (Xu et al., ACM MM 2017), open-ended one-word answers, in the evaluation layout
of Video-ChatGPT / Video-LLaVA (``GPT_Zero_Shot_QA/MSVD_Zero_Shot_QA/``).

Two layouts, chosen by ``answer_file``:

* split (the default): ``question_file`` (``test_q.json``), a list of
  ``{"video_name": ..., "question": ..., "question_id": ...}``, and ``answer_file``
  (``test_a.json``), a list of ``{"answer": ..., "question_id": ...}`` (other keys, such
  as ``type``, are kept as categories), paired by ``question_id``;
* single (``answer_file: null``): ``question_file`` alone, a list of
  ``{"video_name" or "video": ..., "question": ..., "answer": ..., "question_id": ...}``.

The video of a question is ``<video_prefix><video name><video_ext>`` (MSVD's YouTube clips
are .avi); a name that already ends in an extension is used as is. The category is the
question word (what/who/how/when/where/which/why, else other), the breakdown MSVD-QA and
MSRVTT-QA are reported by.
"""

from __future__ import annotations

import re
from pathlib import Path

from outro_sweep.benchmarks.video_base import (
    VideoBenchmark,
    Question,
    ask,
    join_by_question_id,
)

QUESTION_WORDS = ("what", "who", "how", "when", "where", "which", "why")
VIDEO_KEYS = ("video_name", "video", "video_id")
_HAS_EXT = re.compile(r".*\.[A-Za-z0-9]{2,4}")


def question_word(question: str) -> str:
    words = re.findall(r"[a-z]+", question.lower())
    return words[0] if words and words[0] in QUESTION_WORDS else "other"


class MSVDQA(VideoBenchmark):
    name = "msvd_qa"
    layout = "test_q.json and test_a.json (Video-ChatGPT layout), or one json list with answers (answer_file: null)"
    default_video_ext = ".avi"
    kinds = ("open",)

    def __init__(
        self,
        data_dir: str,
        question_file: str = "test_q.json",
        answer_file: str | None = "test_a.json",
        video_prefix: str = "",
        **kwargs,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.questions_path = self._file(str(question_file), key="benchmark.question_file")
        self.answers_path = None if answer_file is None else self._file(str(answer_file), key="benchmark.answer_file")
        self.video_prefix = "" if video_prefix is None else str(video_prefix)

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.questions_path, self.answers_path)

    def _pairs(self) -> list[tuple[dict, dict]]:
        qdata = self._read_json(self.questions_path)
        if not isinstance(qdata, list):
            raise self._malformed(self.questions_path, "top level", "a list of objects")
        if self.answers_path is None:
            for number, record in enumerate(qdata):
                if not isinstance(record, dict) or not {"question", "answer"} <= set(record):
                    raise self._malformed(self.questions_path, f"record {number}",
                                          "objects with video_name (or video), question, answer, question_id")
            return [(record, record) for record in qdata]
        adata = self._read_json(self.answers_path)
        if not isinstance(adata, list):
            raise self._malformed(self.answers_path, "top level", "a list of objects")
        return join_by_question_id(qdata, adata, self.questions_path, self.answers_path, self)

    def _video(self, number: int, record: dict) -> str:
        name = next((record[k] for k in VIDEO_KEYS if k in record), None)
        if name is None:
            raise self._malformed(self.questions_path, f"record {number}", f"objects with one of {', '.join(VIDEO_KEYS)}")
        name = f"{self.video_prefix}{name}"
        return name if _HAS_EXT.fullmatch(name) else name + self.video_ext

    def _load(self) -> list[Question]:
        questions = []
        for number, (record, answer) in enumerate(self._pairs()):
            categories = [("question_word", question_word(record["question"]))]
            if answer is not record and "type" in answer:
                categories.append(("type", str(answer["type"])))
            qid = record.get("question_id", number)
            questions.append(
                ask(
                    id=f"{self.name}/{qid}",
                    video=self._video(number, record),
                    question=record["question"],
                    options=(),
                    answer=str(answer["answer"]).strip(),
                    kind="open",
                    categories=tuple(categories),
                )
            )
        return questions
