"""Paired statistics for "is the gain real?": one OutRo cell against its baseline cell.

Both cells answered the same questions, so the comparison is paired per question; that is
far more sensitive than comparing two accuracies with independent intervals, because most
questions are answered the same way by both. Pure Python plus numpy, no scipy.

Notation for one comparison over the ``n`` paired questions: ``a_i`` = 1 when the baseline
answered question i correctly, ``t_i`` = 1 when the OutRo cell did;
``b`` = #{a_i = 1, t_i = 0} (only the baseline right), ``c`` = #{a_i = 0, t_i = 1} (only OutRo
right). The accuracy difference is ``d = (c - b) / n = mean(t) - mean(a)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from outro_sweep.scoring.stats import Z_95, wilson_interval

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
# Indices drawn per bootstrap chunk (resamples x questions): bounds the memory at ~16 MB.
_CHUNK_ELEMENTS = 2_000_000

__all__ = [
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "PairedResult",
    "Pairing",
    "compare_paired",
    "discordant_counts",
    "holm",
    "mcnemar_exact",
    "pair_records",
    "paired_bootstrap_ci",
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


def paired_bootstrap_ci(baseline, treatment, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the paired accuracy difference mean(t) - mean(a).

    With d_i = t_i - a_i in {-1, 0, 1}: draw ``n_resamples`` sets of n question indices with
    replacement (one ``numpy.random.Generator(PCG64(seed))``, vectorised in chunks), take
    each set's mean of d, and return the (1 - level)/2 and (1 + level)/2 quantiles of those
    means (numpy's default linear interpolation). Resampling questions, not the two cells
    separately, keeps the pairing. Same inputs and seed -> the same interval.
    (nan, nan) when there are no paired questions.
    """
    a = np.asarray(baseline, dtype=np.int8)
    t = np.asarray(treatment, dtype=np.int8)
    if a.shape != t.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {t.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    d = (t - a).astype(np.int32)
    n = d.size
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[indices].sum(axis=1) / n
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


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
    ci_low: float
    ci_high: float
    p_mcnemar: float
    pairing: Pairing


def compare_paired(baseline: list[dict], treatment: list[dict], n_resamples: int = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> PairedResult:
    """Pair two cells' records and compute the difference, its bootstrap CI and McNemar's p."""
    pairing = pair_records(baseline, treatment)
    return compare_pairing(pairing, n_resamples, seed)


def compare_pairing(pairing: Pairing, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> PairedResult:
    n = pairing.paired_n
    b, c = discordant_counts(pairing.baseline, pairing.treatment)
    low, high = paired_bootstrap_ci(pairing.baseline, pairing.treatment, n_resamples, seed)
    return PairedResult(
        paired_n=n, b=b, c=c,
        baseline_accuracy=float(pairing.baseline.mean()) if n else math.nan,
        treatment_accuracy=float(pairing.treatment.mean()) if n else math.nan,
        diff=(c - b) / n if n else math.nan,
        ci_low=low, ci_high=high,
        p_mcnemar=mcnemar_exact(b, c) if n else math.nan,
        pairing=pairing,
    )
