"""Turning a model's output into the letter it chose: parsed from text, or read from logits.

``parse_choice`` rules (the paper parses the letter from the generated answer):

1. Only capital letters that label an option count; lower-case "a"/"b" never do, since
   "a" is an English article and the prompt asks for the option's letter.
2. A letter counts when it stands alone: not touching another letter or digit ("B.",
   "(B)", "B) text", "**B**", "'B'" all count; "Because" or "B2" do not).
3. Where it counts: first thing in the answer, after leading whitespace, quotes,
   asterisks, backticks and opening brackets; or right after "answer", "option" or
   "choice" (any case), optionally followed by "is"/"would be"/"should be" and ":"
   ("The answer is B", "Answer: (C)", "option D"); or anywhere inside "(X)"/"[X]".
4. "A" or "I" followed by a space and a lower-case letter is the English word, never the
   letter: "A cat is ..." and "I think ..." choose nothing (the cost: "A is correct"
   is not read as A either).
5. Every counting occurrence must name the same letter; none, or two different letters
   ("B or C", "B, C", "(A) and (B)", "B. The answer is C"), gives None: scored as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


_LEADING = re.compile(r"""^[\s"'`*_(\[“‘]*([A-Z])(?![A-Za-z0-9])""")
_PHRASE = re.compile(
    r"""(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?)"""
    r"""\s*:?[\s"'`*_(\[“‘]*([A-Z])(?![A-Za-z0-9])"""
)
# "B or C", "B/C", "B, C": a listed alternative after a counted letter counts too (rule 5).
_ALTERNATIVE = re.compile(r"""\s*(?:,|/|&|\bor\b|\band\b)[\s"'`*_(\[“‘]*([A-Z])(?![A-Za-z0-9])""")
_BRACKETED = re.compile(r"""[(\[]\s*([A-Z])\s*[)\]]""")
_WORD_FOLLOWS = re.compile(r"[ \t]+[a-z]")
_ONE_LETTER_WORDS = ("A", "I")


def _is_english_word(text: str, match: re.Match) -> bool:
    return match.group(1) in _ONE_LETTER_WORDS and _WORD_FOLLOWS.match(text, match.end(1)) is not None


def parse_choice(text: str, letters: Sequence[str]) -> str | None:
    """The option letter ``text`` chooses, or None when it chooses none or is ambiguous."""
    chosen: set[str] = set()
    leading = _LEADING.match(text)
    for first in ([leading] if leading else []) + list(_PHRASE.finditer(text)):
        chain = [first]  # the letter, then any alternatives listed after it
        while (following := _ALTERNATIVE.match(text, chain[-1].end())) is not None:
            chain.append(following)
        # In "A or B" the "A" is a letter even though a lower-case word follows it.
        chosen.update(m.group(1) for m in chain if len(chain) > 1 or not _is_english_word(text, m))
    chosen.update(m.group(1) for m in _BRACKETED.finditer(text))
    chosen &= set(letters)
    return chosen.pop() if len(chosen) == 1 else None


def choose_letter(logits: Mapping[str, float]) -> str:
    """The letter with the highest logit (ties: the first letter in alphabetical order)."""
    if not logits:
        raise ValueError("no letter logits")
    best = None
    for letter in sorted(logits):
        if best is None or logits[letter] > logits[best]:
            best = letter
    return best
