"""Paired statistics for "is the gain real?": one OutRo cell against its baseline cell.

Both cells answered the same questions, so the comparison is paired per question; that is
far more sensitive than comparing two accuracies with independent intervals, because most
questions are answered the same way by both. Pure Python plus numpy, no scipy.

Notation for one comparison over the ``n`` paired questions: ``a_i`` = 1 when the baseline
answered question i correctly, ``t_i`` = 1 when the OutRo cell did;
``b`` = #{a_i = 1, t_i = 0} (only the baseline right), ``c`` = #{a_i = 0, t_i = 1} (only OutRo
right). The accuracy difference is ``d = (c - b) / n = mean(t) - mean(a)``.

Its 95% interval is Newcombe's hybrid score interval for paired proportions
(``newcombe_interval``); significance is the exact McNemar test (``mcnemar_exact``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from outro_sweep.scoring.stats import Z_95, wilson_interval

# How the report names the interval of the paired difference (table legend, W&B config).
INTERVAL_METHOD = "Newcombe hybrid score"

__all__ = [
    "INTERVAL_METHOD",
    "PairedResult",
    "Pairing",
    "compare_paired",
    "discordant_counts",
    "holm",
    "mcnemar_exact",
    "newcombe_interval",
    "pair_records",
    "wilson",
]


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (``outro_sweep.scoring.stats.wilson_interval``):

        centre = (p + z^2/2n) / (1 + z^2/n),  half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)

    with p = successes/n; (0, 1) when n = 0.
    """
    return wilson_interval(successes, n, z)


# ----------------------------------------------------------------------------- pairing


@dataclass
class Pairing:
    """Two cells' records matched question by question on (id, prompt_hash).

    ``baseline`` / ``treatment``: 0/1 correctness of the paired questions, in the same order
    (sorted by the baseline's record index). ``only_baseline`` / ``only_treatment``: how many
    questions one cell has and the other lacks (by id); ``hash_mismatch``: ids both cells have
    but with different prompt hashes (the prompt changed: not the same question, not paired);
    ``duplicates``: records whose (id, prompt_hash) repeats within one cell (the first is used).
    """

    ids: list[str]
    baseline: np.ndarray
    treatment: np.ndarray
    only_baseline: int = 0
    only_treatment: int = 0
    hash_mismatch: list[str] = field(default_factory=list)
    duplicates: int = 0

    @property
    def paired_n(self) -> int:
        return len(self.ids)

    @property
    def complete(self) -> bool:
        """Whether both cells hold exactly the same questions."""
        return not (self.only_baseline or self.only_treatment or self.hash_mismatch or self.duplicates)

    def notes(self) -> list[str]:
        """Human-readable sentences about what was not paired (empty when all was)."""
        notes = []
        if self.only_baseline or self.only_treatment or self.hash_mismatch:
            notes.append(f"question sets differ: paired on the {self.paired_n} shared questions "
                         f"({self.only_treatment} only in this cell, {self.only_baseline} only in the baseline)")
        if self.hash_mismatch:
            shown = ", ".join(self.hash_mismatch[:3]) + (", ..." if len(self.hash_mismatch) > 3 else "")
            notes.append(f"{len(self.hash_mismatch)} ids with a different prompt_hash were not paired ({shown})")
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicate (id, prompt_hash) records ignored")
        return notes


def _keyed(records: list[dict]) -> tuple[dict, int]:
    keyed, duplicates = {}, 0
    for record in records:
        key = (str(record["id"]), str(record.get("prompt_hash")))
        if key in keyed:
            duplicates += 1
            continue
        keyed[key] = record
    return keyed, duplicates


def pair_records(baseline: list[dict], treatment: list[dict]) -> Pairing:
    """Match records by the key (``id``, ``prompt_hash``); only keys present in both are paired.

    A question is "the same" only when its id AND its exact prompt (hash) agree: a changed
    prompt template or few-shot set gives the same id a new hash, and such a record is counted
    in ``hash_mismatch`` instead of being compared.
    """
    base, base_dups = _keyed(baseline)
    treat, treat_dups = _keyed(treatment)
    shared = [key for key in base if key in treat]
    shared.sort(key=lambda key: (base[key].get("index", 0), key))
    base_ids = {key[0] for key in base}
    treat_ids = {key[0] for key in treat}
    shared_ids = {key[0] for key in shared}
    mismatch = sorted((base_ids & treat_ids) - shared_ids)
    return Pairing(
        ids=[key[0] for key in shared],
        baseline=np.fromiter((bool(base[k]["correct"]) for k in shared), dtype=bool, count=len(shared)),
        treatment=np.fromiter((bool(treat[k]["correct"]) for k in shared), dtype=bool, count=len(shared)),
        only_baseline=len(base_ids - treat_ids),
        only_treatment=len(treat_ids - base_ids),
        hash_mismatch=mismatch,
        duplicates=base_dups + treat_dups,
    )


def discordant_counts(baseline, treatment) -> tuple[int, int]:
    """(b, c): b = sum(a_i (1 - t_i)) questions only the baseline got right,
    c = sum((1 - a_i) t_i) questions only the treatment got right."""
    a = np.asarray(baseline, dtype=bool)
    t = np.asarray(treatment, dtype=bool)
    if a.shape != t.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {t.shape}")
    return int(np.sum(a & ~t)), int(np.sum(~a & t))


# ----------------------------------------------------------------------------- tests


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) two-sided McNemar test of "OutRo changes nothing".

    Under the null, each of the b + c discordant questions is equally likely to favour
    either cell, so X = b ~ Binomial(b + c, 1/2) and

        p = min(1, 2 * P(X <= min(b, c))) = min(1, 2 * sum_{i=0..min(b,c)} C(b+c, i) / 2^(b+c))

    with p = 1 when b + c = 0. Computed with exact integers (no normal approximation), so it
    is right for the small discordant counts typical of a few hundred questions.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: correctly rounded even for huge n


def newcombe_interval(b: int, c: int, both: int, neither: int, z: float = Z_95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10 of Newcombe RG, Statistics in Medicine
    1998;17:2635-2650) for the paired difference d = (c - b) / n.

    Counts of the n = both + b + c + neither paired questions: ``both`` right in both cells,
    ``b`` only the baseline, ``c`` only the treatment, ``neither``. With the two accuracies
    p1 = (both + c) / n (treatment) and p2 = (both + b) / n (baseline), their Wilson intervals
    (l1, u1) and (l2, u2), and the continuity-corrected correlation of the two cells

        phi = C / sqrt((both + c)(b + neither)(both + b)(c + neither)),
        C = B - n/2 if B > n/2;  0 if 0 <= B <= n/2;  B if B < 0;  B = both*neither - b*c
        (phi = 0 when a margin is empty),

    the limits are

        low  = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = d + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2).

    Unlike a bootstrap of the questions, it does not treat the observed discordant counts as
    the whole truth: with b = 0 and c = 1 it reaches below 0 (the bootstrap cannot, since no
    resample has a question only the baseline got right), and it has width > 0 even when
    b = c = 0. It stays within [-1, 1] (|phi| <= 1 bounds each half-width by the two Wilson
    half-widths) and has near-nominal coverage down to a few discordant pairs (Newcombe 1998;
    Fagerland, Lydersen & Laake, Statistics in Medicine 2014;33:2850-2875).

    It is not the inversion of the exact McNemar test, which is the more conservative of the
    two: over a grid of tables with n in {50, 100, 300, 1000} and b, c <= 60, 2-4% get an interval
    that excludes 0 while the exact p is between 0.05 and 0.08 (up to 0.125 for n <= 20); the
    converse (p < 0.05 with 0 inside the interval) does not occur. Significance in the report
    follows the p-value.
    (nan, nan) when n = 0.
    """
    counts = (both, b, c, neither)
    if min(counts) < 0:
        raise ValueError(f"paired counts must be >= 0, got both={both}, b={b}, c={c}, neither={neither}")
    n = sum(counts)
    if n == 0:
        return math.nan, math.nan
    p1, p2 = (both + c) / n, (both + b) / n
    l1, u1 = wilson_interval(both + c, n, z)
    l2, u2 = wilson_interval(both + b, n, z)
    margins = (both + c) * (b + neither) * (both + b) * (c + neither)
    cross = both * neither - b * c
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    d = (c - b) / n
    # max(0, .): the radicands are >= 0 in exact arithmetic; rounding can leave -1e-17.
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, d - below), min(1.0, d + above)  # the clamp only absorbs rounding


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (controls the family-wise error rate).

    Sort the m valid p-values ascending, p_(1) <= ... <= p_(m); the adjusted value of the
    j-th is  max_{i <= j} min(1, (m - i + 1) p_(i))  (the running maximum keeps the order).
    Returned in the input order; ``None``/NaN entries are left out of the family and stay None.
    """
    valid = [(p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    valid.sort()
    m = len(valid)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


# ----------------------------------------------------------------------------- one comparison


@dataclass
class PairedResult:
    """Everything the report shows for one cell against its baseline, on the paired questions."""

    paired_n: int
    b: int
    c: int
    baseline_accuracy: float  # over the paired questions
    treatment_accuracy: float  # over the paired questions
    diff: float  # treatment_accuracy - baseline_accuracy = (c - b) / paired_n
    ci_low: float  # 95% Newcombe hybrid score interval of diff (newcombe_interval)
    ci_high: float
    p_mcnemar: float
    pairing: Pairing


def compare_paired(baseline: list[dict], treatment: list[dict]) -> PairedResult:
    """Pair two cells' records and compute the difference, its Newcombe 95% CI and McNemar's p."""
    return compare_pairing(pair_records(baseline, treatment))


def compare_pairing(pairing: Pairing) -> PairedResult:
    n = pairing.paired_n
    b, c = discordant_counts(pairing.baseline, pairing.treatment)
    both = int(np.sum(pairing.baseline & pairing.treatment))
    low, high = newcombe_interval(b, c, both, n - both - b - c)
    return PairedResult(
        paired_n=n, b=b, c=c,
        baseline_accuracy=float(pairing.baseline.mean()) if n else math.nan,
        treatment_accuracy=float(pairing.treatment.mean()) if n else math.nan,
        diff=(c - b) / n if n else math.nan,
        ci_low=low, ci_high=high,
        p_mcnemar=mcnemar_exact(b, c) if n else math.nan,
        pairing=pairing,
    )
