"""Answer-letter statistics of a cell: what tells a real accuracy apart from a letter habit.

A small model may answer "A" to most questions; its accuracy then tracks the share of
target A, not what it understands. These numbers, computed from scored prediction records
(``kind``, ``options``, ``target``, ``prediction``, ``valid``), let every report row show it:

* ``invalid`` / ``invalid_rate``: unreadable answers (all kinds), counted wrong;
* ``chance``: the accuracy of uniform guessing, the mean over the mc and yes/no questions of
  1 / #options (yes/no: 1/2); None when the cell has neither;
* ``predicted_letters`` / ``target_letters``: {letter: count} over the mc questions (the
  predicted ones over valid mc predictions only); ``top_letter`` and ``top_letter_share``:
  the most common predicted letter and its share of the valid mc predictions;
* ``flags``: ``letter_bias`` when ``top_letter_share > LETTER_BIAS_SHARE``;
  ``ci_contains_chance`` when the accuracy's interval contains ``chance``.

Under cloze scoring (records with ``option_ll``) no letter is ever read: the "letter" is the
chosen option's position (A = first), and the same share above ``LETTER_BIAS_SHARE`` is the flag
``position_bias`` (``by_position``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

LETTER_BIAS_SHARE = 0.6  # a most common letter above this share of the valid mc answers is a bias
LETTER_BIAS, CI_CONTAINS_CHANCE = "letter_bias", "ci_contains_chance"
POSITION_BIAS = "position_bias"  # the same share of one option position, under cloze scoring
# The record fields these statistics read (scored records carry them all).
LETTER_FIELDS = ("kind", "options", "target", "prediction", "valid")
YES_NO_CHANCE = 0.5


@dataclass(frozen=True)
class LetterStats:
    n: int
    invalid: int
    chance: float | None
    # {letter: count}, sorted by letter; None when the cell has no mc question.
    predicted_letters: dict[str, int] | None = None
    target_letters: dict[str, int] | None = None
    flags: list[str] = field(default_factory=list)
    by_position: bool = False  # cloze scoring: the letters are the chosen options' positions

    @property
    def invalid_rate(self) -> float | None:
        return self.invalid / self.n if self.n else None

    @property
    def top_letter(self) -> str | None:
        """The most common predicted letter (ties: the first in alphabetical order)."""
        if not self.predicted_letters:
            return None
        return max(self.predicted_letters, key=self.predicted_letters.get)  # keys in letter order

    @property
    def top_letter_share(self) -> float | None:
        if not self.predicted_letters:
            return None
        return self.predicted_letters[self.top_letter] / sum(self.predicted_letters.values())

    def metrics(self) -> dict:
        """The metrics.json keys (the same names the report and the W&B summary use)."""
        return {"invalid": self.invalid, "invalid_rate": self.invalid_rate, "chance": self.chance,
                "predicted_letters": self.predicted_letters, "top_letter": self.top_letter,
                "top_letter_share": self.top_letter_share, "target_letters": self.target_letters,
                "flags": list(self.flags), "letters_are": "positions" if self.by_position else "answers"}

    @classmethod
    def from_metrics(cls, metrics: dict) -> "LetterStats | None":
        """Back from a metrics.json that holds them (None when it predates them)."""
        if "chance" not in metrics or not metrics.get("n"):
            return None
        return cls(n=metrics["n"], invalid=metrics.get("invalid", 0), chance=metrics["chance"],
                   predicted_letters=metrics.get("predicted_letters"), target_letters=metrics.get("target_letters"),
                   flags=list(metrics.get("flags") or []), by_position=metrics.get("letters_are") == "positions")


def _chance_of(record: dict) -> float | None:
    if record["kind"] == "mc":
        return 1 / len(record["options"]) if record["options"] else None
    return YES_NO_CHANCE if record["kind"] == "yesno" else None


def letter_stats(records: Sequence[dict], ci_low: float, ci_high: float) -> LetterStats:
    """The statistics of scored ``records``, flagged against the accuracy's interval
    [``ci_low``, ``ci_high``] (fractions, like ``chance``)."""
    chances = [c for c in map(_chance_of, records) if c is not None]
    chance = sum(chances) / len(chances) if chances else None
    mc = [r for r in records if r["kind"] == "mc"]
    predicted = Counter(r["prediction"] for r in mc if r["valid"] and r["prediction"] is not None)
    stats = LetterStats(
        n=len(records), invalid=sum(1 for r in records if not r["valid"]), chance=chance,
        predicted_letters=dict(sorted(predicted.items())) if mc else None,
        target_letters=dict(sorted(Counter(str(r["target"]) for r in mc).items())) if mc else None,
        by_position=bool(mc) and all(r.get("option_ll") is not None or r.get("error") is not None for r in mc),
    )
    flags = []
    if stats.top_letter_share is not None and stats.top_letter_share > LETTER_BIAS_SHARE:
        flags.append(POSITION_BIAS if stats.by_position else LETTER_BIAS)
    if chance is not None and records and ci_low <= chance <= ci_high:
        flags.append(CI_CONTAINS_CHANCE)
    return replace(stats, flags=flags)


def flag_words(flags, top_letter: str | None, top_letter_share: float | None) -> str:
    """The visible warnings of flagged numbers: ``⚠ bias A 91%``, ``≈ chance``, both, or ""."""
    shown = []
    if LETTER_BIAS in flags:
        shown.append(f"⚠ bias {top_letter} {100 * top_letter_share:.0f}%")
    if POSITION_BIAS in flags:
        shown.append(f"⚠ position bias {top_letter} {100 * top_letter_share:.0f}%")
    if CI_CONTAINS_CHANCE in flags:
        shown.append("≈ chance")
    return ", ".join(shown)


def has_letter_fields(records: Sequence[dict]) -> bool:
    """Whether every record carries what ``letter_stats`` reads."""
    return all(name in record for record in records for name in LETTER_FIELDS)
