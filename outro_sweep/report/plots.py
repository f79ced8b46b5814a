"""The report's figures (PNG, matplotlib's Agg canvas: no display, no pyplot state).

Every figure's title ends with the settings its cells share (``settings.constant_settings``).

- ``heatmap_*.png``: per model x benchmark (x every other setting that differs between the
  OutRo cells: sink rule, temperature, ...: one heatmap per combination), the accuracy
  difference from the baseline over outro.layer (rows) x outro.alpha (columns), one
  diverging scale centred at zero that saturates at a stated effect size (``--saturate``,
  default ±5 pp; beyond it the colour is clipped and the value marked ▲/▼); each cell
  annotated with the difference in percentage points and its p-value; significant cells get
  ``*`` and a bold border, the others are hatched; flagged cells (letter bias, CI containing
  chance) get a marker; the legend says which is which. Cells without a number are grey and
  say why. Without a baseline, the heatmap shows plain accuracy on a sequential scale and
  says so in its title.
- ``categories_*.png``: the same groups, categories (rows, with n) x cells (columns), paired
  difference and uncorrected McNemar p per category, hatched where p >= 0.05; categories of
  fewer than ``MIN_CATEGORY_N`` questions grouped into "other" (or marked, when alone).
- ``sinks_<identity>.png``: per OutRo cell with sink diagnostics: first-sink-layer
  histogram, the most frequent sink positions, the share of questions with a sink per layer
  and the mean cosine to the sink direction before and after rotation per layer, with the
  relaxation layers marked and those that found no sink in some question called out.
- ``lsg_sinks_<identity>.png``: per LSG cell, the V-sinks and the L-sinks per layer (mean per
  sample; the L-sinks of the stream entering each layer of ``lsg.lsink_layers``), the gate
  layers marked.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from outro_sweep.report.analysis import SIGNIFICANCE, Analysis, CellResult
from outro_sweep.report.categories import MIN_CATEGORY_N, by_category, category_groups, question_counts
from outro_sweep.report.paired import discordant_counts, mcnemar_exact, pair_records
from outro_sweep.report.settings import (
    axis_value,
    choice_name,
    constant_settings,
    differing_keys,
    flatten,
    grid_axes,
    grid_group_key,
    layer_label,
    layer_sort_key,
    number_label,
    settings,
    short_hash,
    short_value,
    wrapped_summary,
)

DPI = 110
GREY = "#d9d9d9"
SATURATE = 0.05  # default colour saturation of the difference heatmaps: ±5 pp (a fraction of accuracy)
# result.flags code -> (marker, colour, legend text); the marker sits in a corner of the cell.
FLAG_MARKERS = {
    "letter_bias": ("^", "#d62728", "letter bias: one predicted letter dominates (table.md)"),
    "ci_contains_chance": ("o", "#ff7f0e", "accuracy's 95% CI contains chance"),
}
OTHER_FLAG = ("X", "#7f7f7f", "other flag (table.md)")


def new_figure(width: float, height: float):
    """A blank matplotlib figure, ``width`` x ``height`` inches at ``DPI``, drawn off-screen (no
    GUI backend): the canvas of every report and atlas figure."""
    # Deferred on purpose: matplotlib loads only where a figure is drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:limit] or "x"


# ----------------------------------------------------------------------------- groups


class Group:
    """Cells that differ only in their intervention's grid axes (one heatmap), e.g.
    outro.layer x outro.alpha."""

    def __init__(self, key: str, results: list[CellResult], analysis: Analysis) -> None:
        self.key = key
        self.results = results
        config = results[0].cell.config
        labeller = analysis.labeller
        self.model = labeller.group_label(config, "model")
        self.benchmark = labeller.group_label(config, "benchmark")
        self.baseline = next((r.baseline for r in results if r.baseline is not None), None)
        self.axes = grid_axes(config)  # (rows, columns)
        self.extras = ""

    @property
    def config(self) -> dict:
        return self.results[0].cell.config

    def shared_settings(self) -> dict[str, str]:
        """The settings shared by the figure's cells and their baseline."""
        configs = [r.cell.config for r in self.results]
        if self.baseline is not None and self.baseline.config is not None:
            configs.append(self.baseline.config)
        return constant_settings(configs)


def grid_groups(analysis: Analysis) -> list[Group]:
    grouped: dict[str, list[CellResult]] = defaultdict(list)
    for result in analysis.results:
        if result.enabled and grid_axes(result.cell.config):
            grouped[grid_group_key(result.cell.config)].append(result)
    groups = [Group(key, results, analysis) for key, results in grouped.items()]
    # What tells apart groups of the same model and benchmark goes into the title and file name.
    by_pair = defaultdict(list)
    for group in groups:
        by_pair[(group.model, group.benchmark)].append(group)
    for members in by_pair.values():
        flats = []
        for group in members:
            flat = flatten(settings(group.config))
            for axis in group.axes:
                flat.pop(axis, None)
            flats.append(flat)
        keys = differing_keys(flats)
        for group, flat in zip(members, flats):
            parts = []
            if any(k.startswith("sink.") for k in keys):
                parts.append(f"sink={analysis.labeller.group_label(group.config, 'sink')}")
            parts += [f"{k}={short_value(flat.get(k))}" for k in keys if not k.startswith("sink.")]
            group.extras = ", ".join(parts)
    return groups


def group_filename(prefix: str, group: Group) -> str:
    model, benchmark = choice_name(group.config, "model"), choice_name(group.config, "benchmark")
    name = f"{prefix}_{slug(model, 40)}__{slug(benchmark, 30)}"
    if group.extras:
        name += "__" + slug(group.extras, 50)
    return f"{name}__{short_hash(group.key)[:6]}.png"


def figure_title(lines: list[str], shared: dict[str, str], width: int = 110) -> str:
    """The title's own lines, then the settings the figure's cells share (model and benchmark
    choices are named in the first line), wrapped to ``width`` characters."""
    summary = wrapped_summary(shared, width, named=("model", "benchmark"))
    return "\n".join([line for line in lines if line] + ([summary] if summary else []))


# ----------------------------------------------------------------------------- grids


@dataclass
class Grid:
    """What one annotated grid figure draws. ``values`` (rows, cols): percentage points (a
    difference) or % (accuracy); NaN = grey, no number."""

    values: np.ndarray
    texts: list[list[str]]
    row_labels: list[str]
    col_labels: list[str]
    title: str
    colorbar_label: str
    diverging: bool
    xlabel: str
    ylabel: str
    limits: tuple[float, float]  # the colour scale's ends; beyond them the colour saturates
    significant: np.ndarray  # bool: bold border
    hatched: np.ndarray  # bool: compared, not significant
    flags: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (row, col) -> result.flags codes
    footer: str = ""
    significance: str = ""  # legend text of the bold border
    not_significant: str = ""  # legend text of the hatching
    cell_width: float = 1.15
    cell_height: float = 0.75

    @property
    def clipped(self) -> np.ndarray:
        """Cells whose value lies beyond the colour scale (drawn in its end colour, marked ▲/▼)."""
        finite = np.where(np.isfinite(self.values), self.values, 0.0)
        return (finite > self.limits[1]) | (finite < self.limits[0]) if self.diverging else np.zeros_like(self.hatched)


def difference_limits(saturate: float) -> tuple[float, float]:
    """The diverging scale's ends in percentage points: ±``saturate`` (a fraction of accuracy)."""
    return (-100 * saturate, 100 * saturate)


def _text_colour(value: float, low: float, high: float, diverging: bool) -> str:
    if diverging:
        return "white" if abs(value) > 0.6 * max(abs(low), abs(high)) else "black"
    return "white" if value < low + 0.55 * (high - low) else "black"


def _legend_handles(grid: Grid) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    if grid.significant.any():
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.2, label=grid.significance))
    if grid.hatched.any():
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="///", linewidth=0.6,
                             label=grid.not_significant))
    if grid.clipped.any():
        bound = grid.limits[1]
        handles.append(Line2D([], [], linestyle="", marker="$▲$", color="black",
                              label=f"▲/▼: beyond ±{bound:.1f} pp (colour saturated)"))
    codes = list(dict.fromkeys(code for codes in grid.flags.values() for code in codes))
    for code in codes:
        marker, colour, text = FLAG_MARKERS.get(code, OTHER_FLAG)
        handles.append(Line2D([], [], linestyle="", marker=marker, markersize=8, markerfacecolor=colour,
                              markeredgecolor="black", label=text if code in FLAG_MARKERS else f"{code}: {text}"))
    return handles


def grid_figure(grid: Grid):
    """The grid as a matplotlib Figure (not saved)."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    values = grid.values
    rows, cols = values.shape
    label_width = max((len(s) for s in grid.row_labels), default=4)
    title_width = max((len(line) for line in grid.title.splitlines()), default=10)
    width = min(24.0, max(6.0, cols * grid.cell_width + 2.6 + 0.085 * label_width, 0.075 * title_width + 1.8))
    handles = _legend_handles(grid)
    footer = textwrap.fill(grid.footer, width=int(width * 15)) if grid.footer else ""
    legend_lines = math.ceil(len(handles) / 2)
    bottom_in = 0.3 * legend_lines + (0.18 * (footer.count("\n") + 1) if footer else 0) + (0.1 if handles else 0)
    height = max(3.8, rows * grid.cell_height + 2.2 + 0.2 * grid.title.count("\n") + bottom_in)
    figure = new_figure(width, height)
    axes = figure.add_subplot()
    cmap = colormaps["RdBu" if grid.diverging else "viridis"].with_extremes(bad=GREY)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=grid.limits[0], vmax=grid.limits[1],
                        aspect="auto")
    axes.set_xticks(range(cols), grid.col_labels)
    axes.set_yticks(range(rows), grid.row_labels)
    axes.set_xlabel(grid.xlabel, fontsize=11)
    axes.set_ylabel(grid.ylabel, fontsize=11)
    axes.tick_params(labelsize=10)
    axes.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    axes.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    axes.grid(which="minor", color="white", linewidth=2)
    axes.tick_params(which="minor", length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    fontsize = 10 if cols <= 8 else 8
    clipped = grid.clipped
    for i in range(rows):
        for j in range(cols):
            value = values[i, j]
            colour = "black" if not np.isfinite(value) else _text_colour(value, *grid.limits, grid.diverging)
            text = grid.texts[i][j]
            if clipped[i, j]:
                text = ("▲ " if value > 0 else "▼ ") + text
            axes.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize,
                      fontweight="bold" if grid.significant[i, j] else "normal", linespacing=1.25)
            if grid.significant[i, j]:
                axes.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black",
                                         linewidth=2.8))
            if grid.hatched[i, j]:
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1.0, 1.0, facecolor="white", alpha=0.35, hatch="///",
                                         edgecolor="#555555", linewidth=0, label="_not significant"))
            for k, code in enumerate(grid.flags.get((i, j), [])):
                marker, mark_colour, _ = FLAG_MARKERS.get(code, OTHER_FLAG)
                axes.plot(j + 0.38 - 0.16 * k, i - 0.3, linestyle="", marker=marker, markersize=7,
                          markerfacecolor=mark_colour, markeredgecolor="black", zorder=5)
    bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03, extend="both" if grid.diverging else "neither")
    bar.set_label(grid.colorbar_label, fontsize=10)
    figure.suptitle(grid.title, fontsize=10.5, x=0.01, ha="left")
    bottom = bottom_in / height
    if handles:
        figure.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.01, (0.18 * (footer.count("\n") + 1)
                      if footer else 0.02) / height), ncol=2, fontsize=8.5, frameon=False, handlelength=1.6)
    if footer:
        figure.text(0.01, 0.01, footer, fontsize=8.5, color="#444444", ha="left", va="bottom")
    figure.tight_layout(rect=(0, bottom + 0.01, 1, 1))
    return figure


def save(figure, path: Path) -> Path | None:
    """Write ``figure`` to ``path``; None (nothing written) where there is no figure."""
    if figure is None:
        return None
    figure.savefig(path)
    return path


# ----------------------------------------------------------------------------- heatmaps


def _state_text(result: CellResult) -> str:
    if result.cell.state != "done":
        return result.cell.state
    if result.accuracy is None:
        return "no data"
    return "no\nbaseline"


def _correction(analysis: Analysis) -> str:
    return f"Holm over {len(analysis.compared)} comparisons" if analysis.holm else "uncorrected"


def heatmap_grid(group: Group, analysis: Analysis, saturate: float = SATURATE) -> Grid:
    """The numbers of one heatmap: Δ (pp) per (row, column) of the grid axes, the colour scale
    saturating at ±``saturate`` (a fraction of accuracy) whatever the largest |Δ|."""
    layers, alphas = [], []
    grid: dict[tuple[str, float | str], CellResult] = {}
    for result in group.results:
        layer, alpha = _grid_values(result.cell.config, group.axes)
        layer = layer_label(layer)
        alpha_key = float(alpha) if isinstance(alpha, (int, float)) else str(alpha)
        if (layer, alpha_key) in grid and grid[(layer, alpha_key)].cell.state == "done":
            continue  # same point twice (alpha 3 and 3.0): the first done one
        grid[(layer, alpha_key)] = result
        layers.append(layer)
        alphas.append(alpha_key)
    layers = sorted(set(layers), key=layer_sort_key)
    alphas = sorted(set(alphas), key=lambda a: (isinstance(a, str), a if not isinstance(a, str) else 0, str(a)))
    compared = any(r.paired is not None for r in group.results)
    values = np.full((len(layers), len(alphas)), np.nan)
    significant = np.zeros(values.shape, dtype=bool)
    hatched = np.zeros(values.shape, dtype=bool)
    flags: dict[tuple[int, int], list[str]] = {}
    texts = [["" for _ in alphas] for _ in layers]
    which = "p_Holm" if analysis.holm else "p"
    for i, layer in enumerate(layers):
        for j, alpha in enumerate(alphas):
            result = grid.get((layer, alpha))
            if result is None:
                texts[i][j] = "not in\nsweep"
                continue
            if result.flags:
                flags[(i, j)] = list(result.flags)
            if compared and result.paired is not None:
                values[i, j] = 100 * result.paired.diff
                significant[i, j] = result.significant(analysis.holm)
                hatched[i, j] = not significant[i, j]
                p = result.p_value(analysis.holm)
                star = "*" if significant[i, j] else ""
                texts[i][j] = f"{values[i, j]:+.1f}{star}\n{which}=" + ("n/a" if p is None else f"{p:.2g}")
            elif not compared and result.accuracy is not None:
                values[i, j] = 100 * result.accuracy
                texts[i][j] = f"{values[i, j]:.1f}%"
            else:
                texts[i][j] = _state_text(result)
    base = group.baseline
    base_result = next((r for r in analysis.results if base is not None and r.cell is base), None)
    if compared and base is not None:
        records = base.records() or []
        base_accuracy = sum(bool(r["correct"]) for r in records) / len(records) if records else math.nan
        base_flags = f"; flags: {', '.join(base_result.flags)}" if base_result is not None and base_result.flags else ""
        subtitle = (f"{group.axes[0].split('.')[0]} − baseline accuracy, percentage points\n"
                    f"baseline (every intervention off): {100 * base_accuracy:.1f}% of n={len(records)} "
                    f"(cell {base.identity}){base_flags}")
        footer = "Grey: no number (the cell's state is shown)."
        limits = difference_limits(saturate)
        label = f"Δ accuracy vs baseline (pp); saturates at ±{limits[1]:.1f} pp"
    else:
        why = "baseline not done" if base_result is not None else "no baseline found"
        subtitle = f"{why}: accuracy (%) shown, NOT a difference"
        footer = f"Run the same cells with {group.axes[0].split('.')[0]}.enabled=false to compare against the stock model."
        label, limits = "accuracy (%)", (0.0, 100.0)
    title = figure_title([f"{group.model} · {group.benchmark}", subtitle, group.extras], group.shared_settings())
    return Grid(values=values, texts=texts, row_labels=layers, col_labels=[number_label(a) for a in alphas],
                title=title, colorbar_label=label, diverging=compared, xlabel=group.axes[1], ylabel=group.axes[0],
                limits=limits, significant=significant, hatched=hatched, flags=flags, footer=footer,
                significance=f"* and bold border: p < {SIGNIFICANCE:g}, exact McNemar ({_correction(analysis)})",
                not_significant=f"hatched: not significant, p ≥ {SIGNIFICANCE:g} ({_correction(analysis)})")


def heatmap(group: Group, analysis: Analysis, out_dir: Path, saturate: float = SATURATE) -> Path:
    return save(grid_figure(heatmap_grid(group, analysis, saturate)), out_dir / group_filename("heatmap", group))


# ----------------------------------------------------------------------------- categories


def _grid_values(config: dict, axes: tuple[str, ...]) -> tuple:
    """The cell's (row, column) values on its heatmap's axes."""
    return axis_value(config, axes[0]), axis_value(config, axes[1])


def _grid_position(config: dict):
    """(row, column) order: rows as in the heatmap, columns numerically."""
    layer, alpha = _grid_values(config, grid_axes(config))
    numeric = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    return layer_sort_key(layer_label(layer)), (0, float(alpha)) if numeric else (1, 0.0), str(alpha)


def _members(groups: dict[tuple[str, str], list[dict]], members: tuple[tuple[str, str], ...]) -> list[dict]:
    return [record for label in members for record in groups.get(label, [])]


def category_grid(group: Group, analysis: Analysis, saturate: float = SATURATE) -> Grid | None:
    """Per category (rows; small ones grouped, ``category_groups``) x cell (columns): the paired
    Δ (pp) and its uncorrected exact McNemar p, hatched where p >= 0.05; None without categories."""
    results = [r for r in group.results if r.cell.state == "done" and r.cell.records()]
    results.sort(key=lambda r: _grid_position(r.cell.config))
    if not results:
        return None
    per_cell = {r.cell.identity: by_category(r.cell.records()) for r in results}
    base = group.baseline
    compared = base is not None and any(r.paired is not None for r in results)
    base_groups = by_category(base.records() or []) if compared else {}
    counts = question_counts([r.cell.records() for r in results] + ([base.records() or []] if compared else []))
    rows = category_groups(counts)
    if not rows:
        return None
    values = np.full((len(rows), len(results)), np.nan)
    hatched = np.zeros(values.shape, dtype=bool)
    texts = [["" for _ in results] for _ in rows]
    for j, result in enumerate(results):
        groups = per_cell[result.cell.identity]
        for i, row in enumerate(rows):
            records = _members(groups, row.members)
            if not records:
                texts[i][j] = "—"
                continue
            if compared and result.paired is not None:
                pairing = pair_records(_members(base_groups, row.members), records)
                if pairing.paired_n:
                    b, c = discordant_counts(pairing.baseline, pairing.treatment)
                    p = mcnemar_exact(b, c)
                    values[i, j] = 100 * (c - b) / pairing.paired_n
                    hatched[i, j] = p >= SIGNIFICANCE
                    texts[i][j] = f"{values[i, j]:+.1f}\np={p:.2g}"
                else:
                    texts[i][j] = "unpaired"
            else:
                values[i, j] = 100 * sum(bool(r["correct"]) for r in records) / len(records)
                texts[i][j] = f"{values[i, j]:.0f}%"

    def row_label(row) -> str:
        mark = " (small n)" if row.small else ""
        records = _members(base_groups, row.members) if compared else []
        if records and not row.label[1].startswith("other ("):
            accuracy = 100 * sum(bool(r["correct"]) for r in records) / len(records)
            return f"{row.text()}  (base {accuracy:.0f}%, n={row.n}){mark}"
        if records:
            accuracy = 100 * sum(bool(r["correct"]) for r in records) / len(records)
            return f"{row.text()}  (base {accuracy:.0f}%){mark}"
        return row.text() + ("" if row.label[1].startswith("other (") else f"  (n={row.n})") + mark

    columns = []
    for result in results:
        layer, alpha = _grid_values(result.cell.config, group.axes)
        columns.append(f"{group.axes[0].split('.')[-1]}={layer_label(layer)}\n"
                       f"{group.axes[1].split('.')[-1]}={number_label(alpha)}")
    small = (f"Categories of fewer than {MIN_CATEGORY_N} questions are grouped into \"other\" (a lone one is "
             "marked \"small n\").")
    if compared:
        subtitle = "cell − baseline accuracy (pp), paired per question; p: exact McNemar, uncorrected"
        limits = difference_limits(saturate)
        label = f"Δ accuracy vs baseline (pp); saturates at ±{limits[1]:.1f} pp"
        footer = f"{small} Per-category p-values are exploratory (no multiple-comparison correction): categories.csv."
    else:
        subtitle, label, limits, footer = "no baseline: accuracy (%) shown, NOT a difference", "accuracy (%)", (0.0, 100.0), small
    title = figure_title([f"{group.model} · {group.benchmark} — per category", subtitle, group.extras],
                         group.shared_settings())
    return Grid(values=values, texts=texts, row_labels=[row_label(row) for row in rows], col_labels=columns,
                title=title, colorbar_label=label, diverging=compared, xlabel=f"cell ({', '.join(group.axes)})",
                ylabel="category", limits=limits, significant=np.zeros(values.shape, dtype=bool), hatched=hatched,
                footer=footer, not_significant=f"hatched: p ≥ {SIGNIFICANCE:g}, exact McNemar, uncorrected",
                cell_width=0.95, cell_height=0.5)


def category_heatmap(group: Group, analysis: Analysis, out_dir: Path, saturate: float = SATURATE) -> Path | None:
    grid = category_grid(group, analysis, saturate)
    if grid is None:
        return None
    return save(grid_figure(grid), out_dir / group_filename("categories", group))


# ----------------------------------------------------------------------------- sinks


def _int_key(text: str):
    try:
        return (0, int(text))
    except (TypeError, ValueError):
        return (1, 0)


def _empty(axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, fontsize=11, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])


def _pad_bars(axes, count: int) -> None:
    """Few bars stay bar-shaped: widen the x range to at least 5 slots, centred."""
    pad = max(0.0, (5 - count) / 2)
    axes.set_xlim(-0.5 - pad, count - 0.5 + pad)


def sink_diagnostics(metrics: dict) -> tuple[str, dict]:
    """(intervention group, its summary) of the first intervention whose cell-level diagnostics
    describe sinks (OutRo's: ``sink_rate_per_layer`` and friends); ("", {}) when none did."""
    for group, summary in (metrics.get("diagnostics") or {}).items():
        if isinstance(summary, dict) and "sink_rate_per_layer" in summary:
            return group, summary
    return "", {}


@dataclass(frozen=True)
class RelaxationMark:
    """One relaxation layer of a cell and in how many of its questions it found no sink (then
    nothing is relaxed there: ``relax_layers_without_sinks`` of OutRo's diagnostics)."""

    layer: int
    without_sink: int  # questions
    samples: int  # questions with diagnostics

    @property
    def found_none(self) -> bool:
        """No sink in any question: the relaxation did nothing at this layer."""
        return self.samples > 0 and self.without_sink >= self.samples


def _int_layers(value) -> set[int]:
    values = value if isinstance(value, list) else [value]
    return {v for v in values if isinstance(v, int) and not isinstance(v, bool)}


def relaxation_marks(config: dict, group: str, sinks: dict) -> list[RelaxationMark]:
    """The cell's relaxation layers (``<group>.layer`` as its identity resolved it, ``auto``
    included; else as configured) together with every layer its diagnostics relaxed at, each
    with the questions in which it found no sink."""
    resolved = ((config.get("identity_inputs") or {}).get("config") or {}).get(group) or {}
    layers = _int_layers(resolved.get("layer")) | _int_layers((config.get(group) or {}).get("layer"))
    without = {int(k): int(v) for k, v in (sinks.get("relax_layers_without_sinks") or {}).items()}
    layers |= set(without) | {int(k) for k in sinks.get("relaxed_tokens_per_layer") or {}}
    samples = int(sinks.get("samples") or 0)
    return [RelaxationMark(layer, without.get(layer, 0), samples) for layer in sorted(layers)]


RELAX_COLOURS = {"none": "#d62728", "some": "#ff7f0e", "all": "#2ca02c"}  # found a sink in no / some / every question


def _mark_kind(mark: RelaxationMark) -> str:
    return "none" if mark.found_none else "some" if mark.without_sink else "all"


def _draw_relaxations(axes, marks: list[RelaxationMark], annotate: bool) -> None:
    """Vertical lines at the relaxation layers (x = layer number), coloured by whether the layer
    found a sink; ``annotate``: "no sink k/n" above those that missed some question."""
    for mark in marks:
        kind = _mark_kind(mark)
        axes.axvline(mark.layer, color=RELAX_COLOURS[kind], linestyle="--" if kind != "all" else ":", linewidth=1.8,
                     zorder=0)
        if annotate and mark.without_sink:
            axes.text(mark.layer, 1.0, f"no sink\n{mark.without_sink}/{mark.samples}", transform=axes.get_xaxis_transform(),
                      ha="center", va="bottom", fontsize=7.5, color=RELAX_COLOURS[kind])


def _relaxation_legend(marks: list[RelaxationMark]) -> list:
    from matplotlib.lines import Line2D

    texts = {"none": "relaxation layer: no sink in any question (nothing relaxed)",
             "some": "relaxation layer: no sink in some questions",
             "all": "relaxation layer: a sink in every question"}
    kinds = list(dict.fromkeys(_mark_kind(m) for m in marks))
    return [Line2D([], [], color=RELAX_COLOURS[k], linestyle="--" if k != "all" else ":", linewidth=1.8, label=texts[k])
            for k in ("none", "some", "all") if k in kinds]


def _layer_axis(axes, layers: list[int]) -> None:
    """Integer layer ticks over the drawn range (every other one past 16 layers)."""
    if not layers:
        return
    low, high = min(layers), max(layers)
    step = 1 if high - low <= 16 else 2
    axes.set_xticks(range(low - low % step, high + 1, step))
    axes.tick_params(axis="x", labelsize=8.5)
    axes.set_xlim(low - 0.8, high + 0.8)


def sink_figure_of(result: CellResult):
    """Four panels from the cell's sink diagnostics (``sink_diagnostics``), as a Figure (not
    saved); None when it recorded none."""
    group, sinks = sink_diagnostics(result.cell.metrics())
    if not sinks:
        return None
    config = result.cell.config
    marks = relaxation_marks(config, group, sinks)
    figure = new_figure(19.5, 5.4)
    first, positions, rate, cosine = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1.2, 1.3, 1.4]})

    counts = sinks.get("first_sink_layer_counts") or {}
    keys = sorted(counts, key=_int_key)
    if counts:
        labels = [k if k not in ("None", "null") else "no sink" for k in keys]
        bars = first.bar(range(len(keys)), [counts[k] for k in keys], color="#4c72b0")
        first.bar_label(bars, fontsize=9)
        first.set_xticks(range(len(keys)), labels)
        _pad_bars(first, len(keys))
        first.set_ylim(0, max(counts.values()) * 1.12)
    else:
        _empty(first, "no data")
    samples = sinks.get("samples")
    first.set_title(f"first layer with a sink ({samples} questions)", fontsize=11)
    first.set_xlabel("layer")
    first.set_ylabel("questions")

    position_counts = sinks.get("sink_position_counts") or {}
    top = sorted(position_counts.items(), key=lambda kv: (-kv[1], _int_key(kv[0])))[:15]
    if top:
        bars = positions.bar(range(len(top)), [v for _, v in top], color="#dd8452")
        positions.bar_label(bars, fontsize=8)
        positions.set_xticks(range(len(top)), [k for k, _ in top])
        _pad_bars(positions, len(top))
        positions.set_ylim(0, top[0][1] * 1.12)
    else:
        _empty(positions, "no sink found")
    shown = (f"top {len(top)} of {len(position_counts)}" if len(position_counts) > len(top)
             else "all" if top else "none")
    positions.set_title(f"sink positions ({shown})", fontsize=11)
    positions.set_xlabel("token position (from the row's first real token)")
    positions.set_ylabel("(question, layer) pairs")

    # x = the layer number itself, so the relaxation layers can be drawn where they are.
    share = {int(k): float(v) for k, v in (sinks.get("sink_rate_per_layer") or {}).items()}
    rate.bar(list(share), list(share.values()), color="#8172b3", width=0.8)
    rate.set_ylim(0, 1.0)
    _draw_relaxations(rate, marks, annotate=True)
    _layer_axis(rate, list(share) + [m.layer for m in marks])
    rate.set_title("questions with a sink, per layer", fontsize=11, pad=22)
    rate.set_xlabel("layer")
    rate.set_ylabel("share of questions")

    rotation = sinks.get("rotation_cosine_per_layer") or {}
    layers = sorted((int(k) for k in rotation))
    if layers:
        x = np.array(layers)
        before = [rotation[str(k)].get("cos_before", math.nan) for k in layers]
        after = [rotation[str(k)].get("cos_after", math.nan) for k in layers]
        cosine.bar(x - 0.2, before, width=0.4, label="before rotation", color="#8c8c8c")
        cosine.bar(x + 0.2, after, width=0.4, label="after rotation", color="#55a868")
        # The head-output counts (n) are alike across layers and do not fit under 20+ bars;
        # their range goes into the axis label instead.
        counts = [rotation[str(k)].get("n") for k in layers if isinstance(rotation[str(k)].get("n"), int)]
        if counts:
            span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
            cosine.set_xlabel(f"layer (rotated head outputs per layer: {span})")
        cosine.axhline(0, color="black", linewidth=0.8)
        low = min(0.0, float(np.nanmin(before + after)))
        cosine.set_ylim(low, max(1.0, float(np.nanmax(before + after))) + 0.2)
        cosine.legend(fontsize=9, loc="upper left", ncol=2, frameon=False)
        _draw_relaxations(cosine, marks, annotate=False)
        _layer_axis(cosine, layers + [m.layer for m in marks])
    else:
        _empty(cosine, "no rotation recorded")
    cosine.set_title("mean cosine to the sink direction", fontsize=11)
    if not cosine.get_xlabel():
        cosine.set_xlabel("layer")
    cosine.set_ylabel("mean cosine")

    relaxed = ", ".join(str(m.layer) for m in marks) or "none"
    missed = [m for m in marks if m.without_sink]
    lines = [f"Sink diagnostics · cell {result.cell.identity} · {group} relaxation layers: {relaxed}"
             + (" · no sink at " + ", ".join(f"{m.layer} ({m.without_sink}/{m.samples} questions)" for m in missed)
                if missed else "")]
    title = figure_title(lines, constant_settings([config]), width=190)
    figure.suptitle(title, fontsize=10.5, x=0.01, ha="left")
    handles = _relaxation_legend(marks)
    if handles:
        figure.legend(handles=handles, loc="lower left", ncol=len(handles), fontsize=9, frameon=False,
                      bbox_to_anchor=(0.01, 0.0))
    figure.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return figure


def sink_figure(result: CellResult, out_dir: Path) -> Path | None:
    """``sinks_<identity>.png`` (``sink_figure_of``); None when the cell recorded no sink diagnostics."""
    return save(sink_figure_of(result), out_dir / f"sinks_{result.cell.identity}.png")


# ----------------------------------------------------------------------------- LSG sink taxonomy

@dataclass(frozen=True)
class SinkTaxonomy:
    """What an LSG cell's diagnostics say of its visual tokens, as means per sample."""

    group: str  # the intervention's config group (``lsg``)
    samples: int
    vsinks: float  # V-sinks per sample: one set, fixed in the vision tower before the LLM
    visual: float  # visual tokens per sample
    lsinks: dict[int, float]  # layer -> L-sinks per sample in the stream entering that layer
    gate_layers: list[int]  # a gate at l scales the keys of layer l+1


def sink_taxonomy(metrics: dict) -> SinkTaxonomy | None:
    """The first intervention whose cell-level diagnostics count V-sinks (LSG's ``summarise``:
    ``mean_vsinks``, ``mean_lsinks_per_layer``, ``gate_layers``); None when none did."""
    for group, summary in (metrics.get("diagnostics") or {}).items():
        if isinstance(summary, dict) and "mean_vsinks" in summary:
            lsinks = {int(k): float(v) for k, v in (summary.get("mean_lsinks_per_layer") or {}).items()}
            return SinkTaxonomy(group, int(summary.get("samples") or 0), float(summary["mean_vsinks"]),
                                float(summary.get("mean_visual") or 0.0), dict(sorted(lsinks.items())),
                                sorted(_int_layers(summary.get("gate_layers") or [])))
    return None


def lsg_sink_figure_of(result: CellResult):
    """V-sinks and L-sinks per layer (bars, mean per sample) with the gate layers marked, as a
    Figure (not saved); None when the cell recorded no V-sink counts."""
    taxonomy = sink_taxonomy(result.cell.metrics())
    if taxonomy is None:
        return None
    layers = sorted(set(taxonomy.lsinks) | set(taxonomy.gate_layers))
    width = max(9.0, 0.55 * len(layers) + 3.5)  # inches
    figure = new_figure(width, 5.4)
    axes = figure.subplots()
    x = np.array(layers)
    # The V-sinks are one set for every layer: the same bar at each, beside that layer's L-sinks.
    axes.bar(x - 0.2, [taxonomy.vsinks] * len(layers), width=0.4, color="#4c72b0", label="V-sinks (vision tower)")
    if taxonomy.lsinks:
        axes.bar(np.array(list(taxonomy.lsinks)) + 0.2, list(taxonomy.lsinks.values()), width=0.4, color="#dd8452",
                 label="L-sinks (visual tokens massive in the LLM, not V-sinks)")
    else:
        axes.text(0.5, 0.9, "no L-sink counts recorded", ha="center", transform=axes.transAxes, fontsize=10,
                  color="#555555")
    for layer in taxonomy.gate_layers:
        axes.axvline(layer, color="#d62728", linestyle="--", linewidth=1.8, zorder=0)
    from matplotlib.lines import Line2D

    handles, _ = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#d62728", linestyle="--", linewidth=1.8,
                          label="gate layer l (keys of layer l+1 scaled)"))
    axes.legend(handles=handles, fontsize=9, loc="upper left", frameon=False)
    top = max([taxonomy.vsinks, *taxonomy.lsinks.values(), 1.0])
    axes.set_ylim(0, top * 1.45)
    _layer_axis(axes, layers)
    axes.set_xlabel("layer (L-sinks: in the hidden state entering it)")
    axes.set_ylabel("tokens per sample (mean)")
    gates = ", ".join(str(layer) for layer in taxonomy.gate_layers) or "none"
    lines = [f"V-/L-sinks · cell {result.cell.identity} · {taxonomy.group} gate layers: {gates} · "
             f"{taxonomy.samples} samples, {taxonomy.visual:g} visual tokens per sample"]
    # about 12 characters of the 10 pt title per inch of figure
    figure.suptitle(figure_title(lines, constant_settings([result.cell.config]), width=int(width * 12)), fontsize=10,
                    x=0.01, ha="left")
    figure.tight_layout()
    return figure


def lsg_sink_figure(result: CellResult, out_dir: Path) -> Path | None:
    """``lsg_sinks_<identity>.png`` (``lsg_sink_figure_of``); None when the cell counted no V-sinks."""
    return save(lsg_sink_figure_of(result), out_dir / f"lsg_sinks_{result.cell.identity}.png")
