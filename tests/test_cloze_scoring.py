"""Cloze scoring without a model: questions, the scorer's acc and acc_norm, position statistics,
CircularEval's rotations, and the refusal of questions without options."""

from __future__ import annotations

import pytest

from outro_sweep.benchmarks.base import ask, expand_rotations
from outro_sweep.benchmarks.builtin_mc import BuiltinMC
from outro_sweep.errors import ConfigError
from outro_sweep.scoring.answers import Scorer
from outro_sweep.scoring.letter_stats import POSITION_BIAS, letter_stats
from outro_sweep.scoring.metrics import result_line, summarise


def record(option_ll, option_chars, target="A", **more) -> dict:
    options = [f"option {i}" for i in range(len(option_ll))]
    return {"kind": "mc", "output": "", "options": options, "references": [target], "target": target,
            "categories": {}, "category": "", "error": None, "option_ll": option_ll, "option_chars": option_chars,
            **more}


def test_acc_takes_the_highest_sum_and_acc_norm_the_highest_per_character():
    scorer = Scorer()
    # B: the highest sum (-3) and, over 8 characters, the highest per character (-0.375)
    fields = scorer.fields(record([-4.0, -3.0, -9.0], [1, 8, 2], target="B"))
    assert fields["prediction"] == "B" and fields["correct"]
    assert fields["prediction_norm"] == "B" and fields["correct_norm"]
    # A: the highest sum (-2 > -3); B: the highest per character (-3/12 = -0.25 > -2/1)
    fields = scorer.fields(record([-2.0, -3.0], [1, 12], target="A"))
    assert fields["prediction"] == "A" and fields["prediction_norm"] == "B" and not fields["correct_norm"]


def test_ties_go_to_the_first_option_as_numpys_argmax():
    fields = Scorer().fields(record([-1.0, -1.0, -1.0], [3, 3, 3], target="A"))
    assert fields["prediction"] == "A" and fields["prediction_norm"] == "A"


def test_an_error_record_is_wrong_under_both():
    fields = Scorer().fields(record([-1.0, -2.0], [1, 1], target="A", error="clip unreadable"))
    assert not fields["correct"] and fields["correct_norm"] is False and fields["prediction_norm"] is None


def test_positions_replace_letters_in_the_statistics_and_the_flag():
    scored = [{**r, **Scorer().fields(r)} for r in
              [record([0.0, -1.0, -2.0, -3.0], [1, 1, 1, 1], target=t) for t in "ABCDABCD"]]
    stats = letter_stats(scored, 0.1, 0.5)
    assert stats.by_position and stats.top_letter == "A" and stats.top_letter_share == 1.0
    assert POSITION_BIAS in stats.flags and "letter_bias" not in stats.flags
    metrics = summarise(scored, 1.0, len(scored), {})
    assert metrics["acc_norm"]["n"] == 8 and metrics["letters_are"] == "positions"
    assert "top position A 100%" in result_line(metrics, "cell") and "position bias" in result_line(metrics, "cell")


def test_circular_rotates_options_and_continuations_together():
    question = ask(id="q", question="Where is Mary?", options=("kitchen", "garden", "hall"), answer="B",
                   prefix="Mary went to the garden.\n", cloze=True)
    assert question.prompt == "Mary went to the garden.\nQuestion: Where is Mary?\nAnswer:"
    assert question.continuations == (" kitchen", " garden", " hall")
    rotations = expand_rotations([question])
    assert [q.prompt for q in rotations] == [question.prompt] * 3
    for rotated in rotations:
        index = rotated.letters.index(rotated.answer)
        assert rotated.options[index] == "garden" and rotated.continuations[index] == " garden"
        assert rotated.question_id == "q"


def test_any_mc_benchmark_is_scored_by_cloze():
    questions = BuiltinMC(num_questions=4, scoring="cloze").load()
    assert all(q.cloze and q.prompt.endswith("\nAnswer:") and "A. " not in q.prompt for q in questions)
    assert all(q.continuations == tuple(" " + o for o in q.options) for q in questions)


def test_cloze_on_open_questions_is_refused_in_one_line():
    from outro_sweep.benchmarks.passkey import Passkey

    with pytest.raises(ConfigError, match="benchmark.scoring=cloze scores the options") as raised:
        Passkey(scoring="cloze").load()
    assert "\n" not in str(raised.value)
