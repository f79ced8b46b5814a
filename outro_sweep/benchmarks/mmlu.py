"""MMLU (Hendrycks et al.), read from the user's copy of the original release's csv files.

The data is not ours to ship, so ``data_dir`` points at a folder in the native layout:
``data_dir/{dev,val,test}/<subject>_<split>.csv``, no header, columns question, A, B, C,
D, answer letter. Fields can hold commas, quotes and newlines, hence the csv module.

Few-shot examples are the first k rows of the subject's ``dev`` file (dev holds exactly 5
per subject, the original protocol), in the original format: a header naming the subject,
then each example as question, options and ``Answer: X``. The question asked ends with
the shared instruction (``format_mc_prompt``), so zero-shot MMLU and the built-in
benchmark prompt identically; the header is only added when there are examples for it to
introduce.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from outro_sweep.benchmarks.base import Benchmark, Question, ask
from outro_sweep.benchmarks.files import open_text
from outro_sweep.benchmarks.prompting import format_options, option_letters
from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.errors import ConfigError

SPLITS = ("dev", "val", "test")
MAX_FEWSHOT = 5  # dev has 5 rows per subject
LETTERS = option_letters(4)


def fewshot_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _format_example(row: Sequence[str]) -> str:
    question, *options, answer = row
    return f"{question}\n{format_options(options)}\nAnswer: {answer}\n\n"


class MMLU(Benchmark):
    name = "mmlu"

    def __init__(
        self,
        data_dir: str,
        subjects: list[str] | str = "all",
        split: Literal[SPLITS] = "test",
        num_fewshot: Annotated[int, Range(ge=0, le=MAX_FEWSHOT)] = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_arguments(MMLU, locals(), self.config_key)
        # Every check here reads only folder listings, so bad input fails before the model loads.
        root = Path(str(data_dir)).expanduser()
        if not all((root / s).is_dir() for s in SPLITS):
            raise ConfigError(
                f"benchmark.data_dir={str(data_dir)!r} is not an MMLU folder: valid values are a folder "
                f"holding {'/, '.join(SPLITS)}/ with <subject>_<split>.csv files (the original release's data/)"
            )
        if self.scoring == "cloze" and num_fewshot > 0:  # its examples are written with lettered options
            raise ConfigError(
                f"benchmark.num_fewshot={num_fewshot} shows lettered examples and benchmark.scoring=cloze scores "
                "option texts: valid values are num_fewshot=0 with cloze, or benchmark=lm_eval benchmark.task=mmlu "
                "(lm-eval's own few-shot cloze prompts)"
            )
        if split == "dev" and num_fewshot > 0:
            raise ConfigError(
                f"benchmark.num_fewshot={num_fewshot} with benchmark.split=dev would show questions their own "
                "answers: valid values are num_fewshot=0 for split=dev, or split=val or test"
            )
        available = sorted(p.name[: -len(f"_{split}.csv")] for p in (root / split).glob(f"*_{split}.csv"))
        self.root = root
        self.split = split
        self.num_fewshot = num_fewshot
        self.subjects = self._select(subjects, available)
        missing = [s for s in self.subjects if num_fewshot and not (root / "dev" / f"{s}_dev.csv").is_file()]
        if missing:
            raise ConfigError(
                f"benchmark.num_fewshot={num_fewshot} needs dev/{missing[0]}_dev.csv, absent from "
                f"benchmark.data_dir={str(data_dir)!r}: valid values are num_fewshot=0, or a folder with dev/ files"
            )

    def _select(self, subjects: Sequence[str] | str, available: list[str]) -> list[str]:
        """Sorted, de-duplicated subjects; a string may be 'all', one subject or a comma list."""
        if isinstance(subjects, str):
            if subjects == "all":
                return available
            subjects = [s.strip() for s in subjects.split(",") if s.strip()]
        else:  # a list, or an OmegaConf ListConfig
            subjects = list(subjects)
        examples = f"{', '.join(available[:3])}, ... ({len(available)} subjects in {self.split}/)"
        if not subjects:
            raise ConfigError(
                f"benchmark.subjects=[] selects nothing: valid values are all, or subjects such as {examples}"
            )
        unknown = [s for s in subjects if s not in available]
        if unknown:
            raise ConfigError(
                f"benchmark.subjects={subjects!r} has unknown subject {unknown[0]!r}: "
                f"valid values are all, or subjects such as {examples}"
            )
        return sorted(set(subjects))

    def describe(self) -> str:
        shown = self.subjects if len(self.subjects) <= 4 else [*self.subjects[:3], f"... {len(self.subjects)} in all"]
        return f"subjects=[{', '.join(shown)}], split={self.split}"

    def data_files(self) -> dict[str, Path]:
        splits = [self.split, *(["dev"] if self.num_fewshot else [])]
        names = [f"{split}/{subject}_{split}.csv" for subject in self.subjects for split in splits]
        return {name: self.root / name for name in names}

    def _read(self, subject: str, split: str) -> list[list[str]]:
        path = self.root / split / f"{subject}_{split}.csv"
        with open_text(path, self.root, "csv rows of question, A, B, C, D, answer letter") as f:
            rows = list(csv.reader(f))
        for number, row in enumerate(rows):
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise ConfigError(
                    f"benchmark.data_dir={str(self.root)!r}: {path.name} row {number} is malformed: "
                    "valid rows are question, A, B, C, D, answer letter (A-D)"
                )
            row[5] = row[5].strip()
        return rows

    def _load(self) -> list[Question]:
        questions: list[Question] = []
        for subject in self.subjects:
            prefix = ""
            if self.num_fewshot:
                examples = self._read(subject, "dev")[: self.num_fewshot]
                if len(examples) < self.num_fewshot:
                    raise ConfigError(
                        f"benchmark.num_fewshot={self.num_fewshot} but dev/{subject}_dev.csv has {len(examples)} rows: "
                        f"valid values are num_fewshot=0..{len(examples)} for this data"
                    )
                prefix = fewshot_header(subject) + "".join(_format_example(row) for row in examples)
            for number, (question, *options, answer) in enumerate(self._read(subject, self.split)):
                questions.append(
                    ask(
                        id=f"{self.name}/{subject}/{self.split}/{number}",
                        question=question,
                        options=tuple(options),
                        answer=answer,
                        categories=(("subject", subject),),
                        prefix=prefix,
                        strip=False,
                    )
                )
        return questions
