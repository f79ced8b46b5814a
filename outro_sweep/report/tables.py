"""The report's main table: one row per cell, as ``table.csv`` (every number at full
precision) and ``table.md`` (rounded, with the notes, the statistics used and the figures).
Letter distributions are written ``"A:120 B:60 C:20"``; flags as their codes in the CSV
(``letter_bias;ci_contains_chance``) and as warnings in the markdown (``⚠ bias A 91%``,
``≈ chance``)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from outro_sweep.report.analysis import SIGNIFICANCE, Analysis, CellResult
from outro_sweep.report.letter_bias import MOSTLY
from outro_sweep.report.paired import INTERVAL_METHOD
from outro_sweep.report.settings import (
    axis_value,
    defines_cell,
    grid_axes,
    intervention_enabled,
    layer_label,
    number_label,
    short_value,
)
from outro_sweep.scoring.letter_stats import LETTER_BIAS_SHARE, flag_words

COLUMNS = [
    "identity", "state", "jobs",
    "model", "benchmark", "benchmark_settings", "sink",
    "interventions", "grid_row", "grid_column", "intervention_settings", "other_settings",
    "n", "correct", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
    "invalid", "invalid_rate", "chance", "top_letter", "top_letter_share", "predicted_letters", "target_letters",
    "flags",
    "baseline", "baseline_n", "paired_n", "baseline_accuracy", "intervention_accuracy_paired",
    "b_baseline_only", "c_intervention_only", "diff", "diff_ci_low", "diff_ci_high",
    "p_mcnemar", "p_holm", "significant",
    # The letter-bias decomposition of diff (report/letter_bias.py): L = shift_letter.
    "shift_letter", "shift_letter_baseline_share", "shift_letter_share", "diff_target_letter", "diff_other_targets",
    "note",
]
# benchmark.circular=true (CircularEval): the circular view beside the plain one, in reports
# with a circular cell. b/c/diff/p as above, over questions that are right only if every rotation is.
CIRCULAR_COLUMNS = [
    "circular_n", "circular_correct", "circular_accuracy", "circular_ci_low", "circular_ci_high",
    "circular_paired_n", "circular_baseline_accuracy", "circular_b_baseline_only", "circular_c_intervention_only",
    "circular_diff", "circular_diff_ci_low", "circular_diff_ci_high", "circular_p_mcnemar",
]

# benchmark.scoring=cloze: lm-eval's acc_norm beside acc (``accuracy``), in reports with a cloze
# cell; b/c/diff/p as above, over the same paired questions.
ACC_NORM_COLUMNS = [
    "acc_norm", "acc_norm_ci_low", "acc_norm_ci_high", "acc_norm_baseline_accuracy", "acc_norm_b_baseline_only",
    "acc_norm_c_intervention_only", "acc_norm_diff", "acc_norm_diff_ci_low", "acc_norm_diff_ci_high",
    "acc_norm_p_mcnemar",
]


def has_circular(analysis: Analysis) -> bool:
    return any(r.circular is not None for r in analysis.results)


def has_acc_norm(analysis: Analysis) -> bool:
    return any(r.acc_norm is not None for r in analysis.results)


def columns(analysis: Analysis) -> list[str]:
    """The table's columns: ``COLUMNS``, with the circular and acc_norm ones after the plain
    accuracy where some cell is circular / cloze-scored."""
    at = COLUMNS.index("accuracy_ci_high") + 1
    extra = (CIRCULAR_COLUMNS if has_circular(analysis) else []) + (ACC_NORM_COLUMNS if has_acc_norm(analysis) else [])
    return [*COLUMNS[:at], *extra, *COLUMNS[at:]]


def distribution(counts: dict[str, int] | None) -> str:
    """``{"A": 120, "B": 60}`` -> ``"A:120 B:60"``."""
    return " ".join(f"{letter}:{count}" for letter, count in (counts or {}).items())


def _from_overrides(overrides: list[str]) -> dict:
    """Settings of a cell that has no config.yaml, from its overrides (best effort): the groups
    in their columns, every other defining override under other_settings."""
    values = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    shown = {"model", "benchmark", "sink"}
    return {
        "model": values.get("model", ""), "benchmark": values.get("benchmark", ""), "sink": values.get("sink", ""),
        "other_settings": ", ".join(
            f"{key.lstrip('+~')}={short_value(value)}"
            for key, value in (o.split("=", 1) for o in overrides if "=" in o)
            if defines_cell(key) and key.lstrip("+~") not in shown),
    }


def grid_labels(config: dict) -> tuple[str, str]:
    """The cell's values on its heatmap's axes, as labels ("auto", "3"); blank for a baseline."""
    axes = grid_axes(config)
    if not axes:
        return "", ""
    return layer_label(axis_value(config, axes[0])), number_label(axis_value(config, axes[1]))


def row(result: CellResult, analysis: Analysis) -> dict:
    cell, labeller = result.cell, analysis.labeller
    out = dict.fromkeys(COLUMNS + CIRCULAR_COLUMNS + ACC_NORM_COLUMNS, "")
    out.update(identity=cell.identity or "", state=cell.state, jobs="; ".join(cell.jobs))
    config = cell.config
    if config is not None:
        on = intervention_enabled(config)
        row_label, column_label = grid_labels(config)
        out.update(
            model=labeller.group_label(config, "model"),
            benchmark=labeller.group_label(config, "benchmark", with_settings=False),
            benchmark_settings=labeller.group_settings(config, "benchmark"),
            sink=labeller.group_label(config, "sink") if on else "-",
            interventions=labeller.interventions(config),
            grid_row=row_label if on else "-",
            grid_column=column_label if on else "-",
            intervention_settings=labeller.intervention_settings(config) if on else "-",
            other_settings=labeller.other_settings(config),
        )
    else:
        out.update(_from_overrides(cell.overrides), interventions="off" if cell.planned_baseline else "")
    if result.n is not None:
        out.update(n=result.n, correct=result.correct, accuracy=result.accuracy,
                   accuracy_ci_low=result.ci_low, accuracy_ci_high=result.ci_high)
    letters = result.letters
    if letters is not None:
        out.update(invalid=letters.invalid, invalid_rate=letters.invalid_rate, chance=letters.chance,
                   top_letter=letters.top_letter, top_letter_share=letters.top_letter_share,
                   predicted_letters=distribution(letters.predicted_letters),
                   target_letters=distribution(letters.target_letters), flags=";".join(result.flags))
    if result.baseline is not None:
        base_n = sum(1 for _ in (result.baseline.records() or []))
        out.update(baseline=result.baseline.identity, baseline_n=base_n or "")
    if result.circular is not None:
        circular = result.circular
        out.update(circular_n=circular["n"], circular_correct=circular["correct"],
                   circular_accuracy=circular["accuracy"], circular_ci_low=circular["ci_low"],
                   circular_ci_high=circular["ci_high"])
    if result.paired_circular is not None:
        pc = result.paired_circular
        out.update(circular_paired_n=pc.paired_n, circular_baseline_accuracy=pc.baseline_accuracy,
                   circular_b_baseline_only=pc.b, circular_c_intervention_only=pc.c, circular_diff=pc.diff,
                   circular_diff_ci_low=pc.ci_low, circular_diff_ci_high=pc.ci_high,
                   circular_p_mcnemar=pc.p_mcnemar)
    if result.acc_norm is not None:
        out.update(acc_norm=result.acc_norm["accuracy"], acc_norm_ci_low=result.acc_norm["ci_low"],
                   acc_norm_ci_high=result.acc_norm["ci_high"])
    if result.paired_norm is not None:
        pn = result.paired_norm
        out.update(acc_norm_baseline_accuracy=pn.baseline_accuracy, acc_norm_b_baseline_only=pn.b,
                   acc_norm_c_intervention_only=pn.c, acc_norm_diff=pn.diff, acc_norm_diff_ci_low=pn.ci_low,
                   acc_norm_diff_ci_high=pn.ci_high, acc_norm_p_mcnemar=pn.p_mcnemar)
    paired = result.paired
    if paired is not None:
        out.update(paired_n=paired.paired_n, baseline_accuracy=paired.baseline_accuracy,
                   intervention_accuracy_paired=paired.treatment_accuracy, b_baseline_only=paired.b,
                   c_intervention_only=paired.c, diff=paired.diff, diff_ci_low=paired.ci_low, diff_ci_high=paired.ci_high,
                   p_mcnemar=paired.p_mcnemar,
                   p_holm=result.p_holm if analysis.holm and result.p_holm is not None else "",
                   significant=str(result.significant(analysis.holm)).lower())
    shift = result.letter_shift
    if shift is not None:
        out.update(shift_letter=shift.letter, shift_letter_baseline_share=shift.baseline_share,
                   shift_letter_share=shift.treatment_share, diff_target_letter=shift.diff_letter,
                   diff_other_targets=shift.diff_rest)
    notes = list(cell.notes) + list(result.notes)
    if config is not None and not intervention_enabled(config):
        notes.insert(0, "baseline (every intervention off)")
    if cell.error:
        notes.append(f"error: {cell.error}")
    if cell.from_store:
        notes.append("from the cell store")
    if config is None and cell.overrides:
        notes.append("overrides: " + " ".join(o for o in cell.overrides if defines_cell(o.split("=", 1)[0])))
    out["note"] = "; ".join(dict.fromkeys(n for n in notes if n))
    return out


def rows(analysis: Analysis) -> list[dict]:
    return [row(result, analysis) for result in analysis.results]


def write_csv(path: Path, table: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for entry in table:
            writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})


# ----------------------------------------------------------------------------- markdown


def pct(value, digits: int = 1) -> str:
    if value in ("", None) or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.{digits}f}"


def signed_pp(value) -> str:
    return "" if value in ("", None) or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:+.1f}"


def p_text(value) -> str:
    if value in ("", None):
        return ""
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def flag_text(entry: dict) -> str:
    """The visible warnings of a row: ``⚠ bias A 91%, ≈ chance``."""
    share = entry["top_letter_share"]
    return flag_words(entry["flags"].split(";") if entry["flags"] else [], entry["top_letter"],
                      share if share != "" else None)


def shift_text(entry: dict) -> str:
    """``A: +20.0 (-5.0); 50% → 90%``: Δ from the questions whose target is L, the rest, and
    L's share of the answers in the baseline and the cell."""
    if entry["shift_letter"] == "":
        return ""
    return (f"{entry['shift_letter']}: {signed_pp(entry['diff_target_letter'])} "
            f"({signed_pp(entry['diff_other_targets'])}); "
            f"{pct(entry['shift_letter_baseline_share'], 0)}% → {pct(entry['shift_letter_share'], 0)}%")


def _interval(entry: dict, value: str, low: str, high: str, show=pct) -> str:
    return f"{show(entry[value])} [{show(entry[low])}, {show(entry[high])}]" if entry[value] != "" else ""


def markdown_table(table: list[dict], holm: bool, axes: tuple[str, str] = ("grid row", "grid column"),
                   circular: bool = False, acc_norm: bool = False) -> list[str]:
    """axes: the heatmap axes' names for the row/column headers (``outro.layer``, ``outro.alpha``);
    circular: add the circular accuracy and its paired Δ (a report with a circular cell);
    acc_norm: add acc_norm and its paired Δ (a report with a cloze-scored cell)."""
    headers = ["sig", "model", "benchmark", "sink", "intervention", *axes, "settings", "state", "n",
               "accuracy % [95% CI]", "flag", "invalid %", "chance %", "top letter", "targets"]
    if circular:
        headers.append("circular % [95% CI]")
    headers += ["baseline % (paired)", "Δ pp [95% CI]", "b / c", "p (McNemar)"]
    if circular:
        headers += ["circular Δ pp [95% CI]", "circular b / c", "circular p"]
    if acc_norm:
        headers += ["acc_norm % [95% CI]", "acc_norm Δ pp [95% CI]", "acc_norm p"]
    if holm:
        headers.append("p (Holm)")
    headers += ["Δ from target-L pp (rest); L answers baseline → cell", "other", "note", "cell"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for entry in table:
        significant = entry["significant"] == "true"
        bench = entry["benchmark"] + (f" ({entry['benchmark_settings']})" if entry["benchmark_settings"] else "")
        accuracy = (f"{pct(entry['accuracy'])} [{pct(entry['accuracy_ci_low'])}, {pct(entry['accuracy_ci_high'])}]"
                    if entry["accuracy"] != "" else "")
        diff = (f"{signed_pp(entry['diff'])} [{signed_pp(entry['diff_ci_low'])}, {signed_pp(entry['diff_ci_high'])}]"
                if entry["diff"] != "" else "")
        if significant:
            diff = f"**{diff}**"
        cells = ["**\\***" if significant else "", entry["model"], bench, entry["sink"], entry["interventions"],
                 entry["grid_row"], entry["grid_column"], entry["intervention_settings"], entry["state"],
                 str(entry["n"]), accuracy, flag_text(entry), pct(entry["invalid_rate"]), pct(entry["chance"]),
                 f"{entry['top_letter']} {pct(entry['top_letter_share'], 0)}%" if entry["top_letter"] else "",
                 entry["target_letters"]]
        if circular:
            cells.append(_interval(entry, "circular_accuracy", "circular_ci_low", "circular_ci_high"))
        cells += [pct(entry["baseline_accuracy"]), diff,
                  f"{entry['b_baseline_only']} / {entry['c_intervention_only']}" if entry["b_baseline_only"] != "" else "",
                  p_text(entry["p_mcnemar"])]
        if circular:
            cells += [_interval(entry, "circular_diff", "circular_diff_ci_low", "circular_diff_ci_high", signed_pp),
                      (f"{entry['circular_b_baseline_only']} / {entry['circular_c_intervention_only']}"
                       if entry["circular_b_baseline_only"] != "" else ""),
                      p_text(entry["circular_p_mcnemar"])]
        if acc_norm:
            cells += [_interval(entry, "acc_norm", "acc_norm_ci_low", "acc_norm_ci_high"),
                      _interval(entry, "acc_norm_diff", "acc_norm_diff_ci_low", "acc_norm_diff_ci_high", signed_pp),
                      p_text(entry["acc_norm_p_mcnemar"])]
        if holm:
            cells.append(p_text(entry["p_holm"]))
        cells += [shift_text(entry), entry["other_settings"], entry["note"], entry["identity"]]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return lines


def write_markdown(path: Path, analysis: Analysis, table: list[dict], title: str, sources: list[str],
                   notes: list[str], figures: list[Path], settings: list[str] = ()) -> None:
    from collections import Counter

    states = Counter(entry["state"] for entry in table)
    compared = analysis.compared
    significant = sum(1 for r in compared if r.significant(analysis.holm))
    correction = (f"Holm-adjusted over the {len(compared)} comparisons" if analysis.holm
                  else "not corrected for multiple comparisons")
    lines = [
        f"# {title}", "",
        "Sources: " + ", ".join(f"`{s}`" for s in sources), "",
        *settings,
        (f"{len(table)} cells" + "".join(f", {states[s]} {s}" for s in ("done", "partial", "failed", "missing")
                                         if states[s]) + f"; {len(compared)} compared with a baseline, "
         f"{significant} significant (p < {SIGNIFICANCE}, {correction})."), "",
        "## How to read this", "",
        "- **accuracy**: over every question of the cell, with its 95% Wilson score interval.",
        ("- **baseline**: the cell with every intervention off and the same model, benchmark settings, seed, "
         "predict settings and judge (`baseline_identity` in the cell's `config.yaml`), from this report or the "
         "shared cell store. Its accuracy here is over the paired questions."),
        ("- **Δ**: the cell's accuracy minus its baseline's over the questions both answered, paired on "
         f"(`id`, `prompt_hash`), in percentage points. 95% CI: {INTERVAL_METHOD} (Newcombe 1998, method 10: the "
         "Wilson intervals of the two accuracies combined with their correlation); it stays honest with few "
         "discordant questions (b = 0, c = 1 gives an interval around 0). It is not the inverse of the McNemar "
         "test, which is more conservative: with p just above 0.05 the interval can exclude 0; the star follows p."),
        ("- **b / c**: questions only the baseline / only the cell answered correctly; **p**: exact two-sided McNemar "
         "test, p = min(1, 2·P(X ≤ min(b, c))), X ~ Binomial(b + c, 1/2)."),
        f"- **\\***: significant, p < {SIGNIFICANCE} ({correction}).",
        ("- **invalid**: answers from which no option could be read (counted wrong); **chance**: the accuracy of "
         "uniform guessing, the mean of 1/#options over the multiple-choice and yes/no questions; **top letter**: "
         "the most common answer letter and its share of the readable multiple-choice answers; **targets**: how "
         "many questions have each correct letter."),
        (f"- **⚠ bias X nn%**: the top letter X covers more than {100 * LETTER_BIAS_SHARE:.0f}% of the answers, so "
         "the accuracy tracks how many targets are X; **≈ chance**: the accuracy's 95% interval contains chance."),
        ("- **Δ from target-L**: L is the letter whose share of the answers rose most from the baseline to the cell "
         "(over the paired questions); the part of Δ from questions whose target is L, then (in brackets) the rest "
         "of Δ, then L's share of the answers in the baseline and the cell. Where the target-L part has Δ's sign "
         f"and is at least {100 * MOSTLY:.0f}% of Δ, the note says Δ is mostly a shift toward L: a letter habit, "
         "not a gain in understanding."), "",
    ]
    circular = has_circular(analysis)
    if circular:
        lines[-1:-1] = [
            ("- **circular** (`benchmark.circular=true`, MMBench's CircularEval): each multiple-choice question is "
             "asked once per rotation of its options and counts as right only if every rotation is; a shift in "
             "answer-letter bias moves the plain accuracy, not this one. The plain columns are over rotation 0 "
             "(the benchmark's own option order); **circular Δ** pairs the questions on `question_id`, with the "
             "same interval and test as Δ."),
        ]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_escape(n)}" for n in notes] + [""]
    axes = {grid_axes(r.cell.config) for r in analysis.results if r.cell.config is not None and r.enabled}
    headers = axes.pop() if len(axes) == 1 else ("grid row", "grid column")
    acc_norm = has_acc_norm(analysis)
    if acc_norm:
        lines[-1:-1] = [
            ("- **cloze** (`benchmark.scoring=cloze`): each option's text is scored by its log-likelihood as the "
             "continuation of the prompt (lm-eval's multiple_choice); **accuracy** is lm-eval's acc (the highest "
             "sum), **acc_norm** the highest sum per character of the option, each with its own paired Δ and p. "
             "There the **top letter** is the chosen option's position (A = first): a position bias, not a letter "
             "habit."),
        ]
    lines += ["## Cells", ""] + markdown_table(table, analysis.holm, headers, circular, acc_norm) + [""]
    grids = [f for f in figures if not f.name.startswith("sinks_")]
    sinks = [f for f in figures if f.name.startswith("sinks_")]
    if grids:
        lines += ["## Heatmaps", ""] + [f"![{f.stem}]({f.name})\n" for f in grids]
    if sinks:
        lines += ["## Sink diagnostics (one figure per cell that recorded sinks)", ""]
        lines += [f"- [{f.name}]({f.name})" for f in sinks] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
