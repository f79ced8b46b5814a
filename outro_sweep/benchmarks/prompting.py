"""The one multiple-choice prompt format every text benchmark shares.

The paper asks for the option's letter and parses it from the generated text, so every
benchmark must end its prompt with the same instruction: a benchmark-specific wording
would make accuracies across benchmarks incomparable.
"""

from __future__ import annotations

from collections.abc import Sequence

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Open-ended and yes/no video QA: the short-answer instruction of the Video-LLaVA / lmms-eval
# evaluations, so exact match and the judge see a word or phrase, not a paragraph.
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."


# Options are lettered A..Z: the letter parser (outro_sweep.scoring.letters) reads one capital
# letter, so a 27th option would have no letter it could recognise.
MAX_OPTIONS = 26


def option_letters(num_options: int) -> tuple[str, ...]:
    """``("A", "B", ...)``: the letters that label ``num_options`` options, in order."""
    return tuple(chr(ord("A") + i) for i in range(num_options))


def format_options(options: Sequence[str]) -> str:
    """One ``"A. text"`` line per option, no trailing newline."""
    return "\n".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(options)), options))


def format_mc_prompt(question: str, options: Sequence[str]) -> str:
    """The question, its lettered options, then the answer instruction on the last line."""
    return f"{question}\n{format_options(options)}\n{MC_INSTRUCTION}"


def format_cloze_prompt(question: str) -> str:
    """A multiple-choice question scored by cloze: no options and no instruction, since each
    option's text is read as the answer's continuation (lm-eval's ARC, the SmolLM2 authors' CF
    prompts: "Question: ...\nAnswer:" then " <option>")."""
    return f"Question: {question}\nAnswer:"


def format_short_answer_prompt(question: str) -> str:
    """An open-ended or yes/no question, then the short-answer instruction on the last line."""
    return f"{question}\n{SHORT_ANSWER_INSTRUCTION}"
