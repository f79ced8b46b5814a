"""Perception Test (Patraucean et al., NeurIPS 2023), the multiple-choice video QA task, in
the release's annotation layout (github google-deepmind/perception_test).

``qa_file`` (``mc_question_valid.json``; the all-task ``all_valid.json`` has the same
shape) maps each video id to its annotations; the ``mc_question`` list holds::

    {"id": 0, "question": "...", "options": ["...", "...", "..."], "answer_id": 1,
     "area": "physics", "reasoning": "counterfactual", "tag": ["collision", ...]}

Videos without ``mc_question`` are skipped; questions without ``answer_id`` (the held-out
test split) are refused. Categories: area, reasoning, and the tags joined by ",". The
video is ``<video_id>.mp4``. Order: the file's video order, then each video's list order.
"""

from __future__ import annotations

from pathlib import Path

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import VideoBenchmark, Question, ask

FIELDS = ("id", "question", "options", "answer_id", "area", "reasoning")


class PerceptionTest(VideoBenchmark):
    name = "perception_test"
    layout = "qa_file: the Perception Test json ({video_id: {mc_question: [{id, question, options, answer_id, ...}]}})"
    kinds = ("mc",)

    def __init__(self, data_dir: str, qa_file: str = "mc_question_valid.json", **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.qa_path = self._file(str(qa_file), key="benchmark.qa_file")

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.qa_path)

    def _load(self) -> list[Question]:
        data = self._read_json(self.qa_path)
        if not isinstance(data, dict):
            raise self._malformed(self.qa_path, "top level", "one object {video_id: {mc_question: [...]}}")
        questions = []
        for video_id, entry in data.items():
            items = entry.get("mc_question") if isinstance(entry, dict) else None
            if not items:
                continue
            for number, q in enumerate(items):
                where = f"video {video_id!r} mc_question {number}"
                if not isinstance(q, dict) or not set(FIELDS) - {"answer_id"} <= set(q) or not isinstance(q["options"], list):
                    raise self._malformed(self.qa_path, where, "objects with " + ", ".join(FIELDS))
                if "answer_id" not in q:
                    raise self._malformed(self.qa_path, where, "questions with answer_id (the test split's answers "
                                          "are not public: use the valid split)")
                answer = q["answer_id"]
                if not isinstance(answer, int) or not 0 <= answer < len(q["options"]):
                    raise self._malformed(self.qa_path, where, f"answer_id among 0..{len(q['options']) - 1}")
                tags = q.get("tag") or []
                questions.append(
                    ask(
                        id=f"{self.name}/{video_id}/{q['id']}",
                        video=f"{video_id}{self.video_ext}",
                        question=q["question"],
                        options=tuple(str(o) for o in q["options"]),
                        answer=option_letters(len(q["options"]))[answer],
                        kind="mc",
                        categories=(
                            ("area", str(q["area"])),
                            ("reasoning", str(q["reasoning"])),
                            ("tags", ",".join(str(t) for t in tags)),
                        ),
                    )
                )
        return questions
