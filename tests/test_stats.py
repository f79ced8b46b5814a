"""Wilson intervals against published values."""

from __future__ import annotations

import math

import pytest

from outro_sweep.scoring.stats import accuracy_summary, wilson_interval


@pytest.mark.parametrize(
    "successes,n,low,high",
    [
        (8, 10, 0.4902, 0.9433),  # the standard textbook example
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
        (500, 1000, 0.4691, 0.5309),  # large n: close to p +- 1.96 sqrt(p(1-p)/n)
    ],
)
def test_wilson_known_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_edges_and_z():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    # Very large n: the interval shrinks onto the normal approximation.
    low, high = wilson_interval(700_000, 1_000_000)
    half = 1.959963984540054 * math.sqrt(0.7 * 0.3 / 1_000_000)
    assert (low, high) == pytest.approx((0.7 - half, 0.7 + half), abs=1e-6)
    # A wider z widens the interval.
    assert wilson_interval(8, 10, z=2.5758)[0] < wilson_interval(8, 10)[0]


@pytest.mark.parametrize("successes,n", [(-1, 10), (11, 10), (0, -1)])
def test_wilson_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


def test_accuracy_summary():
    summary = accuracy_summary([True] * 8 + [False] * 2)
    assert summary["n"] == 10 and summary["correct"] == 8 and summary["accuracy"] == 0.8
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    empty = accuracy_summary([])
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and (empty["ci_low"], empty["ci_high"]) == (0.0, 1.0)
