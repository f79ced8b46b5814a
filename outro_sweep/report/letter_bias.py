"""How much of a paired difference is a shift in answer-letter bias.

An intervention that pushes a model further toward one letter L gains every question whose
target is L that the baseline got wrong, without understanding any of them. Over the ``n``
paired questions, with b / c the questions only the baseline / only the intervention got
right (Δ = (c − b) / n):

* L: the letter whose share of the answers (predicted L / n) rose most from the baseline to
  the intervention; no decomposition when no letter's share rose;
* Δ_L = (c_L − b_L) / n, the part of Δ from the questions whose target is L (b_L, c_L: b and
  c counted over those questions only); the rest, Δ − Δ_L, from every other question.

Δ is "mostly a shift toward L" when Δ ≠ 0, Δ_L has Δ's sign and |Δ_L| >= MOSTLY · |Δ|.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MOSTLY = 0.5  # |Δ_L| at least this fraction of |Δ| (same sign): Δ is mostly the letter shift


@dataclass(frozen=True)
class LetterShift:
    letter: str  # L
    n: int  # paired questions
    baseline_share: float  # the baseline's answers L / n
    treatment_share: float  # the intervention's answers L / n
    b: int  # paired questions only the baseline got right
    c: int  # only the intervention
    b_letter: int  # b over the questions whose target is L
    c_letter: int  # c over those questions

    @property
    def diff(self) -> float:
        return (self.c - self.b) / self.n

    @property
    def diff_letter(self) -> float:
        """Δ_L: the part of Δ from the questions whose target is L."""
        return (self.c_letter - self.b_letter) / self.n

    @property
    def diff_rest(self) -> float:
        return self.diff - self.diff_letter

    @property
    def mostly_shift(self) -> bool:
        diff, part = self.diff, self.diff_letter
        return diff != 0 and part * diff > 0 and abs(part) >= MOSTLY * abs(diff)

    def note(self) -> str:
        """The sentence a row and a verdict line carry when Δ is mostly the shift."""
        return (f"Δ mostly a shift toward {self.letter}: {100 * self.diff_letter:+.1f} of {100 * self.diff:+.1f} pp "
                f"from questions whose target is {self.letter} (answers {self.letter} "
                f"{100 * self.baseline_share:.0f}% -> {100 * self.treatment_share:.0f}%)")


def _by_question(records: Sequence[dict]) -> dict[str, dict]:
    """Records by their question (``question_id``, else ``id``); the first of a repeated one."""
    keyed: dict[str, dict] = {}
    for record in records:
        keyed.setdefault(str(record.get("question_id", record["id"])), record)
    return keyed


def letter_shift(baseline: Sequence[dict], treatment: Sequence[dict], paired_ids: Sequence[str]) -> LetterShift | None:
    """The decomposition of the paired difference over the questions ``paired_ids`` (as the
    report paired them); None without paired questions, without an mc question among them,
    or when no letter's share rose."""
    base, treat = _by_question(baseline), _by_question(treatment)
    pairs = [(base[i], treat[i]) for i in map(str, paired_ids) if i in base and i in treat]
    if not pairs or not any(a["kind"] == "mc" for a, _ in pairs):
        return None
    n = len(pairs)
    base_letters = Counter(a["prediction"] for a, _ in pairs if a["kind"] == "mc" and a["valid"])
    treat_letters = Counter(t["prediction"] for _, t in pairs if t["kind"] == "mc" and t["valid"])
    rises = {letter: treat_letters[letter] - base_letters[letter]
             for letter in sorted(set(base_letters) | set(treat_letters))}
    if not rises or max(rises.values()) <= 0:
        return None
    letter = max(rises, key=rises.get)  # ties: the first letter in order
    only_base = [(a, t) for a, t in pairs if a["correct"] and not t["correct"]]
    only_treat = [(a, t) for a, t in pairs if t["correct"] and not a["correct"]]
    return LetterShift(
        letter=letter, n=n, baseline_share=base_letters[letter] / n, treatment_share=treat_letters[letter] / n,
        b=len(only_base), c=len(only_treat),
        b_letter=sum(1 for a, _ in only_base if a["kind"] == "mc" and a["target"] == letter),
        c_letter=sum(1 for a, _ in only_treat if a["kind"] == "mc" and a["target"] == letter),
    )
