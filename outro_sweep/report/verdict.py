"""The report's answer in one line per compared cell, printed at the end of every sweep:

    outro (layer auto, alpha 3) vs stock: -2.3 pp [-5.1, +0.4], McNemar p=0.11, n=200

then, after semicolons, the note that the difference is mostly a shift toward one answer letter
(``letter_bias.py``) where it is; acc_norm's paired difference for a cloze-scored cell; the
circular difference for a circular one; the flags of the cell and of its baseline where they
have any (``⚠ bias A 97%``: one letter answers most questions; ``⚠ position bias``: one option
position, under cloze scoring; ``≈ chance``: the accuracy's interval holds chance); and, where
both accuracies' intervals lie above chance, that they do. Also written to ``<report>/verdict.txt``.
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


def _baseline_result(result: CellResult, analysis: Analysis) -> CellResult | None:
    return next((r for r in analysis.results if result.baseline is not None
                 and r.cell.identity == result.baseline.identity), None)


def _above_chance(result: CellResult, analysis: Analysis) -> str:
    """``both above chance (25%): cell 61% [55, 67], baseline 60% [54, 65]`` where both
    accuracies' 95% intervals lie above chance, or ""."""
    sides = [("cell", result), ("baseline", _baseline_result(result, analysis))]
    chances = [side.letters.chance if side is not None and side.letters is not None else None for _, side in sides]
    if any(c is None for c in chances) or any(side.ci_low is None or side.ci_low <= c
                                              for (_, side), c in zip(sides, chances)):
        return ""
    shown = ", ".join(f"{name} {100 * side.accuracy:.0f}% [{100 * side.ci_low:.0f}, {100 * side.ci_high:.0f}]"
                      for name, side in sides)
    return f"both above chance ({100 * max(chances):.0f}%): {shown}"


def _acc_norm(result: CellResult) -> str:
    """``acc_norm +0.7 pp [-1.2, +2.5], p=0.61`` for a cloze-scored comparison, or ""."""
    paired = result.paired_norm
    if paired is None:
        return ""
    return (f"acc_norm {100 * paired.diff:+.1f} pp [{100 * paired.ci_low:+.1f}, {100 * paired.ci_high:+.1f}], "
            f"p={paired.p_mcnemar:.2g}")


def _warnings(result: CellResult, analysis: Analysis) -> str:
    """``cell ⚠ bias A 100%, ≈ chance; baseline ≈ chance``: the flags of both sides, or ""."""
    baseline = _baseline_result(result, analysis)
    parts = []
    for side, flagged in (("cell", result), ("baseline", baseline)):
        letters = flagged.letters if flagged is not None else None
        if letters is not None and letters.flags:
            parts.append(f"{side} {flag_words(letters.flags, letters.top_letter, letters.top_letter_share)}")
    if result.paired_circular is not None:  # CircularEval: the comparison a letter shift cannot move
        pc = result.paired_circular
        parts.insert(0, f"circular {100 * pc.diff:+.1f} pp [{100 * pc.ci_low:+.1f}, {100 * pc.ci_high:+.1f}], "
                        f"p={pc.p_mcnemar:.2g}")
    return "; ".join(parts)


def verdict_lines(analysis: Analysis) -> list[str]:
    lines = []
    use_holm = analysis.holm
    for result in analysis.compared:
        warnings = "; ".join(part for part in (_acc_norm(result), _warnings(result, analysis),
                                               _above_chance(result, analysis)) if part)
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
