"""The numbers of a report: each cell's accuracy, and each OutRo cell against its baseline.

Accuracy and its Wilson interval are recomputed from ``predictions.jsonl`` (the cell's source
of truth, the same numbers as its metrics.json). The comparison with the baseline is paired
on (id, prompt_hash) (``paired.py``); Holm's correction, when asked for, runs over every cell
of this report that has a comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from outro_sweep.report.baselines import BaselineMatch, find_baselines
from outro_sweep.report.collect import ReportCell, Store
from outro_sweep.report.paired import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
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
    paired: PairedResult | None = None
    p_holm: float | None = None
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

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
    n_resamples: int
    seed: int
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


def analyse(cells: list[ReportCell], store: Store, use_holm: bool = False,
            n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Analysis:
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
        if records:
            correct = [bool(r["correct"]) for r in records]
            result.n, result.correct = len(correct), sum(correct)
            result.accuracy = result.correct / result.n
            result.ci_low, result.ci_high = wilson(result.correct, result.n)
        elif cell.state == "done":
            metrics = cell.metrics()
            if "accuracy" in metrics:  # predictions unreadable: the cell's own numbers, unpaired
                result.n, result.correct = metrics.get("n"), metrics.get("correct")
                result.accuracy, result.ci_low, result.ci_high = (metrics["accuracy"], metrics.get("ci_low"),
                                                                  metrics.get("ci_high"))
                result.notes.append("accuracy from metrics.json (predictions unreadable)")
        if result.enabled:
            match = baselines.get(baseline_of(cell.config))
            if match is not None:
                result.baseline, result.baseline_note = match.baseline, match.note
            base_records = match.baseline.records() if match is not None and match.baseline is not None else None
            if records and base_records:
                result.paired = compare_paired(base_records, records, n_resamples, seed)
                result.notes.extend(result.paired.pairing.notes())
                if result.paired.paired_n == 0:
                    result.notes.append("no question in common with the baseline")
                    result.paired = None
            elif cell.state == "done" and match is not None and match.baseline is None:
                result.notes.append("no baseline: " + match.note)
            elif cell.state == "done" and match is not None and not base_records:
                result.notes.append(f"baseline {match.baseline.identity} has no readable predictions")
        results.append(result)
    adjusted = holm([r.paired.p_mcnemar if r.paired is not None else None for r in results])
    for result, p in zip(results, adjusted):
        result.p_holm = p
    analysis = Analysis(results, labeller, baselines, use_holm, n_resamples, seed)
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


def model_and_benchmark(config: dict) -> tuple[str, str]:
    return choice_name(config, "model"), choice_name(config, "benchmark")
