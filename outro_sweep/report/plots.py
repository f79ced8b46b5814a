"""The report's figures (PNG, matplotlib's Agg canvas: no display, no pyplot state).

- ``heatmap_*.png``: per model x benchmark (x every other setting that differs between the
  OutRo cells: sink rule, temperature, ...: one heatmap per combination), the accuracy
  difference from the baseline over outro.layer (rows) x outro.alpha (columns), one
  diverging scale centred at zero with symmetric limits, the same for every heatmap of one
  model x benchmark (so that their colours compare); each cell annotated with the
  difference in percentage points and its p-value; significant cells get ``*`` and a bold
  border. Cells without a number are grey and say why. Without a baseline, the heatmap
  shows plain accuracy on a sequential scale and says so in its title.
- ``categories_*.png``: the same groups, categories (rows) x cells (columns), paired
  difference per category (no significance marks: see categories.csv for the uncorrected p).
- ``sinks_<identity>.png``: per OutRo cell with sink diagnostics: first-sink-layer
  histogram, the most frequent sink positions, mean cosine to the sink direction before and
  after rotation per layer.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from outro_sweep.report.analysis import Analysis, CellResult
from outro_sweep.report.categories import by_category
from outro_sweep.report.paired import discordant_counts, pair_records
from outro_sweep.report.settings import (
    GRID_AXES,
    choice_name,
    differing_keys,
    flatten,
    grid_group_key,
    layer_label,
    layer_sort_key,
    number_label,
    settings,
    short_hash,
    short_value,
)

DPI = 110
GREY = "#d9d9d9"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")[:limit] or "x"


# ----------------------------------------------------------------------------- groups


class Group:
    """OutRo cells that differ only in outro.layer and outro.alpha (one heatmap)."""

    def __init__(self, key: str, results: list[CellResult], analysis: Analysis) -> None:
        self.key = key
        self.results = results
        config = results[0].cell.config
        labeller = analysis.labeller
        self.model = labeller.group_label(config, "model")
        self.benchmark = labeller.group_label(config, "benchmark")
        self.baseline = next((r.baseline for r in results if r.baseline is not None), None)
        self.extras = ""
        self.bound: float | None = None  # the colour limit shared by every heatmap of this model x benchmark

    @property
    def config(self) -> dict:
        return self.results[0].cell.config


def grid_groups(analysis: Analysis) -> list[Group]:
    grouped: dict[str, list[CellResult]] = defaultdict(list)
    for result in analysis.results:
        if result.enabled:
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
            for axis in GRID_AXES:
                flat.pop(axis, None)
            flats.append(flat)
        keys = differing_keys(flats)
        for group, flat in zip(members, flats):
            parts = []
            if any(k.startswith("sink.") for k in keys):
                parts.append(f"sink={analysis.labeller.group_label(group.config, 'sink')}")
            parts += [f"{k}={short_value(flat.get(k))}" for k in keys if not k.startswith("sink.")]
            group.extras = ", ".join(parts)
        diffs = [abs(100 * r.paired.diff) for g in members for r in g.results if r.paired is not None]
        for group in members:
            group.bound = nice_bound(max(diffs)) if diffs else None
    return groups


def group_filename(prefix: str, group: Group) -> str:
    model, benchmark = choice_name(group.config, "model"), choice_name(group.config, "benchmark")
    name = f"{prefix}_{slug(model, 40)}__{slug(benchmark, 30)}"
    if group.extras:
        name += "__" + slug(group.extras, 50)
    return f"{name}__{short_hash(group.key)[:6]}.png"


# ----------------------------------------------------------------------------- heatmaps


def nice_bound(value: float) -> float:
    """The symmetric colour limit: the largest |value| rounded up to 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k
    percentage points (at least 1 pp), so the largest cell is strongly, not fully, saturated."""
    value = max(value * 1.02, 1.0)
    scale = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * scale:
            return step * scale
    return 10 * scale


def _text_colour(value: float, low: float, high: float, diverging: bool) -> str:
    if diverging:
        return "white" if abs(value) > 0.6 * max(abs(low), abs(high)) else "black"
    return "white" if value < low + 0.55 * (high - low) else "black"


def draw_grid(path: Path, *, values: np.ndarray, texts: list[list[str]], marks: np.ndarray, row_labels: list[str],
              col_labels: list[str], title: str, colorbar_label: str, diverging: bool, xlabel: str, ylabel: str,
              footer: str = "", limits: tuple[float, float] | None = None, cell_width: float = 1.15,
              cell_height: float = 0.75) -> Path:
    """One annotated grid: ``values`` (NaN = grey), ``texts`` per cell, ``marks`` = bold border."""
    import textwrap

    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    rows, cols = values.shape
    label_width = max((len(s) for s in row_labels), default=4)
    title_width = max((len(line) for line in title.splitlines()), default=10)
    width = min(24.0, max(6.0, cols * cell_width + 2.6 + 0.085 * label_width, 0.085 * title_width + 1.8))
    footer = textwrap.fill(footer, width=int(width * 15)) if footer else ""
    height = max(3.8, rows * cell_height + 2.2 + 0.2 * title.count("\n") + 0.15 * footer.count("\n"))
    figure = _figure(width, height)
    axes = figure.add_subplot()
    finite = values[np.isfinite(values)]
    if limits is None:
        if diverging:
            bound = nice_bound(float(np.max(np.abs(finite))) if finite.size else 0.0)
            limits = (-bound, bound)
        else:
            limits = (0.0, 100.0)
    cmap = colormaps["RdBu" if diverging else "viridis"].with_extremes(bad=GREY)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    axes.set_xticks(range(cols), col_labels)
    axes.set_yticks(range(rows), row_labels)
    axes.set_xlabel(xlabel, fontsize=11)
    axes.set_ylabel(ylabel, fontsize=11)
    axes.tick_params(labelsize=10)
    axes.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    axes.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    axes.grid(which="minor", color="white", linewidth=2)
    axes.tick_params(which="minor", length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    fontsize = 10 if cols <= 8 else 8
    for i in range(rows):
        for j in range(cols):
            value = values[i, j]
            colour = "black" if not np.isfinite(value) else _text_colour(value, *limits, diverging)
            weight = "bold" if marks[i, j] else "normal"
            axes.text(j, i, texts[i][j], ha="center", va="center", color=colour, fontsize=fontsize,
                      fontweight=weight, linespacing=1.25)
            if marks[i, j]:
                axes.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black",
                                         linewidth=2.8))
    bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03)
    bar.set_label(colorbar_label, fontsize=10)
    axes.set_title(title, fontsize=11, loc="left")
    if footer:
        figure.text(0.01, 0.01, footer, fontsize=8.5, color="#444444", ha="left", va="bottom")
    figure.tight_layout(rect=(0, (0.035 + 0.03 * footer.count("\n")) * 4.5 / height if footer else 0, 1, 1))
    figure.savefig(path)
    return path


def _state_text(result: CellResult) -> str:
    if result.cell.state != "done":
        return result.cell.state
    if result.accuracy is None:
        return "no data"
    return "no\nbaseline"


def heatmap(group: Group, analysis: Analysis, out_dir: Path) -> Path:
    layers, alphas = [], []
    grid: dict[tuple[str, float | str], CellResult] = {}
    for result in group.results:
        outro = result.cell.config.get("outro") or {}
        layer = layer_label(outro.get("layer"))
        alpha = outro.get("alpha")
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
    marks = np.zeros(values.shape, dtype=bool)
    texts = [["" for _ in alphas] for _ in layers]
    for i, layer in enumerate(layers):
        for j, alpha in enumerate(alphas):
            result = grid.get((layer, alpha))
            if result is None:
                texts[i][j] = "not in\nsweep"
            elif compared and result.paired is not None:
                values[i, j] = 100 * result.paired.diff
                significant = result.significant(analysis.holm)
                marks[i, j] = significant
                p = result.p_value(analysis.holm)
                star, which = ("*" if significant else ""), ("p_Holm" if analysis.holm else "p")
                texts[i][j] = f"{values[i, j]:+.1f}{star}\n{which}={p:.2g}"
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
        subtitle = (f"OutRo − baseline accuracy, percentage points\n"
                    f"baseline (OutRo off): {100 * base_accuracy:.1f}% of n={len(records)} (cell {base.identity})")
        correction = (f"Holm-adjusted over {len(analysis.compared)} comparisons" if analysis.holm
                      else "uncorrected")
        footer = (f"* and bold border: p < 0.05, exact McNemar test ({correction}). "
                  "Grey: no number (the cell's state is shown).")
        label = "Δ accuracy vs baseline (pp)"
    else:
        why = "baseline not done" if base_result is not None else "no baseline found"
        subtitle = f"{why}: accuracy (%) shown, NOT a difference"
        footer = "Run the same cells with outro=off to compare against the stock model."
        label = "accuracy (%)"
    title = f"{group.model} · {group.benchmark}\n{subtitle}"
    if group.extras:
        title += f"\n{group.extras}"
    path = out_dir / group_filename("heatmap", group)
    return draw_grid(path, values=values, texts=texts, marks=marks, row_labels=layers,
                     col_labels=[number_label(a) for a in alphas], title=title, colorbar_label=label,
                     diverging=compared, xlabel="outro.alpha (rotation strength)",
                     ylabel="outro.layer (relaxation layer)", footer=footer,
                     limits=(-group.bound, group.bound) if compared and group.bound else None)


# ----------------------------------------------------------------------------- categories


def _grid_position(config: dict):
    """(layer, alpha) order: layers as in the heatmap's rows, alphas numerically."""
    outro = config.get("outro") or {}
    alpha = outro.get("alpha")
    numeric = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    return layer_sort_key(layer_label(outro.get("layer"))), (0, float(alpha)) if numeric else (1, 0.0), str(alpha)


def category_heatmap(group: Group, analysis: Analysis, out_dir: Path) -> Path | None:
    results = [r for r in group.results if r.cell.state == "done" and r.cell.records()]
    results.sort(key=lambda r: _grid_position(r.cell.config))
    if not results:
        return None
    per_cell = {r.cell.identity: by_category(r.cell.records()) for r in results}
    labels = sorted({label for groups in per_cell.values() for label in groups})
    if not labels:
        return None
    base = group.baseline
    compared = base is not None and any(r.paired is not None for r in results)
    base_groups = by_category(base.records() or []) if compared else {}
    values = np.full((len(labels), len(results)), np.nan)
    texts = [["" for _ in results] for _ in labels]
    for j, result in enumerate(results):
        groups = per_cell[result.cell.identity]
        for i, label in enumerate(labels):
            records = groups.get(label)
            if not records:
                texts[i][j] = "—"
                continue
            if compared and result.paired is not None:
                pairing = pair_records(base_groups.get(label, []), records)
                if pairing.paired_n:
                    b, c = discordant_counts(pairing.baseline, pairing.treatment)
                    values[i, j] = 100 * (c - b) / pairing.paired_n
                    texts[i][j] = f"{values[i, j]:+.1f}"
                else:
                    texts[i][j] = "unpaired"
            else:
                values[i, j] = 100 * sum(bool(r["correct"]) for r in records) / len(records)
                texts[i][j] = f"{values[i, j]:.0f}%"

    def row_label(label):
        name, value = label
        text = value if name == "category" else f"{name}={value}"
        if compared:
            records = base_groups.get(label, [])
            if records:
                accuracy = 100 * sum(bool(r["correct"]) for r in records) / len(records)
                return f"{text}  (base {accuracy:.0f}%, n={len(records)})"
        return text

    columns = []
    for result in results:
        outro = result.cell.config.get("outro") or {}
        columns.append(f"L{layer_label(outro.get('layer'))}\nα={number_label(outro.get('alpha'))}")
    if compared:
        title = (f"{group.model} · {group.benchmark} — per category\n"
                 "OutRo − baseline accuracy (pp), paired per question")
        label, footer = "Δ accuracy vs baseline (pp)", "Uncorrected per-category p-values: categories.csv."
    else:
        title = f"{group.model} · {group.benchmark} — per category\nno baseline: accuracy (%) shown, NOT a difference"
        label, footer = "accuracy (%)", ""
    if group.extras:
        title += f"\n{group.extras}"
    path = out_dir / group_filename("categories", group)
    return draw_grid(path, values=values, texts=texts, marks=np.zeros(values.shape, dtype=bool),
                     row_labels=[row_label(label) for label in labels], col_labels=columns, title=title,
                     colorbar_label=label, diverging=compared, xlabel="cell (outro.layer, outro.alpha)",
                     ylabel="category", footer=footer, cell_width=0.95, cell_height=0.42)


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


def sink_figure(result: CellResult, analysis: Analysis, out_dir: Path) -> Path | None:
    """Three panels from metrics.json["diagnostics"]["outro"]; None when the cell recorded none (OutRo off)."""
    sinks = (result.cell.metrics().get("diagnostics") or {}).get("outro") or {}
    if not sinks:
        return None
    config = result.cell.config
    outro = config.get("outro") or {}
    labeller = analysis.labeller
    figure = _figure(15.5, 4.6)
    first, positions, cosine = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.3]})

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

    rotation = sinks.get("rotation_cosine_per_layer") or {}
    layers = sorted(rotation, key=_int_key)
    if layers:
        x = np.arange(len(layers))
        before = [rotation[k].get("cos_before", math.nan) for k in layers]
        after = [rotation[k].get("cos_after", math.nan) for k in layers]
        cosine.bar(x - 0.2, before, width=0.4, label="before rotation", color="#8c8c8c")
        cosine.bar(x + 0.2, after, width=0.4, label="after rotation", color="#55a868")
        # Layer numbers only: the head-output counts (n) are alike across layers and do not fit
        # under 20+ bars; their range goes into the axis label instead.
        cosine.set_xticks(x, [str(k) for k in layers], fontsize=8.5)
        counts = [rotation[k].get("n") for k in layers if isinstance(rotation[k].get("n"), int)]
        if counts:
            span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
            cosine.set_xlabel(f"layer (rotated head outputs per layer: {span})")
        cosine.axhline(0, color="black", linewidth=0.8)
        _pad_bars(cosine, len(layers))
        low = min(0.0, float(np.nanmin(before + after)))
        cosine.set_ylim(low, max(1.0, float(np.nanmax(before + after))) + 0.2)
        cosine.legend(fontsize=9, loc="upper left", ncol=2, frameon=False)
    else:
        _empty(cosine, "no rotation recorded")
    cosine.set_title("mean cosine to the sink direction", fontsize=11)
    if not cosine.get_xlabel():
        cosine.set_xlabel("layer")
    cosine.set_ylabel("mean cosine")

    figure.suptitle(
        f"Sink diagnostics · {labeller.group_label(config, 'model')} · {labeller.group_label(config, 'benchmark')} · "
        f"sink={labeller.group_label(config, 'sink')} · layer={layer_label(outro.get('layer'))} "
        f"α={number_label(outro.get('alpha'))} T={number_label(outro.get('temperature'))}"
        f"  (cell {result.cell.identity})",
        fontsize=11.5)
    figure.tight_layout()
    path = out_dir / f"sinks_{result.cell.identity}.png"
    figure.savefig(path)
    return path
