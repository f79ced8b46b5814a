"""NExT-QA (Xiao et al., CVPR 2021), multiple-choice and open-ended, in the native layout.

Multiple choice (github doc-doc/NExT-QA, ``dataset/nextqa/``): ``<split>.csv`` with the
header ``video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4``;
``answer`` is the index 0-4 of the correct option. Open-ended (github doc-doc/NExT-OE,
``dataset/nextqa/``): ``<split>.csv`` with ``video,frame_count,width,height,question,
answer,qid,type`` (an ``additional_ref_answer`` column is read when present), plus the
optional ``add_reference_answer_<split>.json`` ({video: {qid: answer}}) holding a
second reference for some questions.

Videos are VidOR clips named through ``map_vid_vidorID.json`` ({video id:
"folder/vidorID"}): the file is ``<video_dir>/<folder>/<vidorID>.mp4``.

Question types: CW/CH causal why/how; TN/TC/TP temporal next/current/previous; DL/DC/DO
descriptive location/count/other (DB descriptive binary in NExT-OE). The coarse group is
the first letter (Causal, Temporal, Descriptive).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from outro_sweep.benchmarks.files import open_text
from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.benchmarks.video_base import VideoBenchmark, Question, ask
from outro_sweep.config.schema import check_arguments

SPLITS = ("train", "val", "test")
MAP_FILE = "map_vid_vidorID.json"
GROUPS = {"C": "Causal", "T": "Temporal", "D": "Descriptive"}
MC_COLUMNS = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
OE_COLUMNS = ("video", "question", "answer", "qid", "type")
LETTERS = option_letters(5)


class _NExTQA(VideoBenchmark):
    columns: tuple[str, ...] = ()

    def __init__(self, data_dir: str, split: Literal[SPLITS] = "val", **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        check_arguments(_NExTQA, locals(), self.config_key)
        self.split = split
        self.csv_path = self._file(f"{self.split}.csv", key="benchmark.split")
        self.map_path = self._file(MAP_FILE)

    def describe(self) -> str:
        return f"split={self.split}"

    def _rows(self) -> list[dict[str, str]]:
        with open_text(self.csv_path, self.root, self.layout) as f:
            reader = csv.DictReader(f)
            missing = [c for c in self.columns if c not in (reader.fieldnames or [])]
            if missing:
                raise self._malformed(self.csv_path, "header", f"csv rows with columns {', '.join(self.columns)}")
            return list(reader)

    def _video_map(self) -> dict[str, str]:
        mapping = self._read_json(self.map_path)
        if not isinstance(mapping, dict):
            raise self._malformed(self.map_path, "top level", 'one object {video id: "folder/vidorID"}')
        return {str(k): str(v) for k, v in mapping.items()}

    def _common(self, number: int, row: dict[str, str], mapping: dict[str, str]) -> tuple[str, str, tuple]:
        """(id, video file, categories) of one csv row."""
        video, qid, qtype = row["video"].strip(), row["qid"].strip(), row["type"].strip()
        if video not in mapping:
            raise self._malformed(
                self.csv_path, f"row {number + 1} (video {video!r})", f"videos listed in {MAP_FILE}"
            )
        if not qtype or qtype[0] not in GROUPS:
            raise self._malformed(self.csv_path, f"row {number + 1} (type {qtype!r})", "types C*/T*/D* (CW, TN, DL, ...)")
        categories = (("type", qtype), ("group", GROUPS[qtype[0]]))
        return f"{self.name}/{self.split}/{qid}_{video}", mapping[video] + self.video_ext, categories


    def data_files(self) -> dict[str, Path]:
        return self._relative(self.csv_path, self.map_path)


class NExTQAMC(_NExTQA):
    name = "nextqa_mc"
    layout = f"<split>.csv (NExT-QA multiple choice: {', '.join(MC_COLUMNS)}, ...) and {MAP_FILE}"
    columns = MC_COLUMNS
    kinds = ("mc",)

    def _load(self) -> list[Question]:
        mapping = self._video_map()
        questions = []
        for number, row in enumerate(self._rows()):
            answer = row["answer"].strip()
            if answer not in {str(i) for i in range(5)}:
                raise self._malformed(self.csv_path, f"row {number + 1} (answer {answer!r})", "answer indices 0-4")
            ident, video, categories = self._common(number, row, mapping)
            questions.append(
                ask(
                    id=ident,
                    video=video,
                    question=row["question"],
                    options=tuple(row[f"a{i}"] for i in range(5)),
                    answer=LETTERS[int(answer)],
                    kind="mc",
                    categories=categories,
                )
            )
        return questions


class NExTQAOE(_NExTQA):
    name = "nextqa_oe"
    layout = (
        f"<split>.csv (NExT-OE open-ended: {', '.join(OE_COLUMNS)}, ...), {MAP_FILE} and optionally "
        "add_reference_answer_<split>.json"
    )
    columns = OE_COLUMNS
    kinds = ("open",)
    open_metric = "wups"  # NExT-OE's own metric: WUPS, exact match for DC/DB questions

    def data_files(self) -> dict[str, Path]:
        extra = self.root / f"add_reference_answer_{self.split}.json"
        return self._relative(self.csv_path, self.map_path, extra if extra.is_file() else None)

    def _extra_references(self) -> dict[str, dict[str, str]]:
        path = self.root / f"add_reference_answer_{self.split}.json"
        if not path.is_file():
            return {}
        data = self._read_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise self._malformed(path, "top level", "{video: {qid: answer}}")
        return {str(video): {str(q): str(a) for q, a in qids.items()} for video, qids in data.items()}

    def _load(self) -> list[Question]:
        mapping = self._video_map()
        extra = self._extra_references()
        questions = []
        for number, row in enumerate(self._rows()):
            ident, video, categories = self._common(number, row, mapping)
            answer = row["answer"].strip()
            if not answer:
                raise self._malformed(self.csv_path, f"row {number + 1}", "rows with a non-empty answer")
            references = []
            for more in ((row.get("additional_ref_answer") or "").strip(),
                         extra.get(row["video"].strip(), {}).get(row["qid"].strip(), "").strip()):
                if more and more != answer and more not in references:
                    references.append(more)
            questions.append(
                ask(
                    id=ident,
                    video=video,
                    question=row["question"],
                    options=(),
                    answer=answer,
                    kind="open",
                    categories=categories,
                    extra_answers=tuple(references),
                )
            )
        return questions

