"""What a benchmark is: a loader of questions, each one ``Question`` whatever its modality.

A ``Question`` is plain data (in the spirit of lm-eval's ``Instance``): what kind it is, the
user-message text, its options and references, its categories and, for video benchmarks, the
clip it is about. Text and video benchmarks differ in the data they fill in, not in type;
the model side differs only through its loader (see ``outro_sweep.models``).

Kinds of question:

* ``mc``: multiple choice; ``options`` hold 2..26 option texts in letter order (A..Z) and
  ``references[0]`` is the correct letter;
* ``yesno``: no options; ``references[0]`` is "yes" or "no";
* ``open``: open-ended; ``references`` are every accepted answer text (the first is the
  benchmark's own answer, then any extra answers it accepts, e.g. NExT-OE's).

``categories`` carry whatever the benchmark annotates a question with (subject, question
type, video duration, ...) as ``(name, value)`` pairs, so results break down by any of them.

Every benchmark shares the selection keys of ``Benchmark``: ``limit`` (the first N questions in
file order) or ``sample`` (a seeded stratified subsample, ``outro_sweep.benchmarks.sampling``),
and ``circular`` (MMBench's CircularEval: every mc question asked once per rotation of its
options, ``rotated``; a question counts as right only if every rotation is,
``outro_sweep.scoring.circular``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from outro_sweep.benchmarks.prompting import (
    MAX_OPTIONS,
    format_cloze_prompt,
    format_mc_prompt,
    format_short_answer_prompt,
    option_letters,
)
from outro_sweep.benchmarks.sampling import stratified_sample
from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.errors import ConfigError

# generate: a greedy answer, its letter parsed; logits: the option letter with the highest
# next-token logit; cloze: each option's text scored by its log-likelihood as the continuation of
# the prompt (lm-eval's multiple_choice), for models that cannot map an answer to its letter.
SCORING_METHODS = ("generate", "logits", "cloze")
KINDS = ("mc", "yesno", "open")
OPEN_METRICS = ("exact_match", "wups")  # how open answers are scored (outro_sweep.scoring.answers)
YES_NO = ("yes", "no")


@dataclass(frozen=True)
class Question:
    """One question, as it crosses from a benchmark into prediction and scoring."""

    id: str  # stable within the benchmark, e.g. "mmlu/anatomy/test/12", "nextqa_mc/val/6_4010069381"
    kind: str  # "mc" | "yesno" | "open"
    prompt: str  # the user-message text (few-shot examples, options and instruction included)
    references: tuple[str, ...]  # correct letter (mc), "yes"/"no" (yesno), accepted answers (open)
    options: tuple[str, ...] = ()  # option texts in letter order A, B, ... (mc only)
    categories: tuple[tuple[str, str], ...] = ()  # (name, value) pairs, e.g. (("subject", "anatomy"),)
    question: str = ""  # the question as annotated, without options or instruction (what a judge reads)
    video: str | None = None  # the clip, a path under benchmark.video_dir; None: a text-only question
    segment: tuple[float, float] | None = None  # (start, end) seconds, where the benchmark bounds the clip
    # How ``ask`` built the prompt, so that ``rotated`` rebuilds it the same way: the text before
    # the question (few-shot examples) and whether question and options were stripped.
    prefix: str = ""
    strip: bool = True
    # CircularEval (benchmark.circular=true): the options rotated by this many positions (0 = the
    # original order) and the benchmark's own id of the question; None/"" outside circular cells.
    rotation: int | None = None
    question_id: str = ""
    # Cloze scoring (benchmark.scoring=cloze): per option, in letter order, the exact text that
    # follows the rendered prompt and whose log-likelihood scores the option (the task's target
    # delimiter, then the option's text); () for every other scoring.
    continuations: tuple[str, ...] = ()
    # False: the prompt is the exact text the model reads, never wrapped in a chat template
    # (lm-eval's default for its tasks); True: the model's ``use_chat_template`` decides.
    template: bool = True
    # Generation stops at the first of these strings, which is cut from the answer (lm-eval's
    # generate_until ``until``); () stops only at max_new_tokens or the end-of-sequence token.
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Question {self.id}: kind={self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.references:
            raise ValueError(f"Question {self.id}: needs at least one reference answer")
        if self.kind == "mc":
            if not 2 <= len(self.options) <= MAX_OPTIONS or self.answer not in self.letters:
                raise ValueError(f"Question {self.id}: mc needs 2..{MAX_OPTIONS} options (letters A..Z) and an "
                                 f"answer among its letters, got {len(self.options)} options and {self.answer!r}")
        elif self.options:
            raise ValueError(f"Question {self.id}: kind={self.kind} takes no options")
        if self.continuations and len(self.continuations) != len(self.options):
            raise ValueError(f"Question {self.id}: {len(self.continuations)} cloze continuations for "
                             f"{len(self.options)} options")
        if self.kind == "yesno" and self.answer not in YES_NO:
            raise ValueError(f"Question {self.id}: yesno answer {self.answer!r} is not yes/no")

    @property
    def answer(self) -> str:
        return self.references[0]

    @property
    def extra_answers(self) -> tuple[str, ...]:
        return self.references[1:]

    @property
    def letters(self) -> tuple[str, ...]:
        return option_letters(len(self.options))

    @property
    def cloze(self) -> bool:
        """Whether its options are scored by their continuations' log-likelihood."""
        return bool(self.continuations)

    @property
    def category_dict(self) -> dict[str, str]:
        return dict(self.categories)

    @property
    def category(self) -> str:
        """The first category's value: the one-string breakdown (``per_category``)."""
        return self.categories[0][1] if self.categories else ""


def ask(id: str, question: str, options: tuple[str, ...], answer: str, kind: str = "mc",
        categories: tuple[tuple[str, str], ...] = (), extra_answers: tuple[str, ...] = (),
        video: str | None = None, segment: tuple[float, float] | None = None, short_answer: bool = True,
        prefix: str = "", strip: bool = True, cloze: bool = False) -> Question:
    """A ``Question`` whose prompt is the shared format: the lettered options and the MC
    instruction (mc), or the short-answer instruction (open, yes/no; ``short_answer=False``
    for a task whose text already asks for a sentence). ``prefix`` goes before it (few-shot
    examples). ``strip``: drop stray outer whitespace from question and options (annotations
    carry it: ActivityNet-QA questions ending in " ", NExT-QA options ending in " ").
    ``cloze`` (mc only): the prompt is the question alone (``format_cloze_prompt``) and each
    option is its continuation after a space, as lm-eval's multiple_choice tasks do."""
    text = question.strip() if strip else question
    continuations: tuple[str, ...] = ()
    if kind == "mc" and cloze:
        prompt = format_cloze_prompt(text)
        continuations = tuple(" " + (o.strip() if strip else o) for o in options)
    elif kind == "mc":
        prompt = format_mc_prompt(text, [o.strip() if strip else o for o in options])
    elif short_answer:
        prompt = format_short_answer_prompt(text)
    else:
        prompt = text
    return Question(id=id, kind=kind, prompt=prefix + prompt, references=(answer, *extra_answers),
                    options=tuple(options), categories=tuple(categories), question=question, video=video,
                    segment=segment, prefix=prefix, strip=strip, continuations=continuations)


def rotated(question: Question, rotation: int) -> Question:
    """``question`` asked with its options rotated left by ``rotation`` positions (CircularEval).

    Option i of the result is option (i + rotation) mod k of the original, so the answer letter
    follows its option text: original index a -> (a - rotation) mod k. The prompt is rebuilt by
    ``ask`` with the question's own prefix (few-shot examples) and strip rule: the shared MC
    format, identical to the original's at rotation 0. Rotation r > 0 gets the id
    ``<id>#rot<r>`` (unique per record); ``question_id`` keeps the benchmark's id.
    """
    k = len(question.options)
    if question.kind != "mc" or not 0 <= rotation < k:
        raise ValueError(f"Question {question.id}: rotation {rotation} needs an mc question with more than "
                         f"{rotation} options")
    options = question.options[rotation:] + question.options[:rotation]
    answer = option_letters(k)[(question.letters.index(question.answer) - rotation) % k]
    if question.cloze:  # the prompt names no option: only the options and their continuations turn
        continuations = question.continuations[rotation:] + question.continuations[:rotation]
        return replace(question, id=question.id if rotation == 0 else f"{question.id}#rot{rotation}",
                       options=options, continuations=continuations, references=(answer,), rotation=rotation,
                       question_id=question.id)
    asked = ask(id=question.id if rotation == 0 else f"{question.id}#rot{rotation}", question=question.question,
                options=options, answer=answer, categories=question.categories, video=question.video,
                segment=question.segment, prefix=question.prefix, strip=question.strip)
    return replace(asked, rotation=rotation, question_id=question.id)


def expand_rotations(questions: list[Question]) -> list[Question]:
    """Every mc question once per rotation 0..k-1, its rotations together and in order; other
    kinds once, as rotation 0. Deterministic, so a resumed cell's record indices mean the same
    prompts (``predict.run`` keys records by their index in this list)."""
    expanded = []
    for question in questions:
        if question.kind == "mc":
            expanded += [rotated(question, r) for r in range(len(question.options))]
        else:
            expanded.append(replace(question, rotation=0, question_id=question.id))
    return expanded


class Benchmark:
    """Subclasses implement ``_load`` (all questions, in a deterministic order)."""

    name = "base"
    config_key: ClassVar[str] = "benchmark"  # the config group of its keys (prefixes them in messages)
    open_metric = "exact_match"  # how open answers are scored: exact_match | wups
    # mc: also accept an answer that quotes exactly one option's text (video QA models often do)
    match_option_text = False
    skipped_missing = 0  # questions dropped because their clip is absent (video benchmarks)

    def __init__(
        self,
        limit: Annotated[int, Range(ge=0)] | None = None,
        scoring: Literal[SCORING_METHODS] = "generate",
        max_new_tokens: Annotated[int, Range(ge=1)] = 8,
        circular: bool = False,
        sample: Annotated[int, Range(ge=1)] | None = None,
        sample_seed: int = 0,
    ) -> None:
        check_arguments(Benchmark, locals(), self.config_key)
        if limit is not None and sample is not None:
            raise ConfigError(
                f"benchmark.limit={limit} and benchmark.sample={sample} both select questions: valid values "
                "set at most one of them (limit: the first N in file order; sample: a seeded stratified subsample)"
            )
        self.limit = limit
        self.scoring = scoring
        self.max_new_tokens = max_new_tokens
        self.circular = circular
        self.sample = sample
        self.sample_seed = sample_seed

    def _load(self) -> list[Question]:
        raise NotImplementedError

    def data_files(self) -> dict[str, Path]:
        """The annotation files ``_load`` reads, by a name relative to the benchmark's data
        folder: their content is fingerprinted into the cell identity, so an answer key edited
        in place makes a new cell. {} for a benchmark that reads no file (builtin_mc)."""
        return {}

    def media_listing(self) -> dict[str, int]:
        """``{relative name: size in bytes}`` of the media files questions can name (video
        benchmarks: ``video_dir``), part of the cell identity so that adding, removing or
        replacing a clip makes a new cell. {} for a text benchmark."""
        return {}

    def check_model(self, loader) -> None:
        """Refuse, before it loads, a model these questions do not fit (a ConfigError); the
        model's config may be read, never its weights. Default: any model fits."""

    def describe(self) -> str:
        """What was selected, for the no-questions error (e.g. 'subjects=[...], split=test')."""
        return ""

    def _filter_questions(self, questions: list) -> list:
        """Hook applied before ``limit`` (video benchmarks drop questions with absent clips)."""
        return questions

    def _empty_hint(self) -> str:
        """What to check when nothing is left, appended to the no-questions error."""
        return "check benchmark.limit and the filters"

    def _as_cloze(self, questions: list[Question]) -> list[Question]:
        """``scoring=cloze``: every question as a cloze question (``ask(cloze=True)``), or a
        ConfigError where some question has no options to score."""
        kinds = sorted({q.kind for q in questions if q.kind != "mc"})
        if kinds:
            raise ConfigError(
                f"benchmark.scoring=cloze scores the options of multiple-choice questions and benchmark={self.name} "
                f"has {'/'.join(kinds)} questions without options: valid values are benchmark.scoring=generate"
            )
        return [q if q.cloze else replace(
            ask(id=q.id, question=q.question, options=q.options, answer=q.answer, categories=q.categories,
                video=q.video, segment=q.segment, prefix=q.prefix, strip=q.strip, cloze=True),
            template=q.template, stop=q.stop) for q in questions]

    def load(self) -> list[Question]:
        """The cell's questions: filtered, then ``limit`` or ``sample`` (they count questions),
        then, with ``circular``, every mc question once per rotation (``expand_rotations``)."""
        questions = self._filter_questions(self._load())
        if self.scoring == "cloze":
            questions = self._as_cloze(questions)
        if self.limit is not None:
            questions = questions[: self.limit]
        if not questions:
            detail = self.describe()
            raise ConfigError(
                f"benchmark={self.name} has no questions{' (' + detail + ')' if detail else ''}: "
                f"valid values select at least one question ({self._empty_hint()})"
            )
        if self.sample is not None:
            if self.sample > len(questions):
                raise ConfigError(
                    f"benchmark.sample={self.sample} exceeds the {len(questions)} questions of benchmark={self.name}: "
                    f"valid values are 1..{len(questions)}, or null for all of them"
                )
            questions = stratified_sample(questions, self.sample, self.sample_seed)
        if self.circular:
            if not any(q.kind == "mc" for q in questions):
                raise ConfigError(
                    f"benchmark.circular=true rotates multiple-choice options and benchmark={self.name} has no "
                    "multiple-choice question here: valid values are circular=false"
                )
            questions = expand_rotations(questions)
        return questions
