"""Answer-letter statistics, chance level and flags, and the letter-bias decomposition of a
paired difference: on records built here (expected values worked out by hand in the
comments), through the real report (``write_report`` over cell folders written here), and on
a real SmolLM2 cell (metrics.json, the printed result line and the W&B offline run file).
W&B runs offline: its server cannot run here."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from outro_sweep.cell.store import CellStore
from outro_sweep.scoring.letter_stats import letter_stats
from outro_sweep.scoring.metrics import result_line
from tests.cell_runs import SINGLE, run_cli
from tests.test_report_e2e import make_cell, read_table
from tests.wandb_offline import find_runs, read_run

LETTERS = "ABCD"


def mc_record(index: int, target: str, prediction: str | None) -> dict:
    """A scored 4-option mc record (the fields predict.module.record and scoring write)."""
    return {"index": index, "id": f"q{index}", "prompt_hash": f"h{index}", "kind": "mc",
            "options": ["w", "x", "y", "z"], "target": target, "prediction": prediction,
            "valid": prediction is not None, "correct": prediction == target,
            "category": "even" if index % 2 == 0 else "odd", "categories": {}}


# ----------------------------------------------------------------------------- one cell


def test_always_a_on_uniform_targets_raises_both_flags():
    # 40 questions, targets A..D 10 each, every answer A: accuracy 10/40 = 0.25 = chance,
    # Wilson 95% [0.142, 0.402] contains 0.25; top letter A with share 40/40 = 1.0 > 0.6.
    records = [mc_record(i, LETTERS[i // 10], "A") for i in range(40)]
    stats = letter_stats(records, 0.14187118639096302, 0.40193961420768026)
    assert stats.chance == 0.25 and stats.invalid == 0 and stats.invalid_rate == 0.0
    assert stats.predicted_letters == {"A": 40} and stats.target_letters == {"A": 10, "B": 10, "C": 10, "D": 10}
    assert (stats.top_letter, stats.top_letter_share) == ("A", 1.0)
    assert stats.flags == ["letter_bias", "ci_contains_chance"]
    metrics = {"accuracy": 0.25, "ci_low": 0.1419, "ci_high": 0.4019, "n": 40, **stats.metrics()}
    line = result_line(metrics, "cell")
    assert "top letter A 100%" in line and "⚠ letter bias, CI contains chance (25%)" in line


def test_a_high_accuracy_cell_has_no_flag_and_counts_invalid_answers():
    # 40 questions, targets 10 each; right on 38, two target-D questions unreadable (None).
    # Predicted among the 38 valid: A 10, B 10, C 10, D 8 -> top A, 10/38; accuracy 38/40,
    # Wilson [0.835, 0.986] far above chance 0.25.
    records = [mc_record(i, LETTERS[i // 10], None if i >= 38 else LETTERS[i // 10]) for i in range(40)]
    stats = letter_stats(records, 0.8349612263085903, 0.9861793326138516)
    assert stats.flags == []
    assert stats.invalid == 2 and stats.invalid_rate == 0.05
    assert stats.predicted_letters == {"A": 10, "B": 10, "C": 10, "D": 8}
    assert stats.top_letter == "A" and stats.top_letter_share == pytest.approx(10 / 38)
    assert "⚠" not in result_line({"accuracy": 0.95, "ci_low": 0.83, "ci_high": 0.99, "n": 40, **stats.metrics()}, "c")


def test_chance_mixes_option_counts_and_yes_no_and_ignores_open_questions():
    # mc with 2 options (1/2), mc with 5 (1/5), yes/no (1/2); open questions have no chance:
    # (0.5 + 0.2 + 0.5) / 3 = 0.4.
    records = [{**mc_record(0, "A", "A"), "options": ["x", "y"]},
               {**mc_record(1, "E", "B"), "options": list("vwxyz")},
               {"kind": "yesno", "options": [], "target": "yes", "prediction": "no", "valid": True, "correct": False},
               {"kind": "open", "options": [], "target": "cat", "prediction": None, "valid": False, "correct": False}]
    stats = letter_stats(records, 0.0, 1.0)
    assert stats.chance == pytest.approx(0.4)
    assert stats.invalid == 1 and stats.invalid_rate == 0.25
    assert stats.predicted_letters == {"A": 1, "B": 1} and stats.target_letters == {"A": 1, "E": 1}
    only_open = letter_stats([records[3]], 0.0, 1.0)
    assert only_open.chance is None and only_open.top_letter is None and only_open.flags == []
    assert only_open.metrics()["predicted_letters"] is None


# ----------------------------------------------------------------------------- a pair of cells


def shifted_pair() -> tuple[list[dict], list[dict]]:
    """200 questions, targets uniform (A, B, C, D: 50 each, by index block).

    Baseline: target-A questions: A on the first 10 (right), D on the other 40. Target X in
    B, C, D: X on the first 10 (right), A on the next 30, a wrong other letter on the last 10.
    -> answers A on 10 + 3*30 = 100 (50%), right on 10 + 3*10 = 40.
    Intervention: A on every target-A question (50 right); target B: B on the first 6, A on
    44; C and D: the letter on the first 7, A on 43. -> A on 50 + 44 + 43 + 43 = 180 (90%),
    right on 50 + 6 + 7 + 7 = 70.
    """
    keep = {"B": 6, "C": 7, "D": 7}
    other = {"B": "C", "C": "D", "D": "B"}
    baseline, treatment = [], []
    for i in range(200):
        target, j = LETTERS[i // 50], i % 50
        if target == "A":
            base, treat = ("A" if j < 10 else "D"), "A"
        else:
            base = target if j < 10 else "A" if j < 40 else other[target]
            treat = target if j < keep[target] else "A"
        baseline.append(mc_record(i, target, base))
        treatment.append(mc_record(i, target, treat))
    return baseline, treatment


def write_cell(output_dir, identity: str, enabled: bool, records: list[dict]):
    cell = make_cell(output_dir, identity, enabled, [r["correct"] for r in records])
    (cell / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    CellStore(output_dir, identity).mark_done({})  # DONE holds the digest of these predictions
    return cell


def test_a_shift_toward_a_is_decomposed_in_the_table_and_the_verdict(tmp_path):
    # By hand (n = 200): b = baseline-only right = target B 10-6 + C 10-7 + D 10-7 = 10, all with
    # targets other than A; c = intervention-only right = the 40 target-A questions the baseline
    # answered D. Δ = (40 - 10)/200 = +0.15; L = A (answers 100 -> 180, the only rise);
    # Δ_A = (40 - 0)/200 = +0.20, the rest +0.15 - 0.20 = -0.05: same sign, 0.20 >= 0.5 * 0.15.
    from outro_sweep.report.build import write_report

    baseline, treatment = shifted_pair()
    out = tmp_path / "outputs"
    base_cell = write_cell(out, "base00000000", False, baseline)
    treat_cell = write_cell(out, "treat0000000", True, treatment)
    folder = write_report([], out=tmp_path / "report", wandb_mode="disabled", cells=[base_cell, treat_cell])

    rows = {r["identity"]: r for r in read_table(folder / "table.csv")}
    row = rows["treat0000000"]
    assert float(row["diff"]) == pytest.approx(0.15)
    assert row["shift_letter"] == "A"
    assert float(row["shift_letter_baseline_share"]) == pytest.approx(0.5)
    assert float(row["shift_letter_share"]) == pytest.approx(0.9)
    assert float(row["diff_target_letter"]) == pytest.approx(0.20)
    assert float(row["diff_other_targets"]) == pytest.approx(-0.05)
    # Letter columns: counts tallied in shifted_pair's docstring.
    assert row["predicted_letters"] == "A:180 B:6 C:7 D:7" and row["target_letters"] == "A:50 B:50 C:50 D:50"
    assert row["top_letter"] == "A" and float(row["top_letter_share"]) == pytest.approx(0.9)
    assert float(row["chance"]) == 0.25 and float(row["invalid_rate"]) == 0.0
    # Wilson 95% of 70/200 is [0.287, 0.418] (above chance); of 40/200 [0.150, 0.261] (contains it).
    assert row["flags"] == "letter_bias"
    base = rows["base00000000"]
    assert base["flags"] == "ci_contains_chance" and base["predicted_letters"] == "A:100 B:20 C:20 D:60"
    assert base["shift_letter"] == ""

    note = "Δ mostly a shift toward A: +20.0 of +15.0 pp from questions whose target is A (answers A 50% -> 90%)"
    assert note in row["note"]
    markdown = (folder / "table.md").read_text()
    treat_line = next(line for line in markdown.splitlines() if "treat0000000" in line and line.startswith("|"))
    assert note in treat_line and "⚠ bias A 90%" in treat_line and "A: +20.0 (-5.0); 50% → 90%" in treat_line
    base_line = next(line for line in markdown.splitlines() if "base00000000" in line and line.startswith("|"))
    assert "≈ chance" in base_line and "⚠" not in base_line
    assert "more than 60% of the answers" in markdown  # the legend states the threshold
    (verdict,) = (folder / "verdict.txt").read_text().splitlines()
    # The console line carries the note, then both sides' flags (the cell's bias, the baseline at chance).
    assert verdict.startswith("outro (") and verdict.endswith(f"; {note}; cell ⚠ bias A 90%; baseline ≈ chance")


def test_a_difference_from_other_targets_gets_no_note():
    # 8 questions, targets A A B B C C D D.
    # baseline:     A A C C D C D B   (right: q0 q1 q5 q6)
    # intervention: A A B A A C D A   (right: q0 q1 q2 q5 q6)
    # Answers A: 2 -> 5 (+3); B 1 -> 1, C 3 -> 1, D 2 -> 1: L = A. b = 0, c = 1 (q2, target B):
    # Δ = +1/8, Δ_A = 0, the rest +1/8: not a shift toward A.
    from outro_sweep.report.letter_bias import letter_shift

    targets = "AABBCCDD"
    baseline = [mc_record(i, t, p) for i, (t, p) in enumerate(zip(targets, "AACCDCDB"))]
    treatment = [mc_record(i, t, p) for i, (t, p) in enumerate(zip(targets, "AABAACDA"))]
    shift = letter_shift(baseline, treatment, [f"q{i}" for i in range(8)])
    assert (shift.letter, shift.baseline_share, shift.treatment_share) == ("A", 2 / 8, 5 / 8)
    assert (shift.b, shift.c, shift.b_letter, shift.c_letter) == (0, 1, 0, 0)
    assert shift.diff == 0.125 and shift.diff_letter == 0 and shift.diff_rest == 0.125
    assert not shift.mostly_shift
    # Only the paired questions count: without q2, Δ = 0.
    assert letter_shift(baseline, treatment, [f"q{i}" for i in range(8) if i != 2]).diff == 0
    # No letter's share rose: no decomposition.
    assert letter_shift(baseline, baseline, [f"q{i}" for i in range(8)]) is None


# ----------------------------------------------------------------------------- a real cell


def test_a_real_cell_records_its_letters_in_metrics_and_wandb(smollm2, tmp_path):
    out = tmp_path / "out"
    result = run_cli([*SINGLE, "logger.mode=offline"], out, out / "job")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = [c for c in (out / "cells").iterdir() if (c / "DONE").is_file()]
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((cell / "metrics.json").read_text())
    # Recounted from the predictions: builtin_mc questions are mc, scoring=logits always reads a letter.
    predicted = Counter(r["prediction"] for r in records if r["valid"])
    targets = Counter(r["target"] for r in records)
    assert metrics["n"] == len(records) == 8
    assert metrics["invalid"] == sum(not r["valid"] for r in records) == 0 and metrics["invalid_rate"] == 0
    assert metrics["predicted_letters"] == dict(sorted(predicted.items()))
    assert metrics["target_letters"] == dict(sorted(targets.items()))
    top, count = max(sorted(predicted.items()), key=lambda item: item[1])
    assert (metrics["top_letter"], metrics["top_letter_share"]) == (top, count / 8)
    assert metrics["chance"] == pytest.approx(sum(1 / len(r["options"]) for r in records) / 8)
    near_chance = metrics["ci_low"] <= metrics["chance"] <= metrics["ci_high"]
    expected_flags = [*(["letter_bias"] if count / 8 > 0.6 else []), *(["ci_contains_chance"] if near_chance else [])]
    assert metrics["flags"] == expected_flags
    assert f"top letter {top} {100 * count / 8:.0f}%" in result.stdout

    (run_file,) = find_runs(out)
    summary = read_run(run_file).summary
    for letter, number in predicted.items():
        assert summary[f"predicted_letters/{letter}"] == number
    for letter, number in targets.items():
        assert summary[f"target_letters/{letter}"] == number
    for key in ("invalid", "invalid_rate", "chance", "top_letter", "top_letter_share", "flags"):
        assert summary[key] == metrics[key], key
