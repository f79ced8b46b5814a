"""What a video benchmark is: a loader of questions about video files, read from the
benchmark's own annotation files in their native layout.

Annotations are parsed here into ``Question``s (``outro_sweep.benchmarks.base``) whose
``video`` names the clip under ``video_dir``; frames are not decoded here (prediction does
that). A question's ``categories`` carry whatever the benchmark annotates it with (question
type, video duration, domain, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

from outro_sweep.benchmarks.base import Benchmark, OPEN_METRICS, Question, YES_NO, ask  # noqa: F401 (re-exported)
from outro_sweep.config.schema import Doc, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.files.fingerprint import file_listing

_EXT = re.compile(r"\.[A-Za-z0-9]+")
_LETTER_PREFIX = re.compile(r"\(?([A-Z])[.):]\s*")


def strip_letter(option: str, letter: str) -> str:
    """``"A. text"`` -> ``"text"``; the prefix must name ``letter`` (else the text is returned as is)."""
    match = _LETTER_PREFIX.match(option)
    if match and match.group(1) == letter:
        return option[match.end():].strip()
    return option.strip()


def names(values: Iterable[str]) -> str:
    return ", ".join(values)


class VideoBenchmark(Benchmark):
    """Subclasses set ``layout`` (what data_dir holds, for error messages) and implement
    ``_load`` (all questions, in a deterministic order: the annotation files' own order)."""

    name = "video"
    layout = "the benchmark's annotation files"
    default_video_ext: str | None = ".mp4"  # None: annotations name files with their extension
    kinds: tuple[str, ...] = ("mc",)  # the kinds of question this benchmark can yield
    match_option_text = True  # models often answer with the option's text instead of its letter

    def __init__(
        self,
        data_dir: str,
        video_dir: Annotated[str, Doc("the folder holding the benchmark's video files")] | None = None,
        skip_missing: bool = False,
        video_ext: str | None = None,
        open_metric: Literal[OPEN_METRICS] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_arguments(VideoBenchmark, locals(), self.config_key)
        if open_metric is not None:
            self.open_metric = open_metric
        if data_dir is None or not Path(str(data_dir)).expanduser().is_dir():
            raise ConfigError(
                f"benchmark.data_dir={None if data_dir is None else str(data_dir)!r} is not a folder: "
                f"valid values are a folder holding {self.layout}"
            )
        if self.scoring == "logits" and set(self.kinds) != {"mc"}:
            raise ConfigError(
                f"benchmark.scoring=logits reads option-letter logits, and benchmark={self.name} has "
                f"{'/'.join(k for k in self.kinds if k != 'mc')} questions: valid values are scoring=generate"
            )
        if skip_missing and video_dir is None:
            raise ConfigError(
                "benchmark.skip_missing=true needs benchmark.video_dir to look for videos in: "
                "valid values are skip_missing=false, or a video_dir"
            )
        self.root = Path(str(data_dir)).expanduser()
        self.video_dir = None if video_dir is None else Path(str(video_dir)).expanduser()
        self.skip_missing = skip_missing
        self.video_ext = self._check_ext(video_ext)
        self.skipped_missing = 0  # questions dropped by skip_missing in the last load()

    def _check_ext(self, video_ext: str | None) -> str | None:
        if self.default_video_ext is None:
            if video_ext is not None:
                raise ConfigError(
                    f"benchmark.video_ext={video_ext!r} is not used by benchmark={self.name}: valid values are null "
                    "(its annotations name the video files with their extension)"
                )
            return None
        if video_ext is None:
            return self.default_video_ext
        ext = str(video_ext) if str(video_ext).startswith(".") else "." + str(video_ext)
        if not _EXT.fullmatch(ext):
            raise ConfigError(
                f"benchmark.video_ext={video_ext!r} is invalid: valid values are a file extension such as .mp4, .avi, .gif"
            )
        return ext

    # ---------------------------------------------------------------- helpers for subclasses

    def _file(self, relative: str | Path, key: str = "benchmark.data_dir") -> Path:
        """``data_dir/relative``, which must exist; else a ConfigError naming ``key``."""
        path = self.root / relative
        if not path.is_file():
            raise ConfigError(
                f"{key}: {path} is missing from benchmark.data_dir={str(self.root)!r}: valid values are a folder "
                f"holding {self.layout}"
            )
        return path

    def _read_json(self, path: Path):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"benchmark.data_dir={str(self.root)!r}: {path.name} is not valid JSON ({err}): "
                f"valid values are a folder holding {self.layout}"
            ) from None

    def _malformed(self, path: Path, where: str, expected: str) -> ConfigError:
        return ConfigError(
            f"benchmark.data_dir={str(self.root)!r}: {path.name} {where} is malformed: valid records are {expected}"
        )

    def _select(self, key: str, value, available: Sequence[str]) -> list[str]:
        """'all', one name, a comma list or a list -> the chosen names, in ``available`` order."""
        if isinstance(value, str):
            chosen = list(available) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
        else:  # a list, or an OmegaConf ListConfig
            chosen = [str(v) for v in value]
        unknown = [v for v in chosen if v not in available]
        if not chosen or unknown:
            what = f"has unknown value {unknown[0]!r}" if unknown else "selects nothing"
            raise ConfigError(f"benchmark.{key}={value!r} {what}: valid values are all, or a list of {names(available)}")
        return [v for v in available if v in chosen]

    # ---------------------------------------------------------------- public API

    def _relative(self, *paths: Path | None) -> dict[str, Path]:
        """``{name relative to data_dir: path}`` for ``data_files`` (None entries left out)."""
        found = {}
        for path in (Path(p) for p in paths if p is not None):
            inside = path.is_relative_to(self.root)  # a file named by an absolute path: its name
            found[path.relative_to(self.root).as_posix() if inside else path.name] = path
        return found

    def media_listing(self) -> dict[str, int]:
        """Every file under ``video_dir`` with ``video_ext`` (every file where the annotations
        name the extension), with its size; {} without a video_dir."""
        if self.video_dir is None:
            return {}
        return file_listing(self.video_dir, self.video_ext)

    def video_path(self, question: Question) -> Path:
        """Where the question's video is: ``video_dir / question.video`` (not checked here)."""
        if self.video_dir is None:
            raise ConfigError(
                f"benchmark.video_dir is not set for benchmark={self.name}: valid values are the folder the "
                f"video files are in (e.g. {question.video} lies under it)"
            )
        return self.video_dir / question.video

    def missing_videos(self, questions: Sequence[Question]) -> list[Question]:
        """The questions whose video file is absent (each file checked once)."""
        present: dict[str, bool] = {}
        missing = []
        for question in questions:
            if question.video not in present:
                present[question.video] = self.video_path(question).exists()
            if not present[question.video]:
                missing.append(question)
        return missing

    def _load(self) -> list[Question]:
        raise NotImplementedError

    def _filter_questions(self, questions: list[Question]) -> list[Question]:
        """With skip_missing, keep only the questions whose video exists."""
        if not self.skip_missing:
            return questions
        absent = {q.id for q in self.missing_videos(questions)}
        self.skipped_missing = len(absent)
        return [q for q in questions if q.id not in absent]

    def _empty_hint(self) -> str:
        hint = super()._empty_hint()
        if self.skip_missing:
            hint += " and benchmark.video_dir: skip_missing=true dropped questions whose video is absent"
        return hint


def join_by_question_id(
    questions: list[dict], answers: list[dict], qpath: Path, apath: Path, bench: VideoBenchmark
) -> list[tuple[dict, dict]]:
    """Pair Video-ChatGPT-style question and answer records by ``question_id`` (question order)."""
    by_id: dict[str, dict] = {}
    for number, record in enumerate(answers):
        if not isinstance(record, dict) or "question_id" not in record or "answer" not in record:
            raise bench._malformed(apath, f"record {number}", "objects with question_id and answer")
        by_id[str(record["question_id"])] = record
    pairs = []
    for number, record in enumerate(questions):
        if not isinstance(record, dict) or "question_id" not in record or "question" not in record:
            raise bench._malformed(qpath, f"record {number}", "objects with question_id and question")
        answer = by_id.get(str(record["question_id"]))
        if answer is None:
            raise bench._malformed(
                apath, f"(question_id {record['question_id']!r} of {qpath.name})",
                f"one answer per question of {qpath.name}",
            )
        pairs.append((record, answer))
    return pairs
