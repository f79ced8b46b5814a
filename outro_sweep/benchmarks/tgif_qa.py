"""TGIF-QA (Jang et al., CVPR 2017), four tasks on animated GIFs, in the release's layout
(github YunseokJANG/tgif-qa, ``dataset/``).

``<Split>_<task>_question.csv`` is TAB-separated despite its name (CRLF line ends; a
field with quotes is csv-quoted), with a header line:

* action, transition: ``gif_name question a1 a2 a3 a4 a5 answer vid_id key``; ``answer``
  is the index 0-4 of the correct option -> ``mc``;
* frameqa: ``gif_name question answer type vid_id key description``; one-word answers,
  ``type`` 0 object, 1 number, 2 color, 3 location -> ``open``;
* count: ``gif_name question answer vid_id key``; answers are counts -> ``open``.

``vid_id`` (ACTION4, FRAMEQA1159, ...) is unique within a file and makes the question
id. The video is ``<gif_name>.gif``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from outro_sweep.benchmarks.files import open_text
from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import VideoBenchmark, Question, ask
from outro_sweep.config.schema import check_arguments
from outro_sweep.errors import ConfigError

TASKS = ("action", "transition", "frameqa", "count")
SPLITS = ("train", "test")
MC_TASKS = ("action", "transition")
FRAMEQA_TYPES = {"0": "object", "1": "number", "2": "color", "3": "location"}
COLUMNS = {
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id"),
    "count": ("gif_name", "question", "answer", "vid_id"),
}
LETTERS = option_letters(5)


class TGIFQA(VideoBenchmark):
    name = "tgif_qa"
    layout = "<Split>_<task>_question.csv files (TGIF-QA, tab-separated: Test_action_question.csv, ...)"
    default_video_ext = ".gif"
    kinds = ("mc",)  # per task: set in __init__ (the base class checks scoring against this)

    def __init__(self, data_dir: str, task: Literal[TASKS] = "action", split: Literal[SPLITS] = "test",
                 **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        check_arguments(TGIFQA, locals(), self.config_key)
        self.task, self.split = task, split
        self.kinds = ("mc",) if self.task in MC_TASKS else ("open",)
        if self.scoring == "logits" and self.task not in MC_TASKS:
            raise ConfigError(
                f"benchmark.scoring=logits reads option-letter logits, and benchmark.task={self.task} is open-ended: "
                f"valid values are scoring=generate, or task={' or '.join(MC_TASKS)}"
            )
        self.path = self._file(f"{self.split.capitalize()}_{self.task}_question.csv", key="benchmark.task")

    def describe(self) -> str:
        return f"task={self.task}, split={self.split}"

    def data_files(self) -> dict[str, Path]:
        return self._relative(self.path)

    def _load(self) -> list[Question]:
        with open_text(self.path, self.root, self.layout) as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = COLUMNS[self.task]
            if not set(columns) <= set(reader.fieldnames or []):
                raise self._malformed(self.path, "header", "tab-separated rows with columns " + ", ".join(columns))
            rows = list(reader)
        questions = []
        for number, row in enumerate(rows):
            where = f"row {number + 1} ({row.get('vid_id')})"
            categories: tuple[tuple[str, str], ...] = (("task", self.task),)
            answer = (row["answer"] or "").strip()
            if self.task in MC_TASKS:
                if answer not in {str(i) for i in range(5)}:
                    raise self._malformed(self.path, where, "answer indices 0-4")
                options, answer, kind = tuple(row[f"a{i}"] for i in range(1, 6)), LETTERS[int(answer)], "mc"
            else:
                if not answer:
                    raise self._malformed(self.path, where, "rows with an answer")
                options, kind = (), "open"
                if self.task == "frameqa":
                    qtype = (row["type"] or "").strip()
                    if qtype not in FRAMEQA_TYPES:
                        raise self._malformed(self.path, where, "frameqa types 0-3 (object, number, color, location)")
                    categories += (("type", FRAMEQA_TYPES[qtype]),)
            questions.append(
                ask(
                    id=f"{self.name}/{self.task}/{self.split}/{row['vid_id'].strip()}",
                    video=row["gif_name"].strip() + self.video_ext,
                    question=row["question"],
                    options=options,
                    answer=answer,
                    kind=kind,
                    categories=categories,
                )
            )
        return questions
