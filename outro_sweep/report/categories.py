"""Accuracy per category per cell, and the paired difference from the baseline per category.

A record's categories: video benchmarks record ``categories`` ({name: value}, e.g. type,
duration, task; the record's ``category`` is the first of them, so it is not repeated); text
benchmarks record one ``category`` string, shown under the name ``category``.

Per category the difference is paired on (id, prompt_hash) exactly as for the whole cell;
the exact McNemar p-value is given uncorrected (exploratory: many small categories, no
multiple-comparison correction) and no interval is computed. A category with fewer than
``MIN_CATEGORY_N`` questions is marked ``small_n`` in the tables; the figures group such
categories into one "other" row (``category_groups``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from outro_sweep.report.analysis import Analysis
from outro_sweep.report.paired import discordant_counts, mcnemar_exact, pair_records
from outro_sweep.report.tables import md_escape, p_text, pct, signed_pp

COLUMNS = [
    "identity", "model", "benchmark", "sink", "interventions", "grid_row", "grid_column", "intervention_settings",
    "category", "value", "n", "correct", "accuracy",
    "baseline", "paired_n", "baseline_accuracy", "intervention_accuracy_paired", "diff",
    "b_baseline_only", "c_intervention_only", "p_mcnemar_uncorrected", "small_n",
]
MIN_CATEGORY_N = 20  # questions: on fewer, one answer moves a category's accuracy by more than 5 pp


def record_categories(record: dict) -> list[tuple[str, str]]:
    named = record.get("categories")
    if isinstance(named, dict) and named:
        return [(str(k), str(v)) for k, v in named.items()]
    if record.get("category") not in (None, ""):
        return [("category", str(record["category"]))]
    return []


def by_category(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups = defaultdict(list)
    for record in records:
        for label in record_categories(record):
            groups[label].append(record)
    return dict(sorted(groups.items()))


def question_counts(record_lists: list[list[dict]]) -> dict[tuple[str, str], int]:
    """Distinct questions (by id) per (category name, value) over several cells' records."""
    ids = defaultdict(set)
    for records in record_lists:
        for record in records:
            for label in record_categories(record):
                ids[label].add(record.get("id"))
    return {label: len(found) for label, found in sorted(ids.items())}


@dataclass(frozen=True)
class CategoryRow:
    """One row of a per-category figure: a category, or the small ones of a name grouped."""

    label: tuple[str, str]  # (category name, shown value)
    members: tuple[tuple[str, str], ...]  # the (name, value) categories it covers
    n: int  # questions
    small: bool  # n < MIN_CATEGORY_N even so

    def text(self) -> str:
        name, value = self.label
        return value if name == "category" else f"{name}={value}"


def category_groups(counts: dict[tuple[str, str], int], minimum: int = MIN_CATEGORY_N) -> list[CategoryRow]:
    """Rows for ``counts`` ({(name, value): questions}): per category name, every category of at
    least ``minimum`` questions as its own row, then two or more smaller ones as one row
    "other (k categories, n=N)"; a lone small category keeps its row, marked ``small``."""
    by_name = defaultdict(list)
    for label, n in counts.items():
        by_name[label[0]].append((label, n))
    rows = []
    for name, entries in by_name.items():
        small = [(label, n) for label, n in entries if n < minimum]
        rows += [CategoryRow(label, (label,), n, False) for label, n in entries if n >= minimum]
        if len(small) == 1:
            label, n = small[0]
            rows.append(CategoryRow(label, (label,), n, True))
        elif small:
            total = sum(n for _, n in small)
            rows.append(CategoryRow((name, f"other ({len(small)} categories, n={total})"),
                                    tuple(label for label, _ in small), total, total < minimum))
    return rows


def category_rows(analysis: Analysis, main_rows: list[dict]) -> list[dict]:
    """Long form: one row per (cell, category name, value), for done cells with categories."""
    out = []
    for result, main in zip(analysis.results, main_rows):
        records = result.cell.records() if result.cell.state == "done" else None
        if not records:
            continue
        base_groups = {}
        if result.paired is not None and result.baseline is not None:
            base_groups = by_category(result.baseline.records() or [])
        for (name, value), group in by_category(records).items():
            correct = sum(bool(r["correct"]) for r in group)
            entry = {k: main.get(k, "") for k in COLUMNS}
            entry.update(category=name, value=value, n=len(group), correct=correct, accuracy=correct / len(group),
                         baseline="", paired_n="", baseline_accuracy="", intervention_accuracy_paired="", diff="",
                         b_baseline_only="", c_intervention_only="", p_mcnemar_uncorrected="",
                         small_n=len(group) < MIN_CATEGORY_N)
            if result.paired is not None:
                pairing = pair_records(base_groups.get((name, value), []), group)
                n = pairing.paired_n
                entry.update(baseline=result.baseline.identity, paired_n=n)
                if n:
                    b, c = discordant_counts(pairing.baseline, pairing.treatment)
                    entry.update(baseline_accuracy=float(pairing.baseline.mean()),
                                 intervention_accuracy_paired=float(pairing.treatment.mean()), diff=(c - b) / n,
                                 b_baseline_only=b, c_intervention_only=c, p_mcnemar_uncorrected=mcnemar_exact(b, c))
            out.append(entry)
    return out


def cell_title(entry: dict) -> str:
    if entry["interventions"] == "off":
        return "baseline"
    parts = [entry["grid_row"], entry["grid_column"], entry["intervention_settings"], entry.get("sink", "")]
    return " ".join(p for p in parts if p)


def write_markdown(path, table: list[dict], notes: list[str]) -> None:
    """Per (model, benchmark): categories as rows, cells as columns; each entry is the cell's
    accuracy (%) and, for cells with an intervention on, its paired Δ (pp) against the baseline."""
    lines = ["# Accuracy per category", "",
             ("Each entry: accuracy % over the cell's questions in that category; for intervention cells also the paired "
              "difference from the baseline in percentage points over the questions both answered, and the exact "
              "McNemar p (uncorrected: exploratory). Full numbers: `categories.csv`."),
             f"† fewer than {MIN_CATEGORY_N} questions (`small_n` in the csv): one answer moves it by more than 5 pp.",
             ""]
    lines += [f"- {md_escape(n)}" for n in notes] + ([""] if notes else [])
    if not table:
        lines.append("No done cell recorded categories.")
    groups = defaultdict(list)
    for entry in table:
        groups[(entry["model"], entry["benchmark"])].append(entry)
    for (model, benchmark), entries in groups.items():
        cells = list(dict.fromkeys(e["identity"] for e in entries))
        titles = {e["identity"]: cell_title(e) for e in entries}
        labels = list(dict.fromkeys((e["category"], e["value"]) for e in entries))
        lookup = {(e["identity"], e["category"], e["value"]): e for e in entries}
        lines += [f"## {md_escape(model)} · {md_escape(benchmark)}", "",
                  "| category | " + " | ".join(f"{md_escape(titles[c])} `{c}`" for c in cells) + " |",
                  "|---|" + "|".join("---" for _ in cells) + "|"]
        for name, value in labels:
            out = []
            for identity in cells:
                entry = lookup.get((identity, name, value))
                if entry is None:
                    out.append("")
                    continue
                text = f"{pct(entry['accuracy'])} (n={entry['n']}{' †' if entry['small_n'] else ''})"
                if entry["diff"] != "":
                    text += f"; Δ {signed_pp(entry['diff'])}, p={p_text(entry['p_mcnemar_uncorrected'])}"
                out.append(text)
            label = value if name == "category" else f"{name}={value}"
            lines.append(f"| {md_escape(label)} | " + " | ".join(out) + " |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
