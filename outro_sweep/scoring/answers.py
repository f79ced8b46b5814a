"""Score one prediction record by its question's kind, the way the benchmarks' papers do.

Works on the raw record alone (``outro_sweep.predict.module.record``: kind, options,
references, categories, output, logits, error), so a finished cell can be re-scored without
its model or its benchmark files:

* ``mc``: with ``scoring=cloze`` the option with the highest summed log-likelihood (lm-eval's
  acc; ``correct_norm`` is acc_norm: per character of the option's text); with
  ``scoring=logits`` the letter with the highest recorded logit; otherwise the
  option letter parsed from the answer (``letters.parse_choice``) and, for benchmarks that
  allow it (``match_option_text``: the video benchmarks), where the answer names no letter
  but quotes exactly one option's text, that option (models often answer "the man opens the
  door" instead of "B").
* ``yesno``: ``open_answers.parse_yes_no``.
* ``open``: normalised exact match against every reference (``open_metric="exact_match"``,
  Video-ChatGPT-style benchmarks before any judge), NExT-OE's WUPS (``open_metric="wups"``),
  the first number in the answer equal to the reference (``open_metric="number"``: passkey), or
  an lm-eval task's own filters and exact_match (``open_metric="lm_eval"``,
  ``outro_sweep.scoring.lm_eval_answers``: it rebuilds the task, so it reads the task's data).

A record whose clip could not be decoded (``error`` set) is wrong: no prediction, score 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.scoring.letters import choose_letter, parse_choice
from outro_sweep.scoring.open_answers import exact_match, first_number, nextoe_score, normalize_answer, parse_yes_no, \
    wordnet_similarity
from outro_sweep.scoring.lm_eval_answers import LmEvalAnswers

SCORED_FIELDS = ("prediction", "valid", "correct", "score")


@dataclass(frozen=True)
class Score:
    prediction: str | None  # the letter / yes-no / answer text read from the output; None: unreadable
    score: float  # 1.0 or 0.0, or WUPS in [0, 1]
    correct: bool  # fully right: score == 1.0 (WUPS is also reported as its mean, in metrics)

    def fields(self) -> dict:
        return {"prediction": self.prediction, "valid": self.prediction is not None, "correct": self.correct,
                "score": self.score}


def option_by_text(text: str, options: Sequence[str]) -> str | None:
    """The letter of the one option whose normalised text the answer contains, else None."""
    answer = normalize_answer(text)
    if not answer:
        return None
    hits = [letter for letter, option in zip(option_letters(len(options)), options)
            if (norm := normalize_answer(option)) and (norm == answer or f" {norm} " in f" {answer} ")]
    return hits[0] if len(hits) == 1 else None


def wups_scorer():
    """NExT-OE's score for one answer (WUPS@0, exact match for DC/DB); a ConfigError when
    WordNet is not available (before any model loads)."""
    similarity = wordnet_similarity()

    def score(prediction: str, references, qtype: str) -> float:
        return nextoe_score(prediction, references, qtype, alpha=0.0, similarity=similarity)

    return score


class Scorer:
    """How a cell's records are scored: settings of its benchmark, not of its model."""

    def __init__(self, open_metric: str = "exact_match", match_option_text: bool = False) -> None:
        self.open_metric = open_metric
        self.match_option_text = match_option_text
        self.wups = wups_scorer() if open_metric == "wups" else None
        self.lm_eval = None  # open_metric="lm_eval": the task's scorer (LmEvalAnswers), set by for_benchmark

    @classmethod
    def for_benchmark(cls, node: Mapping) -> "Scorer":
        """From a cell's ``benchmark`` config node (the composed one or config.yaml's): the
        class's own defaults, ``open_metric`` as the config sets it."""
        from hydra.utils import get_class

        benchmark = get_class(node["_target_"])
        scorer = cls(node.get("open_metric") or benchmark.open_metric, benchmark.match_option_text)
        if scorer.open_metric == "lm_eval":
            scorer.lm_eval = LmEvalAnswers(node)  # builds its task at the first open record
        return scorer

    def score(self, record: Mapping) -> Score:
        if record.get("error") is not None:
            return Score(None, 0.0, False)
        kind, output, references = record["kind"], record["output"], record["references"]
        target = references[0]
        if kind == "mc":
            if record.get("option_ll") is not None:  # scoring=cloze: acc's choice
                chosen = best_option(record["option_ll"])
            elif record.get("logits") is not None:
                chosen = choose_letter(record["logits"])
            else:
                options = record["options"]
                chosen = parse_choice(output, option_letters(len(options)))
                if chosen is None and self.match_option_text:
                    chosen = option_by_text(output, options)
            return Score(chosen, float(chosen == target), chosen == target)
        if kind == "yesno":
            said = parse_yes_no(output)
            return Score(said, float(said == target), said == target)
        if self.open_metric == "lm_eval":
            said, value = self.lm_eval.score(record)
            return Score(said, value, value >= 1.0)
        text = output.strip()
        if self.open_metric == "wups":
            value = float(self.wups(text, references, record["categories"].get("type", "")))
            return Score(text or None, value, value >= 1.0)
        if self.open_metric == "number":
            said = first_number(text)
            return Score(said, float(said in references), said in references)
        hit = exact_match(text, references)
        return Score(text or None, float(hit), hit)

    def fields(self, record: Mapping) -> dict:
        """``prediction``, ``valid``, ``correct``, ``score`` for one raw record; a cloze record
        also gets ``prediction_norm`` and ``correct_norm`` (acc_norm's choice)."""
        fields = self.score(record).fields()
        if record.get("option_ll") is not None:
            chosen = None if record.get("error") is not None else best_option(
                [ll / max(chars, 1) for ll, chars in zip(record["option_ll"], record["option_chars"])])
            fields.update(prediction_norm=chosen, correct_norm=chosen == record["references"][0])
        return fields


def best_option(values: Sequence[float]) -> str:
    """The letter of the highest value (ties: the first, as numpy's argmax in lm-eval)."""
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    return option_letters(len(values))[best]
