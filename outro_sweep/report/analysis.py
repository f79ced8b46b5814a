"""The numbers of a report: each cell's accuracy, and each OutRo cell against its baseline.

Accuracy and its Wilson interval are recomputed from ``predictions.jsonl`` (the cell's source
of truth, the same numbers as its metrics.json). The comparison with the baseline is paired
on (id, prompt_hash) (``paired.py``), over each question as the benchmark orders its options
(rotation 0); a circular cell (``benchmark.circular=true``) is also compared on its questions'
circular correctness, paired on question_id; a cloze-scored cell (``benchmark.scoring=cloze``)
also on acc_norm, the same way. Holm's correction, when asked for, runs over
every cell of this report that has a comparison.
Each cell's answer-letter statistics and flags (``outro_sweep.scoring.letter_stats``) and each
comparison's letter-bias decomposition (``letter_bias.py``) come from the same rotation-0 records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from outro_sweep.report.baselines import BaselineMatch, find_baselines
from outro_sweep.report.collect import ReportCell, Store
from outro_sweep.report.letter_bias import LetterShift, letter_shift
from outro_sweep.report.paired import (
    PairedResult,
    compare_paired,
    holm,
    wilson,
)
from outro_sweep.report.settings import (
    Labeller,
    axis_value,
    baseline_of,
    choice_name,
    grid_axes,
    intervention_enabled,
    layer_label,
    layer_sort_key,
)
from outro_sweep.scoring.circular import circular_outcomes, is_circular, question_records
from outro_sweep.scoring.letter_stats import LETTER_FIELDS, LetterStats, has_letter_fields, letter_stats
from outro_sweep.scoring.stats import accuracy_summary

SIGNIFICANCE = 0.05


@dataclass
class CellResult:
    cell: ReportCell
    n: int | None = None
    correct: int | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    baseline: ReportCell | None = None
    baseline_note: str = ""
    paired: PairedResult | None = None  # over rotation-0 records (each question as the benchmark orders it)
    # benchmark.circular=true: {accuracy, ci_low, ci_high, n, correct} over the questions, right
    # only if every rotation is; and the paired comparison of that correctness with the baseline's
    circular: dict | None = None
    paired_circular: PairedResult | None = None
    p_holm: float | None = None
    notes: list[str] = field(default_factory=list)
    letters: LetterStats | None = None  # answer letters, invalid answers, chance
    flags: list[str] = field(default_factory=list)  # letter_stats' codes: letter_bias, ci_contains_chance
    letter_shift: LetterShift | None = None  # how much of the paired difference is a letter shift
    # benchmark.scoring=cloze: lm-eval's acc_norm (the option with the highest log-likelihood per
    # character), {accuracy, ci_low, ci_high, n, correct}, and its paired comparison with the baseline's
    acc_norm: dict | None = None
    paired_norm: PairedResult | None = None

    @property
    def enabled(self) -> bool:
        return self.cell.config is not None and intervention_enabled(self.cell.config)

    def p_value(self, use_holm: bool) -> float | None:
        """The p-value significance is judged on: Holm-adjusted or raw exact McNemar."""
        if self.paired is None or math.isnan(self.paired.p_mcnemar):
            return None
        return self.p_holm if use_holm else self.paired.p_mcnemar

    def significant(self, use_holm: bool) -> bool:
        p = self.p_value(use_holm)
        return p is not None and p < SIGNIFICANCE


@dataclass
class Analysis:
    results: list[CellResult]
    labeller: Labeller
    baselines: dict[str, BaselineMatch]
    holm: bool
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> list[CellResult]:
        return [r for r in self.results if r.paired is not None]


def sort_key(cell: ReportCell, labeller: Labeller):
    config = cell.config
    if config is None:
        return (1, "", "", "", 0, "", "", (0, 0, ""), math.inf, ",".join(cell.overrides))
    on = intervention_enabled(config)
    axes = grid_axes(config)
    row, column = (axis_value(config, axes[0]), axis_value(config, axes[1])) if axes else (None, None)
    return (0, labeller.group_label(config, "model"), labeller.group_label(config, "benchmark"),
            labeller.other_settings(config), int(on), labeller.group_label(config, "sink") if on else "",
            labeller.intervention_settings(config) if on else "",
            layer_sort_key(layer_label(row)) if on else (0, 0, ""),
            float(column) if on and isinstance(column, (int, float)) else math.inf, cell.identity or "")


def analyse(cells: list[ReportCell], store: Store, use_holm: bool = False) -> Analysis:
    baselines = find_baselines(cells, store)
    # Baselines found in the store are rows too (marked "from the cell store").
    known = {c.identity for c in cells}
    for match in baselines.values():
        if match.baseline is not None and match.baseline.identity not in known:
            cells = [*cells, match.baseline]
            known.add(match.baseline.identity)
    labeller = Labeller([c.config for c in cells if c.config is not None])
    ordered = sorted(cells, key=lambda c: sort_key(c, labeller))
    results = []
    for cell in ordered:
        result = CellResult(cell)
        records = cell.records() if cell.state == "done" else None
        every = cell.all_records() if records else None  # every rotation of a circular cell
        if every and not is_circular(every):
            every = None
        if every:
            result.circular = accuracy_summary(list(circular_outcomes(every).values()))
        if records and has_acc_norm(records):
            result.acc_norm = accuracy_summary([bool(r["correct_norm"]) for r in records])
        if records:
            correct = [bool(r["correct"]) for r in records]
            result.n, result.correct = len(correct), sum(correct)
            result.accuracy = result.correct / result.n
            result.ci_low, result.ci_high = wilson(result.correct, result.n)
            if has_letter_fields(records):
                result.letters = letter_stats(records, result.ci_low, result.ci_high)
            else:
                result.notes.append("no letter statistics: predictions.jsonl lacks " + ", ".join(LETTER_FIELDS))
        elif cell.state == "done":
            metrics = cell.metrics()
            if "accuracy" in metrics:  # predictions unreadable: the cell's own numbers, unpaired
                result.n, result.correct = metrics.get("n"), metrics.get("correct")
                result.accuracy, result.ci_low, result.ci_high = (metrics["accuracy"], metrics.get("ci_low"),
                                                                  metrics.get("ci_high"))
                result.notes.append("accuracy from metrics.json (predictions unreadable)")
                result.letters = LetterStats.from_metrics(metrics)
        result.flags = list(result.letters.flags) if result.letters is not None else []
        if result.enabled:
            match = baselines.get(baseline_of(cell.config))
            if match is not None:
                result.baseline, result.baseline_note = match.baseline, match.note
            base_records = match.baseline.records() if match is not None and match.baseline is not None else None
            if records and base_records:
                result.paired = compare_paired(base_records, records)
                base_every = match.baseline.all_records()
                if every and is_circular(base_every):  # the baseline of a circular cell is circular
                    paired_circular = compare_paired(question_records(base_every), question_records(every))
                    result.paired_circular = paired_circular if paired_circular.paired_n else None
                if has_acc_norm(records) and has_acc_norm(base_records):
                    result.paired_norm = compare_paired(as_acc_norm(base_records), as_acc_norm(records))
                result.notes.extend(result.paired.pairing.notes())
                if result.paired.paired_n == 0:
                    result.notes.append("no question in common with the baseline")
                    result.paired = None
                elif result.letters is not None and has_letter_fields(base_records):
                    result.letter_shift = letter_shift(base_records, records, result.paired.pairing.ids)
                    if result.letter_shift is not None and result.letter_shift.mostly_shift:
                        result.notes.append(result.letter_shift.note())
            elif cell.state == "done" and match is not None and match.baseline is None:
                result.notes.append("no baseline: " + match.note)
            elif cell.state == "done" and match is not None and not base_records:
                result.notes.append(f"baseline {match.baseline.identity} has no readable predictions")
        results.append(result)
    adjusted = holm([r.paired.p_mcnemar if r.paired is not None else None for r in results])
    for result, p in zip(results, adjusted):
        result.p_holm = p
    analysis = Analysis(results, labeller, baselines, use_holm)
    for key, match in baselines.items():
        if match.baseline is None:
            example = next(r.cell.config for r in results if r.cell.config is not None and r.enabled
                           and baseline_of(r.cell.config) == key)
            analysis.notes.append(
                f"no baseline for model {labeller.group_label(example, 'model')} on benchmark "
                f"{labeller.group_label(example, 'benchmark')}: {match.note}; no differences computed "
                "(run the same cells with every intervention off, e.g. outro=off)")
        elif match.note:
            analysis.notes.append(match.note)
    return analysis


def has_acc_norm(records: list[dict]) -> bool:
    """Whether the records are cloze-scored (each carries acc_norm's ``correct_norm``)."""
    return bool(records) and all("correct_norm" in r for r in records)


def as_acc_norm(records: list[dict]) -> list[dict]:
    """The records with acc_norm's correctness as ``correct``, for the same paired statistics."""
    return [{**r, "correct": bool(r["correct_norm"])} for r in records]


def model_and_benchmark(config: dict) -> tuple[str, str]:
    return choice_name(config, "model"), choice_name(config, "benchmark")
