"""EgoSchema (Mangalam et al., NeurIPS 2023), five-option questions on 3-minute egocentric
clips, in the release's layout (github egoschema/EgoSchema).

``questions.json``: a list of ``{"q_uid": ..., "google_drive_id": ..., "question": ...,
"option 0": ..., ..., "option 4": ...}``; ``subset_answers.json`` (``answers_file``):
``{q_uid: correct option index}``. Only the questions with an answer there are loaded
(the public answers cover the 500-question subset; the rest are scored on a server). The
video of a question is ``<q_uid>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import VideoBenchmark, Question, ask

NUM_OPTIONS = 5
LETTERS = option_letters(NUM_OPTIONS)


class EgoSchema(VideoBenchmark):
    name = "egoschema"
    layout = "questions.json (EgoSchema: q_uid, question, option 0..option 4) and the answers file (subset_answers.json)"
    kinds = ("mc",)

    def __init__(
        self,
        data_dir: str,
        questions_file: str = "questions.json",
        answers_file: str = "subset_answers.json",
        **kwargs,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.questions_path = self._file(str(questions_file), key="benchmark.questions_file")
        self.answers_path = self._file(str(answers_file), key="benchmark.answers_file")

    def describe(self) -> str:
        return f"questions with an answer in {self.answers_path.name}"

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.questions_path, self.answers_path)

    def _load(self) -> list[Question]:
        answers = self._read_json(self.answers_path)
        if not isinstance(answers, dict):
            raise self._malformed(self.answers_path, "top level", "one object {q_uid: option index 0-4}")
        data = self._read_json(self.questions_path)
        fields = {"q_uid", "question", *(f"option {i}" for i in range(NUM_OPTIONS))}
        if not isinstance(data, list):
            raise self._malformed(self.questions_path, "top level", "a list of objects with " + ", ".join(sorted(fields)))
        subset = Path(self.answers_path).stem.removesuffix("_answers")
        questions = []
        for number, record in enumerate(data):
            if not isinstance(record, dict) or not fields <= set(record):
                raise self._malformed(self.questions_path, f"record {number}", "objects with " + ", ".join(sorted(fields)))
            uid = str(record["q_uid"])
            if uid not in answers:
                continue
            answer = answers[uid]
            if isinstance(answer, str) and answer.strip().isdigit():
                answer = int(answer)
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < NUM_OPTIONS:
                raise self._malformed(self.answers_path, f"entry {uid!r} ({answer!r})", "option indices 0-4")
            questions.append(
                ask(
                    id=f"{self.name}/{uid}",
                    video=uid + self.video_ext,
                    question=record["question"],
                    options=tuple(str(record[f"option {i}"]) for i in range(NUM_OPTIONS)),
                    answer=LETTERS[answer],
                    kind="mc",
                    categories=(("subset", subset),),
                )
            )
        return questions
