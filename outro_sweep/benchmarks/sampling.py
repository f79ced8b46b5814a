"""``benchmark.sample``: a seeded random subsample of N questions, stratified by category.

``benchmark.limit`` takes the first N questions in file order, and a file sorted by category
(TruthfulQA, MMLU by subject) gives one category only. The sample draws from every stratum
(the questions' first category value; one stratum where questions have none) in proportion
to its size: stratum s of n_s questions out of T gets the quota q_s = N n_s / T, rounded by
largest remainder (each gets floor(q_s), the N - sum floor(q_s) left go to the largest
fractional parts, ties to the stratum seen first in the file). Where N >= the number of
strata, a stratum rounded to 0 takes one question from the stratum whose allocation exceeds
its quota the most, so every category is represented. Within a stratum the questions are a
``random.Random(seed)`` sample; the result keeps the benchmark's file order. Same questions,
N and seed -> the same sample.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def allocate(sizes: Sequence[int], total: int) -> list[int]:
    """Questions drawn per stratum: proportional allocation of ``total`` over strata of
    ``sizes`` (in first-seen order), largest-remainder rounding, at least one per stratum when
    ``total`` >= the number of strata. Needs 0 <= total <= sum(sizes)."""
    population = sum(sizes)
    if not 0 <= total <= population:
        raise ValueError(f"cannot draw {total} of {population}")
    quotas = [total * size / population for size in sizes]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(sizes)), key=lambda s: (-(quotas[s] - counts[s]), s))
    for s in by_remainder[: total - sum(counts)]:
        counts[s] += 1
    if total >= len(sizes):
        for empty in sorted((s for s, c in enumerate(counts) if c == 0), key=lambda s: (-sizes[s], s)):
            donor = max((s for s, c in enumerate(counts) if c > 1), key=lambda s: (counts[s] - quotas[s], -s))
            counts[donor] -= 1
            counts[empty] = 1
    return counts


def stratified_sample(questions: Sequence[T], total: int, seed: int) -> list[T]:
    """``total`` of ``questions`` (objects with a ``category``), stratified by category
    (``allocate``), drawn with ``random.Random(seed)``, in the input order."""
    strata: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        strata.setdefault(question.category, []).append(index)
    rng = random.Random(seed)
    chosen: list[int] = []
    for members, count in zip(strata.values(), allocate([len(m) for m in strata.values()], total)):
        chosen += rng.sample(members, count)
    return [questions[i] for i in sorted(chosen)]


def balanced_position(rng: random.Random, index: int, num_options: int, block: list[int]) -> int:
    """The answer's option position for question ``index`` of a generated benchmark: a fresh
    permutation of 0..num_options-1 (drawn from ``rng`` into ``block``, in place) opens each
    block of ``num_options`` questions, so every position is right equally often (within one)
    over any prefix of the questions."""
    if index % num_options == 0:
        block[:] = range(num_options)
        rng.shuffle(block)
    return block[index % num_options]
