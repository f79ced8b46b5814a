"""The report's figures and its constant settings, checked on the data each figure is drawn from
(``heatmap_grid``, ``category_grid``, ``relaxation_marks``, ``constant_settings``) and on the
matplotlib Figure before it is saved.

The cells are real: the reference sweep of tests/cell_runs.py (SmolLM2-135M, 8 built-in
questions, OutRo alpha 0.1 and 0.3 and their baseline), copied into each test's folder. Only
the outcomes of the alpha=0.3 cell are set by hand (every answer correct, its DONE marker
rewritten): 8 real questions give no significant difference, and the heatmap needs one.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from outro_sweep.cell.store import CellStore
from outro_sweep.report.analysis import analyse
from outro_sweep.report.build import ReportError, write_report
from outro_sweep.report.categories import MIN_CATEGORY_N, category_groups
from outro_sweep.report.collect import Store, load_config, read_cell
from outro_sweep.report.plots import (
    FLAG_MARKERS,
    category_grid,
    grid_figure,
    grid_groups,
    heatmap_grid,
    relaxation_marks,
    sink_diagnostics,
    sink_figure_of,
)
from outro_sweep.report.settings import constant_settings
from tests.cell_runs import copy_cell, reference_sweep

slow = pytest.mark.slow  # the tests on real cells: the reference sweep runs the real model (about 20 s)


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict:
    """{"out", "base", "a01", "a03"}: the reference cells; alpha=0.3 answers everything right."""
    reference = reference_sweep(tmp_path_factory)
    out = tmp_path_factory.mktemp("figures_cells")
    found = {}
    for cell in sorted((reference / "cells").iterdir()):
        config = load_config(cell / "config.yaml")
        name = "base" if not config["outro"]["enabled"] else f"a{str(config['outro']['alpha']).replace('.', '')}"
        found[name] = copy_cell(cell, out)
    predictions = found["a03"] / "predictions.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    predictions.write_text("".join(json.dumps({**r, "correct": True}) + "\n" for r in records))
    CellStore(out, found["a03"].name).mark_done({})
    return {"out": out, **found}


def analysis_of(cells: dict, holm: bool = False):
    report_cells = [read_cell(cells[name]) for name in ("base", "a01", "a03")]
    return analyse(report_cells, Store([cells["out"]]), use_holm=holm)


def the_group(analysis):
    groups = grid_groups(analysis)
    assert len(groups) == 1
    return groups[0]


def column_of(grid, alpha: str) -> int:
    return grid.col_labels.index(alpha)


@slow
def test_the_hand_set_cell_is_a_large_significant_gain(cells):
    base = sum(json.loads(line)["correct"] for line in (cells["base"] / "predictions.jsonl").read_text().splitlines())
    assert base <= 6  # the real baseline misses at least 2 of the 8: Δ >= 25 pp, far past 5 pp
    result = next(r for r in analysis_of(cells).results if r.cell.dir == cells["a03"])
    assert result.paired.diff == pytest.approx((8 - base) / 8) and result.significant(False)


@slow
def test_colour_scale_saturates_at_the_stated_effect_not_the_largest_difference(cells):
    analysis = analysis_of(cells)
    grid = heatmap_grid(the_group(analysis), analysis)
    largest = np.nanmax(np.abs(grid.values))
    assert largest >= 25
    assert grid.limits == (-5.0, 5.0)  # the default, whatever the largest |Δ|
    j = column_of(grid, "0.3")
    assert grid.clipped[0, j] and not grid.clipped[0, column_of(grid, "0.1")]
    assert heatmap_grid(the_group(analysis), analysis, saturate=0.1).limits == (-10.0, 10.0)
    figure = grid_figure(grid)
    heat, bar = figure.axes
    assert heat.images[0].norm.vmin == -5.0 and heat.images[0].norm.vmax == 5.0
    assert "saturates at ±5.0 pp" in bar.get_ylabel()
    texts = [t.get_text() for t in heat.texts]
    assert any(t.startswith("▲ +") for t in texts)  # the clipped cell is marked
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any("beyond ±5.0 pp" in t for t in legend)


@slow
def test_a_non_significant_cell_is_hatched_and_a_significant_one_framed(cells):
    analysis = analysis_of(cells)
    grid = heatmap_grid(the_group(analysis), analysis)
    weak, strong = column_of(grid, "0.1"), column_of(grid, "0.3")
    assert grid.hatched[0, weak] and not grid.significant[0, weak]
    assert grid.significant[0, strong] and not grid.hatched[0, strong]
    figure = grid_figure(grid)
    hatched = [p for p in figure.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() == pytest.approx(weak - 0.5)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any(t.startswith("hatched: not significant") for t in legend)
    assert any(t.startswith("* and bold border") for t in legend)
    # Holm over the two comparisons doubles the smaller p (0.03125 -> 0.0625): both hatched.
    holm = analysis_of(cells, holm=True)
    assert heatmap_grid(the_group(holm), holm).hatched.all()


@slow
def test_flagged_cells_get_a_marker_explained_in_the_legend(cells):
    analysis = analysis_of(cells)
    for result in analysis.results:  # the real cells' own flags (SmolLM2 leans on one letter) set aside
        result.flags = []
    flagged = next(r for r in analysis.results if r.cell.dir == cells["a01"])
    flagged.flags = ["letter_bias"]
    grid = heatmap_grid(the_group(analysis), analysis)
    assert grid.flags == {(0, column_of(grid, "0.1")): ["letter_bias"]}
    figure = grid_figure(grid)
    markers = [line for line in figure.axes[0].lines if line.get_marker() == FLAG_MARKERS["letter_bias"][0]]
    assert len(markers) == 1
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert FLAG_MARKERS["letter_bias"][2] in legend and FLAG_MARKERS["ci_contains_chance"][2] not in legend


def test_small_categories_are_grouped_and_a_lone_one_marked():
    rows = category_groups({("task", "a"): 25, ("task", "b"): 40, ("task", "c"): 5, ("task", "d"): 3,
                            ("duration", "long"): 30, ("duration", "short"): 4})
    by_label = {row.label: row for row in rows}
    assert set(by_label) == {("task", "a"), ("task", "b"), ("task", "other (2 categories, n=8)"),
                             ("duration", "long"), ("duration", "short")}
    other = by_label[("task", "other (2 categories, n=8)")]
    assert other.members == (("task", "c"), ("task", "d")) and other.n == 8 and other.small
    assert by_label[("duration", "short")].small and not by_label[("task", "a")].small
    assert category_groups({("task", "a"): MIN_CATEGORY_N})[0].small is False


@slow
def test_category_figure_of_real_cells_shows_n_and_p_and_groups_small_categories(cells):
    analysis = analysis_of(cells)
    grid = category_grid(the_group(analysis), analysis)
    records = [json.loads(line) for line in (cells["base"] / "predictions.jsonl").read_text().splitlines()]
    categories = {r["category"] for r in records}
    assert len(categories) >= 2 and len(records) < MIN_CATEGORY_N  # every category is small
    assert grid.row_labels == [f"task=other ({len(categories)} categories, n={len(records)})  (base "
                               f"{100 * sum(r['correct'] for r in records) / len(records):.0f}%) (small n)"]
    assert all("\np=" in text for text in grid.texts[0])
    weak, strong = grid.col_labels.index("layer=auto\nalpha=0.1"), grid.col_labels.index("layer=auto\nalpha=0.3")
    assert grid.hatched[0, weak] and not grid.hatched[0, strong]  # p = 1 vs p = 0.03 over the same 8 questions


@slow
def test_constant_settings_list_what_every_cell_shares_and_nothing_that_varies(cells):
    configs = [load_config(cells[name] / "config.yaml") for name in ("base", "a01", "a03")]
    shared = constant_settings(configs)
    assert shared["benchmark.limit"] == "8" and shared["benchmark.scoring"] == "logits"
    assert shared["model.dtype"] == "float32" and shared["seed"] == "0" and shared["model"] == "smollm2_135m"
    assert shared["outro.temperature"] == "0.1"  # shared by every OutRo cell (the baseline has none)
    assert shared["sink"] == "massive_activation"
    assert "outro.alpha" not in shared  # 0.1 vs 0.3
    assert not any(k.startswith(("paths", "logger", "predict.num_workers")) for k in shared)  # NON_DEFINING_KEYS
    moved = [{**c, "model": {**c["model"], "path": f"/machine{i}/models/smollm2"}} for i, c in enumerate(configs)]
    assert "model.path" not in constant_settings(moved)  # a file location, not a setting
    varied = [{**c, "benchmark": {**c["benchmark"], "limit": 8 + i}} for i, c in enumerate(configs)]
    assert "benchmark.limit" not in constant_settings(varied)


@slow
def test_table_md_and_figure_titles_state_the_constant_settings(cells, tmp_path):
    out = write_report([], tmp_path / "report", wandb_mode="disabled",
                       cells=[cells[name] for name in ("base", "a01", "a03")])
    markdown = (out / "table.md").read_text()
    block = markdown.split("## Settings shared by every cell", 1)[1].split("\n## ", 1)[0]
    assert markdown.index("## Settings shared by every cell") < markdown.index("## Cells")
    assert "limit=8" in block and "scoring=logits" in block and "dtype=float32" in block
    assert "temperature=0.1" in block and "alpha=" not in block
    assert sorted(p.name.split("_")[0] for p in out.glob("*.png")) == ["categories", "heatmap", "sinks", "sinks"]
    with open(out / "categories.csv", encoding="utf-8") as handle:
        assert {row["small_n"] for row in csv.DictReader(handle)} == {"True"}
    analysis = analysis_of(cells)
    title = grid_figure(heatmap_grid(the_group(analysis), analysis)).get_suptitle()
    assert "shared by every cell:" in title and "limit=8" in title and "dtype=float32" in title
    assert "alpha=" not in title.split("shared by every cell:")[1]
    assert max(len(line) for line in title.splitlines()) <= 110  # wrapped


@slow
def test_sink_figure_marks_relaxation_layers_and_those_without_a_sink(cells):
    analysis = analysis_of(cells)
    result = next(r for r in analysis.results if r.cell.dir == cells["a01"])
    group, sinks = sink_diagnostics(result.cell.metrics())
    marks = relaxation_marks(result.cell.config, group, sinks)
    resolved = result.cell.config["identity_inputs"]["config"]["outro"]["layer"]  # auto, as the model resolved it
    assert [m.layer for m in marks] == sorted(resolved) and len(marks) >= 2
    recorded = {int(k): v for k, v in sinks["relax_layers_without_sinks"].items()}
    assert {m.layer: m.without_sink for m in marks if m.without_sink} == recorded
    # SmolLM2 has no sink at layer 0 (the spec: token 0 becomes a sink from layer 12 on).
    assert marks[0].layer == 0 and marks[0].found_none and marks[0].samples == 8
    assert any(not m.without_sink for m in marks)  # and a sink at the later relaxation layers
    figure = sink_figure_of(result)
    rate = next(ax for ax in figure.axes if ax.get_title() == "questions with a sink, per layer")
    lines = {round(line.get_xdata()[0]): line.get_color() for line in rate.lines}
    assert set(lines) == {m.layer for m in marks}
    assert {layer for layer, colour in lines.items() if colour == "#d62728"} == {m.layer for m in marks if m.found_none}
    notes = [t.get_text() for t in rate.texts]
    assert notes == [f"no sink\n{m.without_sink}/{m.samples}" for m in marks if m.without_sink]
    assert f"no sink at 0 ({marks[0].without_sink}/8 questions)" in figure.get_suptitle()
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "relaxation layer: no sink in any question (nothing relaxed)" in legend


@slow
def test_saturate_must_be_a_fraction(cells, tmp_path):
    with pytest.raises(ReportError, match="--saturate=5 is invalid"):
        write_report([], tmp_path / "r", wandb_mode="disabled", cells=[cells["a01"]], saturate=5)
    from outro_sweep.report.__main__ import parse

    assert parse([str(cells["a01"]), "--saturate", "0.02"]).saturate == 0.02
    with pytest.raises(SystemExit):
        parse([str(cells["a01"]), "--saturate", "0"])
