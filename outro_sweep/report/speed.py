"""Accuracy against decode speed: ``speed_<group>.png``, ``speed.md`` and ``speed.csv``.

A group is every done cell that shares one baseline (``baseline_identity``: one model x
benchmark configuration, e.g. one passkey context length), the baseline included. Per group
one figure: accuracy (with its 95% Wilson interval) against decode tokens/s (metrics.json
``speed.decode_tokens_per_s``), and, where some cell of the group recorded a SinkRouter skip
rate (metrics.json ``diagnostics.sinkrouter.skip_rate``), a second panel of accuracy against
that skip rate (the stock model skips nothing: it sits at 0). The baseline is a star; the
Pareto front (no other cell of the group is at least as accurate and at least as fast, and
better in one) is drawn as a staircase and marked in the table. Only cells that generated
have a speed (``benchmark.scoring=generate``); the others are left out.

Speed is a property of the machine: the table carries the device, torch threads and batch size
each cell was measured with, and the figure's title says when they differ within a group (the
speeds are then not comparable).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from outro_sweep.report.analysis import Analysis, CellResult
from outro_sweep.report.plots import DPI, new_figure, figure_title, slug
from outro_sweep.report.settings import (
    baseline_of,
    constant_settings,
    describe,
    differing_keys,
    flatten,
    intervention_enabled,
    settings,
    short_hash,
)
from outro_sweep.report.tables import md_escape, pct, write_csv

SPEED_MD, SPEED_CSV = "speed.md", "speed.csv"
PREFIX = "speed_"
COLUMNS = ["group", "cell", "identity", "baseline", "accuracy", "ci_low", "ci_high", "decode_tokens_per_s",
           "prefill_tokens_per_s", "skip_rate", "pareto_speed", "pareto_skip", "device", "torch_threads",
           "batch_size", "figure"]
MACHINE = ("device", "torch_threads", "batch_size")


def skip_rate(metrics: dict) -> float | None:
    """The cell's SinkRouter skip rate (a fraction of the (layer, KV group) decisions), if recorded."""
    value = ((metrics.get("diagnostics") or {}).get("sinkrouter") or {}).get("skip_rate")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Point:
    """One cell of a speed figure: the numbers it is drawn at."""

    result: CellResult
    label: str
    baseline: bool
    speed: dict  # metrics.json "speed"
    skip: float | None
    pareto_speed: bool = False
    pareto_skip: bool = False

    @property
    def accuracy(self) -> float:
        return self.result.accuracy

    @property
    def decode(self) -> float:
        return self.speed["decode_tokens_per_s"]

    @property
    def skip_or_stock(self) -> float | None:
        """The skip rate; 0 for the stock model, which skips nothing."""
        return 0.0 if self.baseline else self.skip


@dataclass
class SpeedGroup:
    key: str  # the baseline identity the cells share
    name: str  # model and benchmark (with the settings that tell groups apart)
    points: list[Point] = field(default_factory=list)

    @property
    def has_skip(self) -> bool:
        return any(p.skip is not None for p in self.points)

    @property
    def filename(self) -> str:
        return f"{PREFIX}{slug(self.name, 90)}__{short_hash(self.key)[:6]}.png"

    def machines(self) -> dict[str, list]:
        """{machine key: its distinct values} over the group's points."""
        return {key: sorted({str(p.speed.get(key)) for p in self.points}) for key in MACHINE}


def pareto(pairs: list[tuple[float, float]]) -> list[bool]:
    """For each (x, y) to be maximised both: True when no other pair is >= in both and > in one."""
    return [not any(ox >= x and oy >= y and (ox > x or oy > y) for ox, oy in pairs) for x, y in pairs]


def speed_groups(analysis: Analysis) -> list[SpeedGroup]:
    """The groups that have a speed figure: done cells with a decode speed and an accuracy,
    grouped by their baseline identity, in the report's row order."""
    grouped: dict[str, list[CellResult]] = defaultdict(list)
    for result in analysis.results:
        metrics = result.cell.metrics() if result.cell.state == "done" else {}
        decode = (metrics.get("speed") or {}).get("decode_tokens_per_s")
        if result.cell.config is not None and result.accuracy is not None and isinstance(decode, (int, float)):
            grouped[baseline_of(result.cell.config)].append(result)
    labeller = analysis.labeller
    groups = []
    for key, results in grouped.items():
        config = results[0].cell.config
        name = f"{labeller.group_label(config, 'model')} · {labeller.group_label(config, 'benchmark')}"
        other = labeller.other_settings(config)
        group = SpeedGroup(key, name + (f" · {other}" if other else ""))
        on = [r for r in results if intervention_enabled(r.cell.config)]
        keys = differing_keys([flatten(settings(r.cell.config)) for r in on]) if len(on) > 1 else []
        for result in results:
            enabled = intervention_enabled(result.cell.config)
            # "stock", or what tells the group's intervention cells apart ("sinkrouter.threshold=0.5")
            label = "stock" if not enabled else (describe(settings(result.cell.config), keys)
                                                 or labeller.interventions(result.cell.config))
            metrics = result.cell.metrics()
            group.points.append(Point(result, label, not enabled, metrics["speed"], skip_rate(metrics)))
        for flag, pairs in (("pareto_speed", [(p.decode, p.accuracy) for p in group.points]),
                            ("pareto_skip", [(p.skip_or_stock, p.accuracy) for p in group.points])):
            usable = [i for i, (x, _) in enumerate(pairs) if x is not None]
            for index, front in zip(usable, pareto([pairs[i] for i in usable])):
                setattr(group.points[index], flag, front)
        groups.append(group)
    return groups


def rows(groups: list[SpeedGroup]) -> list[dict]:
    """The table's rows: exactly the numbers the figures draw."""
    table = []
    for group in groups:
        for point in group.points:
            result = point.result
            table.append({
                "group": group.name, "cell": point.label, "identity": result.cell.identity, "baseline": point.baseline,
                "accuracy": point.accuracy, "ci_low": result.ci_low, "ci_high": result.ci_high,
                "decode_tokens_per_s": point.decode, "prefill_tokens_per_s": point.speed.get("prefill_tokens_per_s"),
                "skip_rate": point.skip, "pareto_speed": point.pareto_speed,
                "pareto_skip": point.pareto_skip if group.has_skip else None,
                **{key: point.speed.get(key) for key in MACHINE}, "figure": group.filename,
            })
    return table


def _panel(axes, points: list[Point], x_of, front_flag: str, xlabel: str) -> None:
    drawn = [p for p in points if x_of(p) is not None]
    for point in drawn:
        x, y = x_of(point), 100 * point.accuracy
        low, high = 100 * (point.result.ci_low or point.accuracy), 100 * (point.result.ci_high or point.accuracy)
        axes.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="none", ecolor="#9e9e9e", elinewidth=1, capsize=2)
        axes.scatter([x], [y], marker="*" if point.baseline else "o", s=160 if point.baseline else 40,
                     color="#d62728" if point.baseline else "#1f77b4", zorder=3,
                     edgecolors="black" if getattr(point, front_flag) else "none")
        axes.annotate(point.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = sorted((x_of(p), 100 * p.accuracy) for p in drawn if getattr(p, front_flag))
    if front:
        # The staircase of the front: from each front cell to the next, accuracy falls as x rises.
        xs, ys = [front[0][0]], [front[0][1]]
        for x, y in front[1:]:
            xs += [xs[-1], x]
            ys += [y, y]
        axes.plot(xs, ys, color="#2ca02c", linewidth=1.2, label="Pareto front (outlined cells)", zorder=2)
    axes.scatter([], [], marker="*", s=120, color="#d62728", label="baseline (stock model)")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")


def speed_figure(group: SpeedGroup, out: Path) -> Path:
    panels = 2 if group.has_skip else 1
    figure = new_figure(6.0 * panels, 4.8)
    first = figure.add_subplot(1, panels, 1)
    _panel(first, group.points, lambda p: p.decode, "pareto_speed", "decode tokens/s (prefill excluded)")
    if group.has_skip:
        second = figure.add_subplot(1, panels, 2)
        _panel(second, group.points, lambda p: p.skip_or_stock, "pareto_skip",
               "SinkRouter skip rate (share of (layer, KV group) decode reads skipped)")
    machines = group.machines()
    varied = [k for k, values in machines.items() if len(values) > 1]
    machine = ", ".join(f"{k}={'/'.join(v)}" for k, v in machines.items())
    lines = [f"Accuracy vs decode speed: {group.name}", f"measured on {machine}"
             + (" (differs between cells: speeds not comparable)" if varied else "")]
    shared = constant_settings([p.result.cell.config for p in group.points])
    figure.suptitle(figure_title(lines, shared, width=60 * panels + 20), fontsize=8)
    figure.tight_layout()
    path = out / group.filename
    figure.savefig(path, dpi=DPI)
    return path


def _number(value, digits: int = 1) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_markdown(path: Path, groups: list[SpeedGroup], table: list[dict]) -> None:
    lines = ["# Accuracy vs decode speed", "",
             ("One figure per model x benchmark configuration (cells sharing a baseline). Decode tokens/s: the "
              "cell's generated tokens after the first, over the time from the first to the last generated token, "
              "timed inside generate with the device synchronised (prefill tokens/s apart). Pareto: no other cell of "
              "the group is at least as accurate and at least as fast (or skips at least as much), and better in "
              "one. The speeds depend on the machine: device, torch threads and batch size are given per cell."), ""]
    for group in groups:
        lines += [f"## {md_escape(group.name)}", "", f"![{group.filename}]({group.filename})", "",
                  "| cell | accuracy (95% CI) | decode tok/s | prefill tok/s | skip rate | Pareto | device | "
                  "threads | batch | identity |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for entry in (e for e in table if e["figure"] == group.filename):
            front = [name for name, flag in (("speed", entry["pareto_speed"]), ("skip", entry["pareto_skip"])) if flag]
            lines.append("| " + " | ".join(md_escape(c) for c in [
                entry["cell"] + (" (baseline)" if entry["baseline"] else ""),
                f"{pct(entry['accuracy'])} ({pct(entry['ci_low'])}-{pct(entry['ci_high'])})",
                _number(entry["decode_tokens_per_s"]), _number(entry["prefill_tokens_per_s"]),
                pct(entry["skip_rate"]), ", ".join(front), entry["device"], entry["torch_threads"],
                entry["batch_size"], entry["identity"]]) + " |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_speed(analysis: Analysis, out: Path) -> tuple[list[Path], list[str]]:
    """Write the speed figures, speed.md and speed.csv into ``out`` (a re-run replaces its own
    figures); returns (figures, notes). Nothing is written when no cell has a decode speed."""
    for old in out.glob(PREFIX + "*.png"):
        old.unlink()
    groups = speed_groups(analysis)
    if not groups:
        return [], []
    table = rows(groups)
    write_csv(out / SPEED_CSV, table, COLUMNS)
    figures, notes = [], []
    for group in groups:
        try:
            figures.append(speed_figure(group, out))
        except Exception as err:  # noqa: BLE001 - one figure's failure is a note, as for the other figures
            notes.append(f"speed figure for {group.name} failed: {type(err).__name__}: {err}")
    write_markdown(out / SPEED_MD, groups, table)
    notes.append(f"accuracy vs decode speed: {SPEED_MD} ({len(figures)} figure{'s' if len(figures) != 1 else ''})")
    return figures, notes
