"""The report's main table: one row per cell, as ``table.csv`` (every number at full
precision) and ``table.md`` (rounded, with the notes, the statistics used and the figures)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from outro_sweep.report.analysis import SIGNIFICANCE, Analysis, CellResult
from outro_sweep.report.settings import (
    axis_value,
    defines_cell,
    grid_axes,
    intervention_enabled,
    layer_label,
    number_label,
    short_value,
)

COLUMNS = [
    "identity", "state", "jobs",
    "model", "benchmark", "benchmark_settings", "sink",
    "interventions", "grid_row", "grid_column", "intervention_settings", "other_settings",
    "n", "correct", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
    "baseline", "baseline_n", "paired_n", "baseline_accuracy", "intervention_accuracy_paired",
    "b_baseline_only", "c_intervention_only", "diff", "diff_ci_low", "diff_ci_high",
    "p_mcnemar", "p_holm", "significant", "note",
]


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
    out = dict.fromkeys(COLUMNS, "")
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
    if result.baseline is not None:
        base_n = sum(1 for _ in (result.baseline.records() or []))
        out.update(baseline=result.baseline.identity, baseline_n=base_n or "")
    paired = result.paired
    if paired is not None:
        out.update(paired_n=paired.paired_n, baseline_accuracy=paired.baseline_accuracy,
                   intervention_accuracy_paired=paired.treatment_accuracy, b_baseline_only=paired.b,
                   c_intervention_only=paired.c, diff=paired.diff, diff_ci_low=paired.ci_low, diff_ci_high=paired.ci_high,
                   p_mcnemar=paired.p_mcnemar,
                   p_holm=result.p_holm if analysis.holm and result.p_holm is not None else "",
                   significant=str(result.significant(analysis.holm)).lower())
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


def markdown_table(table: list[dict], holm: bool, axes: tuple[str, str] = ("grid row", "grid column")) -> list[str]:
    """axes: the heatmap axes' names for the row/column headers (``outro.layer``, ``outro.alpha``)."""
    headers = ["sig", "model", "benchmark", "sink", "intervention", *axes, "settings", "state", "n",
               "accuracy % [95% CI]",
               "baseline % (paired)", "Δ pp [95% bootstrap CI]", "b / c", "p (McNemar)"]
    if holm:
        headers.append("p (Holm)")
    headers += ["other", "note", "cell"]
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
                 str(entry["n"]), accuracy,
                 pct(entry["baseline_accuracy"]), diff,
                 f"{entry['b_baseline_only']} / {entry['c_intervention_only']}" if entry["b_baseline_only"] != "" else "",
                 p_text(entry["p_mcnemar"])]
        if holm:
            cells.append(p_text(entry["p_holm"]))
        cells += [entry["other_settings"], entry["note"], entry["identity"]]
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
         "(`id`, `prompt_hash`), in percentage points, with a paired bootstrap 95% percentile interval "
         f"({analysis.n_resamples} resamples of the questions, seed {analysis.seed})."),
        ("- **b / c**: questions only the baseline / only the cell answered correctly; **p**: exact two-sided McNemar "
         "test, p = min(1, 2·P(X ≤ min(b, c))), X ~ Binomial(b + c, 1/2)."),
        f"- **\\***: significant, p < {SIGNIFICANCE} ({correction}).", "",
    ]
    if notes:
        lines += ["## Notes", ""] + [f"- {md_escape(n)}" for n in notes] + [""]
    axes = {grid_axes(r.cell.config) for r in analysis.results if r.cell.config is not None and r.enabled}
    headers = axes.pop() if len(axes) == 1 else ("grid row", "grid column")
    lines += ["## Cells", ""] + markdown_table(table, analysis.holm, headers) + [""]
    grids = [f for f in figures if not f.name.startswith("sinks_")]
    sinks = [f for f in figures if f.name.startswith("sinks_")]
    if grids:
        lines += ["## Heatmaps", ""] + [f"![{f.stem}]({f.name})\n" for f in grids]
    if sinks:
        lines += ["## Sink diagnostics (one figure per cell that recorded sinks)", ""]
        lines += [f"- [{f.name}]({f.name})" for f in sinks] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
