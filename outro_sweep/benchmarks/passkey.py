"""Passkey retrieval: a long-context benchmark the project generates itself (Mohtashami & Jaggi
2023, "Landmark Attention", the passkey task).

A random five-digit number is hidden in repeated filler text ("The grass is green. The sky is
blue. ...") at a chosen depth, and the model is asked for it. Every question is built from a
seed at load time, so nothing needs downloading and the answer is checkable from the prompt
text alone (tests read the key back out of it).

Forms (``form``):

* ``generate``: an open question; the answer is the number, scored by the first number in the
  generated text (``open_metric="number"``, ``outro_sweep.scoring.open_answers.first_number``).
* ``mc``: the key and ``num_options - 1`` distractors, each the key with one digit changed,
  as lettered options; the correct letter is drawn as a fresh permutation for each block of
  ``num_options`` questions of one (length, depth), so every letter is right equally often.

Lengths. ``context_tokens`` is the whole sequence the model's positions must hold: the
chat-rendered prompt plus ``max_new_tokens`` answer tokens. The prompt is filled with filler
sentences while its estimated length stays within ``context_tokens - TEMPLATE_RESERVE -
max_new_tokens``. The estimate (``estimate_tokens``) counts one token per word, digit,
punctuation mark and newline, plus one for a space before a digit: on this text's vocabulary
that is exactly SmolLM2's tokenizer (tested); ``TEMPLATE_RESERVE`` covers SmolLM2's chat template
(30 tokens). Other tokenizers split some words differently, so for them the length is nominal.

Depth ``d`` puts the key sentence after ``round(d * n)`` of the prompt's ``n`` filler sentences:
0 right after the introduction, 1 right before the question.

``num_questions`` is per (length, depth); questions cycle through the lengths and depths
(question 0 of every pair, then question 1, ...), so any ``limit`` keeps the mix balanced.
Each question's key and options come from a generator seeded by (seed, length, depth, index):
adding a length or depth leaves the other questions as they were.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Annotated, Literal

from outro_sweep.benchmarks.base import Benchmark, Question, ask
from outro_sweep.config.schema import NonEmpty, Range, check_arguments
from outro_sweep.errors import ConfigError

FORMS = ("generate", "mc")
MAX_OPTIONS = 9  # options per mc question, drawn from the 44 one-digit variants of a five-digit key
KEY_DIGITS = 5
INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
         "Find it and remember it. I will ask you about the important information there.")
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
KEY_SENTENCE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key?"
# Tokens the chat template adds around the prompt (SmolLM2's system turn and role markers: 30).
TEMPLATE_RESERVE = 32
_TOKEN = re.compile(r"'s\b|\n| (?=\d)|\d|[A-Za-z]+|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """Tokens of ``text``: one per word, digit, punctuation mark, newline and space before a
    digit (SmolLM2 splits digits one by one and a space before one is a token of its own)."""
    return len(_TOKEN.findall(text))


def haystack(key: int, sentences: int, depth: float) -> str:
    """The introduction, then ``sentences`` filler sentences with the key sentence after
    ``round(depth * sentences)`` of them."""
    filler = [FILLER[i % len(FILLER)] for i in range(sentences)]
    filler.insert(round(depth * sentences), KEY_SENTENCE.format(key=key))
    return " ".join([INTRO, *filler])


def distractors(key: int, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct numbers, each ``key`` with one digit changed (never the leading digit
    to 0), so only reading every digit tells them apart."""
    digits = str(key)
    pool = [digits[:p] + d + digits[p + 1:] for p in range(len(digits)) for d in "0123456789"
            if d != digits[p] and not (p == 0 and d == "0")]
    return rng.sample(pool, count)


class Passkey(Benchmark):
    name = "passkey"
    open_metric = "number"  # the generated form is right when the first number said is the key

    def __init__(
        self,
        context_tokens: Annotated[int, Range(ge=1)] | Annotated[list[Annotated[int, Range(ge=1)]], NonEmpty()] = 2048,
        depths: Annotated[list[Annotated[float, Range(ge=0.0, le=1.0)]], NonEmpty()] = (0.0, 0.5, 1.0),
        num_questions: Annotated[int, Range(ge=1)] = 12,
        seed: int = 0,
        form: Literal[FORMS] = "generate",
        num_options: Annotated[int, Range(ge=2, le=MAX_OPTIONS)] = 4,
        **kwargs,
    ) -> None:
        kwargs.setdefault("max_new_tokens", 12)  # "The pass key is 12345." is 11 SmolLM2 tokens
        super().__init__(**kwargs)
        check_arguments(Passkey, locals(), self.config_key)
        self.lengths = [context_tokens] if isinstance(context_tokens, int) else list(context_tokens)
        self.depths = list(depths)
        self.num_questions = num_questions
        self.seed = seed
        self.form = form
        self.num_options = num_options
        if form == "generate" and self.scoring == "logits":
            raise ConfigError("benchmark.scoring=logits reads option-letter logits, and benchmark.form=generate asks "
                              "for the number itself: valid values are scoring=generate, or form=mc")
        shortest = self.shortest_context()
        too_short = [n for n in self.lengths if n < shortest]
        if too_short:
            raise ConfigError(f"benchmark.context_tokens={too_short[0]} leaves no room for filler text: valid values are "
                              f">= {shortest} (introduction, key, question and answer with form={form}, "
                              f"max_new_tokens={self.max_new_tokens})")

    @property
    def longest(self) -> int:
        return max(self.lengths)

    def check_model(self, loader) -> None:
        limit = loader.max_positions()
        if self.longest > limit:
            raise ConfigError(f"benchmark.context_tokens={self.longest} exceeds the {limit} positions of "
                              f"model={loader.name} (max_position_embeddings in its config): valid values are <= {limit}")

    def describe(self) -> str:
        return (f"context_tokens={self.lengths}, depths={self.depths}, num_questions={self.num_questions}, "
                f"seed={self.seed}, form={self.form}")

    def budget(self, context_tokens: int) -> int:
        """Estimated tokens the prompt text may take at ``context_tokens``."""
        return context_tokens - TEMPLATE_RESERVE - self.max_new_tokens

    def shortest_context(self) -> int:
        """The smallest ``context_tokens`` whose prompt holds one filler sentence (every key and
        option has KEY_DIGITS digits, so any one stands for all)."""
        key = 10 ** (KEY_DIGITS - 1)
        question = self._question(key, [str(key)] * (self.num_options - 1), 0, 1, 0.0)
        return estimate_tokens(question.prompt) + TEMPLATE_RESERVE + self.max_new_tokens

    def _question(self, key: int, wrong: list[str], position: int, sentences: int, depth: float,
                  id: str = "passkey", categories: tuple = ()) -> Question:
        """The question with ``sentences`` filler sentences; ``wrong``: the mc distractors, the
        key going in at ``position`` among them."""
        text = f"{haystack(key, sentences, depth)}\n{QUESTION}"
        if self.form == "generate":
            return ask(id=id, question=text, options=(), answer=str(key), kind="open", categories=categories,
                       strip=False)
        options = tuple(wrong[:position] + [str(key)] + wrong[position:])
        return ask(id=id, question=text, options=options, answer=chr(ord("A") + position), categories=categories,
                   strip=False)

    def _fitted(self, context_tokens: int, make: Callable[[int], Question]) -> Question:
        """``make(sentences)`` with as many filler sentences as ``budget(context_tokens)`` holds."""
        budget = self.budget(context_tokens)
        fixed = estimate_tokens(make(0).prompt)
        per_cycle = sum(estimate_tokens(" " + s) for s in FILLER)
        sentences = max(1, len(FILLER) * (budget - fixed) // per_cycle)  # a first guess, then exact
        while estimate_tokens(make(sentences + 1).prompt) <= budget:
            sentences += 1
        while sentences > 1 and estimate_tokens(make(sentences).prompt) > budget:
            sentences -= 1
        return make(sentences)

    def _load(self) -> list[Question]:
        questions = []
        for i in range(self.num_questions):
            for length in self.lengths:
                for depth in self.depths:
                    pair = f"{self.seed}/{length}/{depth:g}"  # 1 and 1.0 are one depth
                    # Letter positions: one permutation per block of num_options questions of this pair.
                    positions = list(range(self.num_options))
                    random.Random(f"{pair}/block{i // self.num_options}").shuffle(positions)
                    rng = random.Random(f"{pair}/{i}")
                    key = rng.randint(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS - 1)
                    wrong = distractors(key, self.num_options - 1, rng) if self.form == "mc" else []
                    id, categories = f"{self.name}/{length}/{depth:g}/{i}", (("context", str(length)),
                                                                             ("depth", f"{depth:g}"))
                    questions.append(self._fitted(length, lambda n: self._question(
                        key, wrong, positions[i % self.num_options], n, depth, id, categories)))
        return questions
