"""ActivityNet-QA (Yu et al., AAAI 2019), open-ended questions on ActivityNet videos, in
the release's layout (github MILVLG/activitynet-qa, ``dataset/``).

``<split>_q.json``: a list of ``{"video_name": ..., "question": ..., "question_id": ...}``;
``<split>_a.json``: a list of ``{"answer": ..., "type": 0-8, "question_id": ...}``, paired
by ``question_id``. Types (the release's README): 0 motion, 1 spatial relation,
2 temporal relation, 3 yes/no, 4 color, 5 object, 6 location, 7 number, 8 other. Type 3
questions are ``yesno``; the others are ``open``.

ActivityNet videos are stored as ``v_<video_name>.mp4`` (the name the official crawler
gives them, and what Video-ChatGPT/Video-LLaVA evaluations look for); ``video_prefix``
and ``video_ext`` change that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from outro_sweep.benchmarks.video_base import (
    YES_NO,
    VideoBenchmark,
    Question,
    ask,
    join_by_question_id,
)
from outro_sweep.config.schema import check_arguments

SPLITS = ("train", "val", "test")
TYPES = {
    0: "motion",
    1: "spatial relation",
    2: "temporal relation",
    3: "yes/no",
    4: "color",
    5: "object",
    6: "location",
    7: "number",
    8: "other",
}
YES_NO_TYPE = 3


class ActivityNetQA(VideoBenchmark):
    name = "activitynet_qa"
    layout = "<split>_q.json and <split>_a.json (ActivityNet-QA: question_id, video_name, question / answer, type)"
    kinds = ("yesno", "open")

    def __init__(self, data_dir: str, split: Literal[SPLITS] = "test", video_prefix: str = "v_", **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        check_arguments(ActivityNetQA, locals(), self.config_key)
        self.split = split
        self.questions_path = self._file(f"{self.split}_q.json", key="benchmark.split")
        self.answers_path = self._file(f"{self.split}_a.json", key="benchmark.split")
        self.video_prefix = "" if video_prefix is None else str(video_prefix)

    def describe(self) -> str:
        return f"split={self.split}"

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.questions_path, self.answers_path)

    def _load(self) -> list[Question]:
        qdata, adata = self._read_json(self.questions_path), self._read_json(self.answers_path)
        for path, data in ((self.questions_path, qdata), (self.answers_path, adata)):
            if not isinstance(data, list):
                raise self._malformed(path, "top level", "a list of objects")
        questions = []
        for record, answer in join_by_question_id(qdata, adata, self.questions_path, self.answers_path, self):
            qtype = answer.get("type")
            if qtype not in TYPES or "video_name" not in record:
                raise self._malformed(self.answers_path, f"(question_id {record['question_id']!r})",
                                      "answers with a type 0-8, questions with a video_name")
            text = str(answer["answer"]).strip()
            kind = "open"
            if qtype == YES_NO_TYPE:
                if text.lower() not in YES_NO:
                    raise self._malformed(self.answers_path, f"(question_id {record['question_id']!r})",
                                          "type 3 (yes/no) answers that are yes or no")
                kind, text = "yesno", text.lower()
            questions.append(
                ask(
                    id=f"{self.name}/{self.split}/{record['question_id']}",
                    video=f"{self.video_prefix}{record['video_name']}{self.video_ext}",
                    question=record["question"],
                    options=(),
                    answer=text,
                    kind=kind,
                    categories=(("type", TYPES[qtype]),),
                )
            )
        return questions
