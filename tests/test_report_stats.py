"""The report's statistics (outro_sweep/report/paired.py) against independent computations.

Pure Python and numpy; no model, no files, no network.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from outro_sweep.report.paired import (
    compare_paired,
    discordant_counts,
    holm,
    mcnemar_exact,
    pair_records,
    wilson,
)


def binomial_two_sided(b: int, c: int) -> float:
    """Exact McNemar computed independently: both tails of Binomial(b + c, 1/2), in exact
    fractions, summing every outcome at most as likely as the observed one."""
    n = b + c
    if n == 0:
        return 1.0
    probability = [Fraction(math.comb(n, k), 2**n) for k in range(n + 1)]
    observed = probability[b]
    return float(min(Fraction(1), sum(p for p in probability if p <= observed)))


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (5, 0), (2, 8), (8, 2), (3, 3), (1, 1), (10, 25), (0, 1), (7, 13),
                                 (40, 60), (0, 20)])
def test_mcnemar_matches_closed_form_binomial(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(binomial_two_sided(b, c), rel=1e-12, abs=1e-15)


def test_mcnemar_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # (2, 8): 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    assert mcnemar_exact(4, 4) == 1.0  # symmetric: the doubled tail exceeds 1 and is capped
    assert mcnemar_exact(2, 8) == mcnemar_exact(8, 2)
    assert mcnemar_exact(0, 2000) == 0.0  # 2^-1999 underflows; exact integers, no overflow
    assert 0.0 < mcnemar_exact(900, 1100) < 1e-5


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def wilson_by_quadratic(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's interval as the roots in p of (k/n - p)^2 = z^2 p (1 - p) / n."""
    phat = k / n
    a = 1 + z * z / n
    b = -(2 * phat + z * z / n)
    c = phat * phat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize("k,n", [(8, 10), (1, 10), (5, 10), (81, 263), (150, 300), (299, 300)])
def test_wilson_matches_the_quadratic(k, n):
    assert wilson(k, n) == pytest.approx(wilson_by_quadratic(k, n), abs=1e-12)


def test_wilson_textbook_value():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert wilson_by_quadratic(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert wilson(0, 0) == (0.0, 1.0)


def records(correct: list[bool], prefix: str = "q", hashes: dict | None = None) -> list[dict]:
    return [{"index": i, "id": f"{prefix}{i}", "prompt_hash": (hashes or {}).get(i, f"h{i}"), "correct": bool(c)}
            for i, c in enumerate(correct)]


def test_identical_cells_give_zero_difference_and_p_one():
    rng = np.random.default_rng(3)
    same = records(list(rng.random(200) < 0.4))
    result = compare_paired(same, same)
    assert result.paired_n == 200 and (result.b, result.c) == (0, 0)
    # No discordant question: still an interval around 0, not the point [0, 0].
    assert result.diff == 0.0 and result.ci_low < 0.0 < result.ci_high
    assert result.ci_low == pytest.approx(-result.ci_high)
    assert result.p_mcnemar == 1.0
    assert result.pairing.complete and result.pairing.notes() == []


def test_difference_and_discordant_counts():
    base = [True, True, False, False, True, False]
    treat = [True, False, True, True, True, False]
    assert discordant_counts(base, treat) == (1, 2)
    result = compare_paired(records(base), records(treat))
    assert (result.b, result.c) == (1, 2)
    assert result.diff == pytest.approx((2 - 1) / 6)
    assert result.treatment_accuracy - result.baseline_accuracy == pytest.approx(result.diff)
    assert result.p_mcnemar == pytest.approx(binomial_two_sided(1, 2))


def test_holm_textbook_example():
    # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(1*0.04, 0.06)=0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02, None, 0.01]) == [pytest.approx(0.02), None, pytest.approx(0.02)]
    assert holm([]) == []


def test_pairing_by_id_and_prompt_hash():
    base = records([True, False, True, True, False])  # q0..q4
    treat = records([True, True, False, True], hashes={2: "changed"})  # q0..q3, q2's prompt changed
    treat.append({"index": 9, "id": "extra", "prompt_hash": "hx", "correct": True})
    pairing = pair_records(base, treat)
    assert pairing.ids == ["q0", "q1", "q3"]
    assert pairing.paired_n == 3
    assert pairing.hash_mismatch == ["q2"]
    assert pairing.only_baseline == 1 and pairing.only_treatment == 1  # q4 / extra
    assert not pairing.complete
    notes = " ".join(pairing.notes())
    assert "question sets differ" in notes and "3 shared" in notes and "prompt_hash" in notes and "q2" in notes
    result = compare_paired(base, treat)
    assert result.paired_n == 3 and (result.b, result.c) == (0, 1)
    assert result.diff == pytest.approx(1 / 3)


def test_pairing_ignores_record_order():
    base = records([True, False, True])
    treat = list(reversed(records([False, False, True])))
    assert compare_paired(base, treat).b == 1 and compare_paired(base, treat).c == 0
