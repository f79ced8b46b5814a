"""The 95% interval of the paired accuracy difference (``newcombe_interval`` in
outro_sweep/report/paired.py): published worked examples, a hand computation, and properties
over every small table that say it is never narrower than the observed discordance allows.

Pure Python; no model, no files, no network. Counts of one paired table: ``both`` questions
right in both cells, ``b`` only in the baseline, ``c`` only in the treatment, ``neither``.
"""

from __future__ import annotations

import math

import pytest

from outro_sweep.report.paired import compare_paired, mcnemar_exact, newcombe_interval


def tables(sizes):
    """Every paired table (b, c, both, neither) with n in ``sizes``."""
    for n in sizes:
        for b in range(n + 1):
            for c in range(n - b + 1):
                for both in range(n - b - c + 1):
                    yield b, c, both, n - b - c - both


SMALL = list(tables((1, 2, 3, 5, 8, 13, 21)))


def test_newcombe_1998_worked_example():
    """Newcombe RG, "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Statistics in Medicine 1998;17:2635-2650: the example
    with cells 20 (both), 12 (first only), 2 (second only), 16 (neither), n = 50, difference
    0.2; method 10 gives 0.0562 to 0.3292. The same published values are asserted in the R
    package ratesci's tests (tests/testthat/test3.R, "against Newcombe's method 10 result").
    Here the first classification is the treatment, so c = 12 and b = 2."""
    low, high = newcombe_interval(b=2, c=12, both=20, neither=16)
    assert (round(low, 4), round(high, 4)) == (0.0562, 0.3292)


def test_fagerland_2014_worked_example():
    """Fagerland MW, Lydersen S, Laake P, "Recommended tests and confidence intervals for
    paired binomial proportions", Statistics in Medicine 2014;33:2850-2875: airway
    hyper-responsiveness before and after stem cell transplantation (Bentur et al. 2009),
    cells 1 (both), 1 (before only), 7 (after only), 12 (neither), n = 21; the Newcombe
    square-and-add (hybrid score) interval of p(before) - p(after) is -0.507 to -0.026,
    published to 3 decimals. "Before" plays the treatment: c = 1, b = 7."""
    low, high = newcombe_interval(b=7, c=1, both=1, neither=12)
    assert (round(low, 3), round(high, 3)) == (-0.507, -0.026)
    # Reversing the roles reverses the interval.
    assert newcombe_interval(b=1, c=7, both=1, neither=12) == pytest.approx((-high, -low), abs=1e-15)


def test_one_discordant_question_by_hand():
    """b = 0, c = 1 among n = 100 (both = 0, neither = 99): the case where a bootstrap of the
    questions gives [0, ...] beside McNemar p = 1. A margin is empty, so phi = 0 and

        Wilson(0/100) = (0, z^2 / (100 + z^2)) = (0, 0.036993)
        Wilson(1/100) = 0.028127 -+ 0.026360 = (0.001767, 0.054486)
        low  = 0.01 - sqrt((0.01 - 0.001767)^2 + 0.036993^2) = -0.027898
        high = 0.01 + (0.054486 - 0.01)                       = +0.054486

    With n = 1 (one question, only the treatment right): low = 1 - sqrt(2) z^2 / (1 + z^2)
    = 1 - 1.414214 * 0.793451 = -0.122109, high = 1.
    """
    assert newcombe_interval(b=0, c=1, both=0, neither=99) == pytest.approx((-0.027898, 0.054486), abs=2e-6)
    assert newcombe_interval(b=0, c=1, both=0, neither=0) == pytest.approx((-0.122109, 1.0), abs=2e-6)


def test_b0_c1_is_an_interval_around_zero_beside_mcnemar_p1():
    for n in (1, 2, 10, 100, 300, 1000):
        for both in {0, n // 2, n - 1}:
            low, high = newcombe_interval(b=0, c=1, both=both, neither=n - 1 - both)
            assert low < 0.0 < high, (n, both, low, high)
            # Not bounded by the one observed discordant question (unless 1/n is already the largest Δ).
            assert high > 1 / n or high == 1 / n == 1.0
    assert mcnemar_exact(0, 1) == 1.0


def test_contains_the_estimate_strictly_and_stays_in_range():
    for b, c, both, neither in SMALL:
        n = b + c + both + neither
        d = (c - b) / n
        low, high = newcombe_interval(b, c, both, neither)
        assert -1.0 <= low <= d <= high <= 1.0, (b, c, both, neither, low, high)
        assert high - low > 0.0  # never a point, also with b = c = 0
        # Strictly inside unless d is at a bound that no interval can pass.
        assert low < d or d == -1.0
        assert high > d or d == 1.0


def test_no_discordant_question_gives_a_symmetric_interval():
    for n, both in ((1, 0), (1, 1), (10, 3), (300, 150), (300, 300)):
        low, high = newcombe_interval(b=0, c=0, both=both, neither=n - both)
        assert low < 0.0 < high and low == pytest.approx(-high, abs=1e-15)
    assert all(math.isnan(v) for v in newcombe_interval(0, 0, 0, 0))


def test_monotone_in_c():
    """One more question only the treatment got right (taken from those both got wrong, or from
    those both got right) never lowers either limit."""
    for n in (5, 13, 40):
        for b in range(n + 1):
            for start in range(n - b + 1):
                for taken_from_neither in (True, False):
                    previous = None
                    for c in range(n - b - start + 1):
                        both, neither = (start, n - b - start - c) if taken_from_neither else (n - b - start - c, start)
                        limits = newcombe_interval(b, c, both, neither)
                        if previous is not None:
                            assert limits[0] >= previous[0] - 1e-12 and limits[1] >= previous[1] - 1e-12, \
                                (n, b, c, both, neither, previous, limits)
                        previous = limits


def test_narrows_as_the_same_table_grows():
    widths = []
    for scale in (1, 4, 16, 64):
        low, high = newcombe_interval(b=3 * scale, c=7 * scale, both=50 * scale, neither=40 * scale)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > widths[3] > 0
    # Halving roughly with each fourfold n, like any sqrt(n) interval.
    assert widths[3] / widths[2] == pytest.approx(0.5, rel=0.05)


def test_agreement_with_the_exact_mcnemar_test():
    """Never p < 0.05 with 0 inside the interval. The converse (0 outside the interval while
    p >= 0.05) happens where the exact test is conservative: only for p < 0.13 with n >= 8, and
    only for p < 0.08 with n >= 50 (checked here on n = 50 and 100 with b, c <= 30)."""
    disagree = total = 0
    for b, c, both, neither in [*SMALL, *tables((50,)), *((b, c, both, 100 - b - c - both)
                                                          for b in range(31) for c in range(31)
                                                          for both in range(0, 100 - b - c + 1, 7))]:
        if b > 30 or c > 30:
            continue
        n = b + c + both + neither
        low, high = newcombe_interval(b, c, both, neither)
        p = mcnemar_exact(b, c)
        excludes_zero = low > 0.0 or high < 0.0
        total += 1
        if p < 0.05:
            assert excludes_zero, (b, c, both, neither, p, low, high)
        elif excludes_zero:
            disagree += 1
            assert n < 8 or p < 0.13, (b, c, both, neither, p, low, high)
            assert n < 50 or p < 0.08, (b, c, both, neither, p, low, high)
    assert 0 < disagree < 0.06 * total


def test_compare_paired_reports_the_newcombe_interval():
    # 100 questions: 40 both right, 1 only the treatment, 0 only the baseline, 59 neither.
    base = [True] * 40 + [False] * 60
    treat = [True] * 41 + [False] * 59

    def records(correct):
        return [{"index": i, "id": f"q{i}", "prompt_hash": "h", "correct": ok} for i, ok in enumerate(correct)]

    result = compare_paired(records(base), records(treat))
    assert (result.b, result.c, result.p_mcnemar) == (0, 1, 1.0)
    assert (result.ci_low, result.ci_high) == newcombe_interval(b=0, c=1, both=40, neither=59)
    assert result.ci_low < 0.0 < result.ci_high
