"""Score one video-QA answer by its question's kind, the way the benchmark's papers do.

* ``mc``: the option letter parsed from the answer (``scoring.parse_choice``); where the
  answer names no letter but quotes exactly one option's text, that option (models often
  answer "the man opens the door" instead of "B").
* ``yesno``: ``scoring_open.parse_yes_no``.
* ``open``: normalised exact match against every reference (``metric="exact_match"``,
  Video-ChatGPT-style benchmarks before any judge), or NExT-OE's WUPS (``metric="wups"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from outro_sweep.benchmarks.video_base import VideoQuestion
from outro_sweep.scoring.letters import parse_choice
from outro_sweep.scoring.open_answers import exact_match, normalize_answer, parse_yes_no


@dataclass(frozen=True)
class Score:
    prediction: str | None  # the letter / yes-no / answer text read from the output; None: unreadable
    score: float  # 1.0 or 0.0, or WUPS in [0, 1]
    correct: bool  # fully right: score == 1.0 (WUPS is also reported as its mean, in metrics)


def option_by_text(text: str, question: VideoQuestion) -> str | None:
    """The letter of the one option whose normalised text the answer contains, else None."""
    answer = normalize_answer(text)
    if not answer:
        return None
    hits = [letter for letter, option in zip(question.letters, question.options)
            if (norm := normalize_answer(option)) and (norm == answer or f" {norm} " in f" {answer} ")]
    return hits[0] if len(hits) == 1 else None


def score_answer(question: VideoQuestion, output: str, open_metric: str = "exact_match", wups=None) -> Score:
    """``wups``: ``callable(prediction, references, qtype) -> float`` for ``open_metric="wups"``."""
    if question.kind == "mc":
        chosen = parse_choice(output, question.letters) or option_by_text(output, question)
        return Score(chosen, float(chosen == question.answer), chosen == question.answer)
    if question.kind == "yesno":
        said = parse_yes_no(output)
        return Score(said, float(said == question.answer), said == question.answer)
    references = (question.answer, *question.extra_answers)
    text = output.strip()
    if open_metric == "wups":
        value = float(wups(text, references, question.category_dict.get("type", "")))
        return Score(text or None, value, value >= 1.0)
    hit = exact_match(text, references)
    return Score(text or None, float(hit), hit)
