"""The report's answer in one line per compared cell, printed at the end of every sweep:

    outro (layer auto, alpha 3) vs stock: -2.3 pp [-5.1, +0.4], McNemar p=0.11, n=200

then, after semicolons, the note that the difference is mostly a shift toward one answer letter
(``letter_bias.py``) where it is, and the flags of the cell and of its baseline where they have
any (``⚠ bias A 97%``: one letter answers most questions; ``≈ chance``: the accuracy's interval
holds chance). Also written to ``<report>/verdict.txt``.
"""

from __future__ import annotations

from outro_sweep.report.analysis import Analysis, CellResult
from outro_sweep.report.settings import axis_value, grid_axes, layer_label, number_label
from outro_sweep.scoring.letter_stats import flag_words

VERDICT_TXT = "verdict.txt"


def cell_label(result: CellResult, analysis: Analysis) -> str:
    """``outro (layer auto, alpha 3)``: the active interventions and the cell's grid values, plus
    what else tells it apart from the other compared cells."""
    config = result.cell.config
    axes = grid_axes(config)
    labels = (layer_label, number_label)  # rows may be lists or words (auto), columns numbers
    parts = [f"{axis.split('.', 1)[1]} {label(axis_value(config, axis))}" for axis, label in zip(axes, labels)]
    extra = analysis.labeller.intervention_settings(config)
    if extra:
        parts.append(extra)
    label = analysis.labeller.interventions(config)
    return f"{label} ({', '.join(parts)})" if parts else label


def _warnings(result: CellResult, analysis: Analysis) -> str:
    """``cell ⚠ bias A 100%, ≈ chance; baseline ≈ chance``: the flags of both sides, or ""."""
    baseline = next((r for r in analysis.results if result.baseline is not None
                     and r.cell.identity == result.baseline.identity), None)
    parts = []
    for side, flagged in (("cell", result), ("baseline", baseline)):
        letters = flagged.letters if flagged is not None else None
        if letters is not None and letters.flags:
            parts.append(f"{side} {flag_words(letters.flags, letters.top_letter, letters.top_letter_share)}")
    return "; ".join(parts)


def verdict_lines(analysis: Analysis) -> list[str]:
    lines = []
    use_holm = analysis.holm
    for result in analysis.compared:
        warnings = _warnings(result, analysis)
        paired = result.paired
        p = result.p_value(use_holm)
        lines.append(
            f"{cell_label(result, analysis)} vs stock: {100 * paired.diff:+.1f} pp "
            f"[{100 * paired.ci_low:+.1f}, {100 * paired.ci_high:+.1f}], "
            f"{'Holm-adjusted ' if use_holm else ''}McNemar p={p:.2g}, n={paired.paired_n}"
            + (f"; {result.letter_shift.note()}" if result.letter_shift is not None and result.letter_shift.mostly_shift
               else "")
            + (f"; {warnings}" if warnings else "")
        )
    return lines
