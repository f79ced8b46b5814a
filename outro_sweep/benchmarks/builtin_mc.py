"""A multiple-choice benchmark the project generates itself, so it can ship with the code.

Other benchmarks' data is not ours to redistribute; this one is built from a seed at load
time. Every answer is checkable by computation (tests recompute each one from the question
text), so a wrong "gold" letter can only be a bug, never a labelling error.

Questions cycle through the categories (arithmetic, comparison, sequence, alphabet, word,
calendar), so any ``limit`` keeps the mix balanced. The correct option's position is drawn
as a fresh permutation of the letters for each block of ``num_options`` questions: every
letter is correct equally often (within one) over any prefix, so a model that always
answers "A" scores chance, not more.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Annotated

from outro_sweep.benchmarks.base import Benchmark, Question, ask
from outro_sweep.benchmarks.sampling import balanced_position
from outro_sweep.config.schema import Range, check_arguments

# A week has seven days: the calendar questions cannot offer more distinct plausible options.
MAX_OPTIONS = 7
# A generated question whose text and option set repeat an earlier one is drawn again, up
# to this many times; after that the repeat is kept (only reachable for very large counts).
MAX_REDRAWS = 100

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
# Common concrete nouns, 3 to 10 letters, all distinct and lowercase.
WORDS = (
    "cat", "dog", "sun", "cup", "map", "key", "bird", "tree", "book", "fish", "lamp", "door",
    "rain", "ship", "star", "apple", "bread", "chair", "cloud", "horse", "lemon", "music",
    "ocean", "paper", "river", "stone", "table", "tiger", "water", "window", "garden",
    "planet", "pencil", "rabbit", "silver", "summer", "orange", "bottle", "candle", "forest",
    "island", "monkey", "kitchen", "blanket", "chicken", "diamond", "library", "morning",
    "picture", "rainbow", "teacher", "volcano", "elephant", "mountain", "hospital",
    "umbrella", "sandwich", "computer", "dinosaur", "keyboard", "butterfly", "telephone",
    "chocolate", "newspaper", "adventure", "waterfall", "helicopter", "basketball",
)  # fmt: skip

# A generator returns (question text, correct option text, wrong-but-plausible option texts).
# The wrong options are a pool of at least MAX_OPTIONS - 1 distinct texts, in a fixed order
# (never a set of strings: its order would change with PYTHONHASHSEED).
Generated = tuple[str, str, list[str]]


def _distinct(values, exclude) -> list:
    """``values`` without repeats and without ``exclude``, first occurrence order kept."""
    return [v for v in dict.fromkeys(values) if v != exclude]


def _near_numbers(answer: int, offsets: Sequence[int], minimum: int = 0) -> list[str]:
    """Wrong numeric options: the typical slips (off by one, a carry, a step), as text.

    Topped up with answer +- 1, 2, ... until the pool is large enough for any num_options.
    """
    pool = _distinct((answer + d for d in offsets if answer + d >= minimum), answer)
    step = 1
    while len(pool) < MAX_OPTIONS - 1:
        pool = _distinct(pool + [v for v in (answer + step, answer - step) if v >= minimum], answer)
        step += 1
    return [str(v) for v in pool]


def _nearest(items: Sequence[str], index: int, count: int, circular: bool) -> list[str]:
    """The ``count`` items closest to ``items[index]`` (itself excluded), nearest first."""
    n = len(items)
    found: list[str] = []
    for distance in range(1, n):
        for j in (index - distance, index + distance):
            if circular:
                j %= n
            if 0 <= j < n and items[j] != items[index] and items[j] not in found:
                found.append(items[j])
        if len(found) >= count:
            break
    return found[:count]


def _arithmetic(rng: random.Random) -> Generated:
    op = rng.choice("+-×")
    if op == "+":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        answer, offsets = a + b, (-11, -10, -2, -1, 1, 2, 10, 11)
    elif op == "-":
        a = rng.randint(11, 99)
        b = rng.randint(2, a - 1)
        answer, offsets = a - b, (-11, -10, -2, -1, 1, 2, 10, 11)
    else:
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        # The neighbouring entries of the times table are the plausible slips.
        answer, offsets = a * b, (-a, a, -b, b, -1, 1, 10, -10)
    return f"What is {a} {op} {b}?", str(answer), _near_numbers(answer, offsets)


def _comparison(rng: random.Random) -> Generated:
    # Close numbers with the same number of digits, so the model must read every digit.
    digits = rng.choice((2, 3, 4))
    low, high = 10 ** (digits - 1), 10**digits - 1
    base = rng.randint(low, max(low, high - 99))
    numbers = rng.sample(range(base, min(high, base + 99) + 1), MAX_OPTIONS)
    largest = rng.random() < 0.5
    answer = max(numbers) if largest else min(numbers)
    question = f"Which number is the {'largest' if largest else 'smallest'}?"
    return question, str(answer), [str(v) for v in numbers if v != answer]


def _sequence(rng: random.Random) -> Generated:
    kind = rng.choice(("up", "up", "down", "times"))
    if kind == "times":
        ratio, start = rng.choice((2, 3)), rng.randint(1, 5)
        terms = [start * ratio**i for i in range(5)]
    else:
        step = rng.randint(2, 12)
        if kind == "up":
            start = rng.randint(1, 30)
            terms = [start + i * step for i in range(5)]
        else:
            start = rng.randint(4 * step + 1, 4 * step + 40)  # every term stays positive
            terms = [start - i * step for i in range(5)]
    *shown, answer = terms
    last, diff = shown[-1], shown[-1] - shown[-2]
    # The slips: repeating the last term, adding the last difference (right for "up"/"down",
    # wrong for "times"), a step too far, and off by one or two.
    slips = (last, last + diff, answer + diff, answer - 1, answer + 1, answer - 2, answer + 2)
    question = f"What number comes next: {', '.join(map(str, shown))}, ?"
    return question, str(answer), _near_numbers(answer, [v - answer for v in slips], minimum=1)


def _alphabet(rng: random.Random) -> Generated:
    # Lower-case letters as option texts: a capital "C" among options lettered A-D would be
    # indistinguishable from a choice of option C in a generated answer.
    after = rng.random() < 0.5
    index = rng.randint(0, 24) if after else rng.randint(1, 25)
    target = index + 1 if after else index - 1
    letter, answer = ALPHABET[index], ALPHABET[target]
    question = f"Which letter comes right {'after' if after else 'before'} '{letter}' in the alphabet?"
    return question, answer, _nearest(ALPHABET, target, MAX_OPTIONS - 1, circular=False)


def _word(rng: random.Random) -> Generated:
    if rng.random() < 0.5:
        word = rng.choice(WORDS)
        answer = len(word)
        question = f"How many letters are in the word '{word}'?"
        return question, str(answer), _near_numbers(answer, (-1, 1, -2, 2), minimum=1)
    words = rng.sample(WORDS, MAX_OPTIONS)
    answer = min(words)
    return "Which word comes first in alphabetical order?", answer, [w for w in words if w != answer]


def _calendar(rng: random.Random) -> Generated:
    after = rng.random() < 0.5
    if rng.random() < 0.5:
        items, unit = DAYS, "day"
        question_head = "Which day of the week comes"
    else:
        items, unit = MONTHS, "month"
        question_head = "Which month comes"
    shift = rng.randint(1, len(items) - 1)
    start = rng.randrange(len(items))
    target = (start + shift if after else start - shift) % len(items)
    plural = "" if shift == 1 else "s"
    question = f"{question_head} {NUMBER_WORDS[shift]} {unit}{plural} {'after' if after else 'before'} {items[start]}?"
    return question, items[target], _nearest(items, target, MAX_OPTIONS - 1, circular=True)


CATEGORIES: dict[str, Callable[[random.Random], Generated]] = {
    "arithmetic": _arithmetic,
    "comparison": _comparison,
    "sequence": _sequence,
    "alphabet": _alphabet,
    "word": _word,
    "calendar": _calendar,
}


class BuiltinMC(Benchmark):
    name = "builtin_mc"

    def __init__(self, num_questions: Annotated[int, Range(ge=1)] = 300, seed: int = 0,
                 num_options: Annotated[int, Range(ge=2, le=MAX_OPTIONS)] = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        check_arguments(BuiltinMC, locals(), self.config_key)
        self.num_questions = num_questions
        self.seed = seed
        self.num_options = num_options

    def describe(self) -> str:
        return f"num_questions={self.num_questions}, seed={self.seed}, num_options={self.num_options}"

    def _load(self) -> list[Question]:
        # One generator for everything, consumed in a fixed order: the same seed gives the
        # same questions, and a smaller num_questions gives a prefix of a larger one.
        rng = random.Random(self.seed)
        names = list(CATEGORIES)
        seen: set[tuple[str, frozenset[str]]] = set()
        questions: list[Question] = []
        positions: list[int] = []
        for i in range(self.num_questions):
            position = balanced_position(rng, i, self.num_options, positions)  # drawn first: the rng's order fixes the questions
            category = names[i % len(names)]
            for _ in range(MAX_REDRAWS):
                question, answer, pool = CATEGORIES[category](rng)
                wrong = rng.sample(pool, self.num_options - 1)
                key = (question, frozenset([answer, *wrong]))
                if key not in seen:
                    break
            seen.add(key)
            options = tuple(wrong[:position] + [answer] + wrong[position:])
            questions.append(
                ask(
                    id=f"{self.name}/{category}/{i // len(names)}",
                    question=question,
                    options=options,
                    answer=chr(ord("A") + position),
                    categories=(("task", category),),
                    strip=False,
                )
            )
        return questions
