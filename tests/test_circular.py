"""``benchmark.circular`` (CircularEval) and ``benchmark.sample`` (stratified subsample), in-process.

Real parts: the built-in benchmark, real MMLU csv files and the real NExT-QA annotations of
../shared/data, the predictor's own record builder, the real scorer and metrics (``score_cell``),
configs composed from the real conf/. The one stand-in is the model of the always-"A" test: its
answer is written into the records as a generated text, because the point is what scoring and
metrics make of a model with a known, fixed letter bias; a real model cannot be made to have one.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from outro_sweep.benchmarks.base import expand_rotations, rotated
from outro_sweep.benchmarks.builtin_mc import BuiltinMC
from outro_sweep.benchmarks.mmlu import MMLU
from outro_sweep.benchmarks.nextqa import NExTQAMC
from outro_sweep.benchmarks.prompting import MC_INSTRUCTION
from outro_sweep.benchmarks.sampling import allocate
from outro_sweep.cell.identity import cell_identity, identity_of
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError
from outro_sweep.predict.data import Item
from outro_sweep.predict.module import record
from outro_sweep.predict.shards import ShardSet
from outro_sweep.report.paired import compare_paired
from outro_sweep.scoring.cell import score_cell
from outro_sweep.scoring.circular import circular_outcomes, plain_records, question_records
from outro_sweep.scoring.metrics import result_line

SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "college_biology"]  # 100, 135, 152, 144 test rows


def composed(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# ----------------------------------------------------------------------------- rotations


def test_rotations_of_a_real_mmlu_question_keep_the_fewshot_prefix(shared_data):
    mmlu = MMLU(data_dir=str(shared_data / "text_mc" / "mmlu"), subjects=["anatomy"], num_fewshot=2,
                limit=1, circular=True)
    questions = mmlu.load()
    plain = MMLU(data_dir=str(shared_data / "text_mc" / "mmlu"), subjects=["anatomy"], num_fewshot=2, limit=1).load()[0]
    assert [q.rotation for q in questions] == [0, 1, 2, 3]
    assert [q.id for q in questions] == [plain.id] + [f"{plain.id}#rot{r}" for r in (1, 2, 3)]
    assert {q.question_id for q in questions} == {plain.id}
    assert questions[0].prompt == plain.prompt  # rotation 0 is the plain question, prompt and all
    correct_text = plain.options[plain.letters.index(plain.answer)]
    header = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    for r, q in enumerate(questions):
        assert q.options == plain.options[r:] + plain.options[:r]
        assert q.options[q.letters.index(q.answer)] == correct_text  # the letter follows its option text
        assert q.prompt.startswith(header) and q.prompt.count("Answer: ") == 2  # both examples kept
        tail = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", q.options)) + "\n" + MC_INSTRUCTION
        assert q.prompt.endswith(plain.question + "\n" + tail)  # the shared MC format, options rotated


def test_rotations_of_a_real_nextqa_question(shared_data):
    root = shared_data / "video_qa" / "nextqa"
    plain = NExTQAMC(data_dir=str(root), split="val", limit=1).load()[0]
    questions = NExTQAMC(data_dir=str(root), split="val", limit=1, circular=True).load()
    # The first val row, by hand: options a0..a4, answer index 0 ("roll the handle", letter A).
    assert plain.options == ("roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand")
    assert [q.answer for q in questions] == ["A", "E", "D", "C", "B"]
    assert all(q.options[q.letters.index(q.answer)] == "roll the handle" for q in questions)
    assert questions[2].prompt == ("how do the two man play the instrument\nA. strum the string\nB. hit with sticks\n"
                                   "C. pat with hand\nD. roll the handle\nE. tap their feet\n" + MC_INSTRUCTION)
    assert {q.video for q in questions} == {plain.video} and {q.categories for q in questions} == {plain.categories}


def test_only_mc_questions_are_rotated_and_limit_counts_questions():
    questions = BuiltinMC(num_questions=20, num_options=3, limit=5, circular=True).load()
    assert len(questions) == 15 and len({q.question_id for q in questions}) == 5
    assert [(q.question_id, q.rotation) for q in questions] == [
        (qid, r) for qid in dict.fromkeys(q.question_id for q in questions) for r in range(3)]
    assert questions == BuiltinMC(num_questions=20, num_options=3, limit=5, circular=True).load()  # deterministic
    with pytest.raises(ValueError, match="rotation 3"):
        rotated(questions[0], 3)
    assert expand_rotations([]) == []


# ----------------------------------------------------------------------------- always "A"


def test_always_a_scores_circular_zero_and_plain_the_share_of_target_a(tmp_path):
    config = OmegaConf.to_container(composed("benchmark.num_questions=24", "benchmark.circular=true",
                                             "benchmark.scoring=generate"), resolve=True)
    benchmark = BuiltinMC(num_questions=24, circular=True)
    questions = benchmark.load()
    # The model's output is "A" for every prompt; everything after it is the real pipeline.
    raw = [record(Item(i, q), f"hash{i}", "A", None, {}) for i, q in enumerate(questions)]
    metrics, records = score_cell(ShardSet(shards=[], corrupt=[], records=raw, lines={}), config, tmp_path)
    plain = plain_records(records)
    share_a = sum(r["target"] == "A" for r in plain) / len(plain)
    assert len(plain) == 24 and len(records) == 96
    assert share_a == 6 / 24  # builtin_mc balances the correct letter within each block of 4
    assert metrics["accuracy"] == share_a and metrics["n"] == 24 and metrics["correct"] == 6
    assert metrics["circular"]["accuracy"] == 0.0 and metrics["circular"]["correct"] == 0
    assert metrics["circular"]["n"] == 24 and metrics["circular"]["rotations"] == 96
    assert json.loads((tmp_path / "metrics.json").read_text())["circular"]["accuracy"] == 0.0
    assert "circular accuracy 0.0000" in result_line(metrics, tmp_path)
    assert all(r["question_id"] == r["id"].split("#")[0] for r in records)
    assert set(circular_outcomes(records).values()) == {False}


def test_paired_circular_comparison_pairs_on_question_id():
    """Two hand-made circular cells of 3 questions x 2 rotations: the baseline is circular-right on
    q0 only, the treatment on q0 and q1 -> b = 0, c = 1 over 3 paired questions."""
    def cell(correct: dict) -> list[dict]:
        return [{"index": 2 * n + r, "id": f"q{n}" + (f"#rot{r}" if r else ""), "question_id": f"q{n}", "rotation": r,
                 "prompt_hash": f"h{n}{r}", "correct": correct[(n, r)], "category": "", "categories": {}}
                for n in range(3) for r in range(2)]
    base = cell({(0, 0): 1, (0, 1): 1, (1, 0): 1, (1, 1): 0, (2, 0): 0, (2, 1): 1})
    treat = cell({(0, 0): 1, (0, 1): 1, (1, 0): 1, (1, 1): 1, (2, 0): 1, (2, 1): 0})
    result = compare_paired(question_records(base), question_records(treat))
    assert (result.paired_n, result.b, result.c) == (3, 0, 1)
    assert result.baseline_accuracy == pytest.approx(1 / 3) and result.treatment_accuracy == pytest.approx(2 / 3)
    plain = compare_paired(plain_records(base), plain_records(treat))  # rotation 0: q2 only differs
    assert (plain.paired_n, plain.b, plain.c) == (3, 0, 1) and plain.pairing.ids == ["q0", "q1", "q2"]


# ----------------------------------------------------------------------------- sampling


def test_stratified_sample_of_real_mmlu_matches_the_hand_allocation(shared_data):
    root = str(shared_data / "text_mc" / "mmlu")
    # By hand, N = 20 of T = 531: quotas 100, 135, 152, 144 x 20/531 = 3.766, 5.085, 5.725, 5.424;
    # floors 3, 5, 5, 5 (18); the 2 left go to the largest remainders .766 and .725.
    questions = MMLU(data_dir=root, subjects=SUBJECTS, sample=20, sample_seed=0).load()
    assert Counter(q.category for q in questions) == {"abstract_algebra": 4, "anatomy": 5, "astronomy": 6,
                                                      "college_biology": 5}
    every = [q.id for q in MMLU(data_dir=root, subjects=SUBJECTS).load()]
    ids = [q.id for q in questions]
    assert ids == sorted(ids, key=every.index) and len(set(ids)) == 20  # file order, no repeat
    assert ids == [q.id for q in MMLU(data_dir=root, subjects=SUBJECTS, sample=20, sample_seed=0).load()]
    other = [q.id for q in MMLU(data_dir=root, subjects=SUBJECTS, sample=20, sample_seed=1).load()]
    assert other != ids and Counter(i.split("/")[1] for i in other) == Counter(q.category for q in questions)
    rotated_sample = MMLU(data_dir=root, subjects=SUBJECTS, sample=20, circular=True).load()
    assert [q.id for q in rotated_sample if q.rotation == 0] == ids  # rotations come after the sample


def test_allocation_gives_every_stratum_one_when_it_can():
    assert allocate([100, 135, 152, 144], 20) == [4, 5, 6, 5]
    # 98/100 x 3 rounds to 3, 0, 0; each small stratum then takes one from the large one.
    assert allocate([98, 1, 1], 3) == [1, 1, 1]
    assert allocate([98, 1, 1], 2) == [2, 0, 0]  # fewer draws than strata: proportional only
    assert allocate([5, 5], 10) == [5, 5] and allocate([3], 2) == [2]


def test_sample_errors_name_the_keys():
    with pytest.raises(ConfigError, match=r"benchmark\.limit=5 and benchmark\.sample=3"):
        BuiltinMC(num_questions=10, limit=5, sample=3)
    with pytest.raises(ConfigError, match=r"benchmark\.sample=11 exceeds the 10 questions .* valid values are 1\.\.10"):
        BuiltinMC(num_questions=10, sample=11).load()
    with pytest.raises(ConfigError, match="benchmark.sample"):
        BuiltinMC(num_questions=10, sample=0)


def test_circular_needs_mc_questions(shared_data):
    from outro_sweep.benchmarks.nextqa import NExTQAOE

    with pytest.raises(ConfigError, match="benchmark.circular=true .* valid values are circular=false"):
        NExTQAOE(data_dir=str(shared_data / "video_qa" / "nextqa"), split="val", limit=2, circular=True).load()


# ----------------------------------------------------------------------------- identity


def test_sample_and_circular_are_part_of_the_identity():
    plain = identity_of(composed())
    assert identity_of(composed("benchmark.circular=true")) != plain
    sampled = identity_of(composed("benchmark.sample=20"))
    assert sampled != plain and identity_of(composed("benchmark.sample=20", "benchmark.sample_seed=1")) != sampled
    assert identity_of(composed("benchmark.sample=21")) != sampled
    # Off, the keys select what a config without them does: one cell (seed meaningless without sample).
    without = OmegaConf.to_container(composed(), resolve=True)  # a config from before the keys existed
    for key in ("sample", "sample_seed", "circular"):
        del without["benchmark"][key]
    assert cell_identity(without) == plain
    assert identity_of(composed("benchmark.sample_seed=7")) == plain


def test_the_baseline_of_a_circular_cell_is_circular():
    from outro_sweep.report.settings import baseline_of
    from outro_sweep.cell.baseline import baseline_config, baseline_identity

    on = OmegaConf.to_container(composed("benchmark.circular=true", "outro.alpha=0.3"), resolve=True)
    base = OmegaConf.to_container(composed("benchmark.circular=true", "outro.enabled=false"), resolve=True)
    plain_base = OmegaConf.to_container(composed("outro.enabled=false"), resolve=True)
    assert baseline_config(on)["benchmark"]["circular"] is True
    assert baseline_identity(on) == identity_of(composed("benchmark.circular=true", "outro.enabled=false"))
    assert baseline_of(on) == baseline_identity(base) != baseline_identity(plain_base)
