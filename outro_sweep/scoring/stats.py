"""Accuracy with a confidence interval, so sweep cells can be compared honestly.

Wilson's score interval rather than the normal approximation: benchmarks here are a few
hundred questions and small models sit near 0 or near chance, where the normal interval
leaves [0, 1] and collapses to zero width at 0 or n correct.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95%: the 0.975 quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0.0, 1.0) when n == 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Exact at the ends (the formula gives 0 and 1 there up to rounding).
    low = 0.0 if successes == 0 else max(0.0, center - margin)
    high = 1.0 if successes == n else min(1.0, center + margin)
    return low, high


def accuracy_summary(correct: list[bool]) -> dict:
    """accuracy, its 95% Wilson interval, n and the number correct.

    With no questions the accuracy is undefined: NaN, with the uninformative (0, 1).
    """
    n = len(correct)
    k = sum(bool(c) for c in correct)
    low, high = wilson_interval(k, n)
    return {"accuracy": k / n if n else math.nan, "ci_low": low, "ci_high": high, "n": n, "correct": k}
