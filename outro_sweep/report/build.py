"""``write_report``: collect the cells, compute the statistics, write the tables and figures,
log the W&B report run. Everything after the argument checks degrades to a note in
``table.md`` instead of raising, so the sweep's end-of-run callback can always call it."""

from __future__ import annotations

import logging
import os
import traceback
from collections import Counter
from pathlib import Path

from outro_sweep.report.collect import (
    ReportCell,
    Store,
    collect_sweep,
    merge_cells,
    output_dir_of,
    read_cell,
    sweep_group,
)

from outro_sweep.config.run_settings import MODES
from outro_sweep.report import categories, plots, tables
from outro_sweep.report.analysis import analyse
from outro_sweep.report.paired import INTERVAL_METHOD
from outro_sweep.report.plots import SATURATE, sink_diagnostics, sink_taxonomy
from outro_sweep.report.settings import constant_settings, reads_sinks, settings_lines, short_hash
from outro_sweep.report.speed import write_speed
from outro_sweep.report.verdict import VERDICT_TXT, verdict_lines
from outro_sweep.report.wandb_report import cross_check, log_report

log = logging.getLogger(__name__)

TABLE_MD, TABLE_CSV = "table.md", "table.csv"
CATEGORIES_MD, CATEGORIES_CSV = "categories.md", "categories.csv"


class ReportError(ValueError):
    """Bad arguments (no such folder, unknown W&B mode): the only error write_report raises."""


def _short_error(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}".rstrip(": ")


def default_out(sweep_dirs: list[Path], cell_dirs: list[Path]) -> Path:
    if sweep_dirs:
        return sweep_dirs[0] / "report"
    first = cell_dirs[0].resolve()
    return first.parent.parent / "reports" / f"cells-{short_hash(sorted(str(c.resolve()) for c in cell_dirs))}"


def _project(cells: list[ReportCell]) -> tuple[str, str | None]:
    loggers = [c.config.get("logger") or {} for c in cells if c.config is not None]
    projects = Counter(str(lg.get("project")) for lg in loggers if lg.get("project"))
    entities = Counter(str(lg.get("entity")) for lg in loggers if lg.get("entity"))
    return (projects.most_common(1)[0][0] if projects else "outro_sweep",
            entities.most_common(1)[0][0] if entities else None)


def write_report(sweep_dirs: list[Path], out: Path | None = None, holm: bool = False, wandb_mode: str = "offline",
                 *, cells: list[Path] = (), saturate: float = SATURATE) -> Path:
    """Write the report of ``sweep_dirs`` (Hydra multirun folders) and/or ``cells`` (cell
    folders) into ``out`` (default ``<first sweep>/report/``); returns ``out``. ``saturate``:
    the accuracy difference (a fraction, 0.05 = 5 pp) at which the heatmaps' colours saturate.

    Raises ReportError only for bad arguments; an incomplete sweep, unreadable files, a
    plotting or W&B error become notes in table.md.
    """
    sweep_dirs = [Path(p) for p in (sweep_dirs or [])]
    cell_dirs = [Path(p) for p in (cells or [])]
    if not sweep_dirs and not cell_dirs:
        raise ReportError("nothing to report on: give sweep folders (outputs/multirun/<date>/<time>) or --cells")
    for path in [*sweep_dirs, *cell_dirs]:
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder")
    if wandb_mode not in MODES:
        raise ReportError(f"--wandb-mode={wandb_mode!r} is invalid: valid values are {', '.join(MODES)}")
    if not isinstance(saturate, (int, float)) or isinstance(saturate, bool) or not 0 < saturate <= 1:
        raise ReportError(f"--saturate={saturate!r} is invalid: valid values are fractions of accuracy in (0, 1], "
                          "e.g. 0.05 for 5 pp")
    out = Path(out) if out is not None else default_out(sweep_dirs, cell_dirs)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    try:
        _write(sweep_dirs, cell_dirs, out, holm, wandb_mode, saturate, notes)
    except Exception as err:
        log.exception("report failed")
        (out / TABLE_MD).write_text(
            "# Sweep report\n\nThe report could not be built: " + _short_error(err) + "\n\n```\n"
            + traceback.format_exc()[-4000:] + "```\n\n" + "".join(f"- {n}\n" for n in notes), encoding="utf-8")
    return out


def _write(sweep_dirs: list[Path], cell_dirs: list[Path], out: Path, holm: bool, wandb_mode: str,
           saturate: float, notes: list[str]) -> None:
    collected: list[ReportCell] = []
    output_dirs: list[Path] = []
    for sweep in sweep_dirs:
        try:
            found, sweep_notes = collect_sweep(sweep)
        except Exception as err:  # noqa: BLE001
            found, sweep_notes = [], [f"{sweep}: could not be read ({_short_error(err)})"]
        collected += found
        notes += sweep_notes
        guess = output_dir_of(sweep, None)
        if guess is not None:
            output_dirs.append(guess)
    for cell_dir in cell_dirs:
        collected.append(read_cell(cell_dir, "--cells"))
    merged = merge_cells(collected)
    output_dirs += [c.dir.parent.parent for c in merged if c.dir is not None and c.dir.parent.name == "cells"]
    store = Store(output_dirs)

    analysis = analyse(merged, store, use_holm=holm)
    notes += analysis.notes
    table = tables.rows(analysis)
    tables.write_csv(out / TABLE_CSV, table, tables.columns(analysis))
    (out / VERDICT_TXT).write_text("".join(line + "\n" for line in verdict_lines(analysis)), encoding="utf-8")

    category_table: list[dict] = []
    try:
        category_table = categories.category_rows(analysis, table)
        tables.write_csv(out / CATEGORIES_CSV, category_table, categories.COLUMNS)
        categories.write_markdown(out / CATEGORIES_MD, category_table, [])
    except Exception as err:  # noqa: BLE001
        notes.append(f"per-category table failed: {_short_error(err)}")

    figures: list[Path] = []
    for prefix in ("heatmap_", "categories_", "sinks_", "lsg_sinks_"):  # a re-run replaces its own figures
        for old in out.glob(prefix + "*.png"):
            old.unlink()
    try:
        groups = plots.grid_groups(analysis)
    except Exception as err:  # noqa: BLE001
        groups = []
        notes.append(f"figures skipped: {_short_error(err)}")
    for group in groups:
        for draw in (plots.heatmap, plots.category_heatmap):
            try:
                path = draw(group, analysis, out, saturate)
                if path is not None:
                    figures.append(path)
            except Exception as err:  # noqa: BLE001
                notes.append(f"{draw.__name__} for {group.model} · {group.benchmark} failed: {_short_error(err)}")
    for result in analysis.results:
        if not (result.enabled and result.cell.state == "done"):
            continue
        for draw, what in ((plots.sink_figure, "sink figure"), (plots.lsg_sink_figure, "V-/L-sink figure")):
            try:
                path = draw(result, out)
                if path is not None:
                    figures.append(path)
            except Exception as err:  # noqa: BLE001
                notes.append(f"{what} of {result.cell.identity} failed: {_short_error(err)}")
    if any(r.enabled and r.cell.state == "done" and reads_sinks(r.cell.config)
           and not sink_diagnostics(r.cell.metrics())[1] and sink_taxonomy(r.cell.metrics()) is None
           for r in analysis.results):
        notes.append("some cells whose intervention reads sinks recorded no sink diagnostics (metrics.json "
                     "'diagnostics'): no sink figure")

    speed_figures: list[Path] = []
    try:
        speed_figures, speed_notes = write_speed(analysis, out)
        notes += speed_notes
    except Exception as err:  # noqa: BLE001
        notes.append(f"speed figures failed: {_short_error(err)}")

    if sweep_dirs:
        group = sweep_group(sweep_dirs[0])
        if len(sweep_dirs) > 1:
            notes.append(f"W&B report run in group {group} (the first sweep); it covers "
                         + ", ".join(sweep_group(s) for s in sweep_dirs))
    else:
        group = "cells-report"
    project, entity = _project(merged)
    if wandb_mode == "online":
        local = {r.cell.identity: r.accuracy for r in analysis.results if r.cell.identity and r.accuracy is not None}
        notes += cross_check(project=project, entity=entity, group=group, local_accuracy=local)
    compared = analysis.compared
    summary = {
        "cells": len(table),
        **{f"cells_{state}": sum(1 for r in table if r["state"] == state)
           for state in ("done", "partial", "failed", "missing")},
        "compared": len(compared),
        "significant": sum(1 for r in compared if r.significant(holm)),
    }
    try:
        config = {"sweeps": [str(s) for s in sweep_dirs], "cells": [str(c) for c in cell_dirs], "holm": holm,
                  "diff_interval": INTERVAL_METHOD,
                  "groups": [sweep_group(s) for s in sweep_dirs]}
        run_dir = log_report(mode=wandb_mode, directory=out, project=project, entity=entity, group=group,
                             config=config, table=table, columns=tables.columns(analysis), category_table=category_table,
                             category_columns=categories.COLUMNS, figures=figures + speed_figures,
                             summary=summary)
        if run_dir is not None and wandb_mode == "offline":
            notes.append(f"W&B report run (offline) in {os.path.relpath(run_dir, out)}: upload with "
                         f"`wandb sync {run_dir}`")
    except Exception as err:  # noqa: BLE001
        notes.append(f"W&B report run failed: {_short_error(err)}")

    title = ("Sweep report: " + ", ".join("/".join(s.resolve().parts[-2:]) for s in sweep_dirs) if sweep_dirs
             else f"Report on {len(cell_dirs)} cells")
    sources = [str(s) for s in sweep_dirs] + [str(c) for c in cell_dirs]
    shared = constant_settings([r.cell.config for r in analysis.results if r.cell.config is not None])
    tables.write_markdown(out / TABLE_MD, analysis, table, title, sources, list(dict.fromkeys(notes)), figures,
                          settings=settings_lines(shared))
