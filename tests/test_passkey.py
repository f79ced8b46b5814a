"""The passkey benchmark without a model: every answer read back from the prompt text alone,
determinism, the letter balance, the token lengths against SmolLM2's real tokenizer, the
refusals (bad settings, a context longer than the model's positions, before the model loads)
and the scoring of generated numbers."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hydra import compose, initialize_config_dir

from outro_sweep.benchmarks.passkey import FILLER, Passkey, estimate_tokens
from outro_sweep.benchmarks.prompting import MC_INSTRUCTION, SHORT_ANSWER_INSTRUCTION
from outro_sweep.errors import ConfigError
from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.preflight.checks import check_cell
from outro_sweep.scoring.answers import Scorer
from tests.conftest import REPO_ROOT

KEY = re.compile(r"The pass key is (\d{5})\. Remember it\. (\d{5}) is the pass key\.")
INTRO_END = "about the important information there."


def read_back(prompt: str) -> dict:
    """What the prompt text says, parsed without the benchmark's code: the key, the filler
    sentences before and after it, and the options (mc)."""
    keys = KEY.findall(prompt)
    assert len(keys) == 1 and keys[0][0] == keys[0][1], prompt[:300]
    key = keys[0][0]
    body, rest = prompt.split("\nWhat is the pass key?\n")
    before, after = body.split(KEY.search(body).group(0))
    before = before.split(INTRO_END, 1)[1]
    count = lambda text: len(re.findall(r"[^.]+\.", text))  # noqa: E731 (sentences end in ".")
    options = [line.split(". ", 1) for line in rest.split("\n")[:-1]]
    return {"key": key, "before": count(before), "after": count(after), "options": options, "last": rest}


@pytest.mark.parametrize("form", ["generate", "mc"])
def test_answers_recomputed_from_the_prompt_text(form):
    benchmark = Passkey(context_tokens=[300, 700], depths=[0.0, 0.25, 0.5, 1.0], num_questions=8, form=form)
    questions = benchmark.load()
    assert len(questions) == 8 * 2 * 4 and len({q.id for q in questions}) == len(questions)
    for q in questions:
        seen = read_back(q.prompt)
        depth, filler = float(q.category_dict["depth"]), seen["before"] + seen["after"]
        assert seen["before"] == round(depth * filler), q.id  # the key sits at its depth
        assert q.category_dict["context"] in ("300", "700") and q.id.startswith(f"passkey/{q.category_dict['context']}/")
        if form == "generate":
            assert q.kind == "open" and q.references == (seen["key"],)
            assert seen["last"] == SHORT_ANSWER_INSTRUCTION
            continue
        assert seen["last"].endswith(MC_INSTRUCTION) and q.kind == "mc"
        letters = [letter for letter, _ in seen["options"]]
        texts = [text for _, text in seen["options"]]
        assert letters == list("ABCD") and tuple(texts) == q.options
        assert texts[ord(q.answer) - ord("A")] == seen["key"]
        for wrong in texts:
            if wrong != seen["key"]:  # one digit off, and nowhere in the text
                assert len(wrong) == 5 and sum(a != b for a, b in zip(wrong, seen["key"])) == 1
                assert wrong not in q.prompt.split("\nWhat is the pass key?")[0]
        assert len(set(texts)) == 4


def test_deterministic_and_stable_under_more_settings():
    assert Passkey(seed=3, context_tokens=400).load() == Passkey(seed=3, context_tokens=400).load()
    keys = lambda b: [q.references for q in b.load()]  # noqa: E731
    assert keys(Passkey(seed=3, context_tokens=400)) != keys(Passkey(seed=4, context_tokens=400))
    # Adding a length or a depth leaves the other questions as they were; limit takes a prefix.
    small = Passkey(context_tokens=400, depths=[0.5], num_questions=5).load()
    large = Passkey(context_tokens=[400, 600], depths=[0, 0.5, 1], num_questions=5).load()
    by_id = {q.id: q for q in large}
    assert all(by_id[q.id] == q for q in small)
    assert Passkey(context_tokens=[400, 600], limit=7).load() == Passkey(context_tokens=[400, 600]).load()[:7]
    # The first questions cover every (length, depth) pair, so a limit keeps the mix balanced.
    assert len({(q.category_dict["context"], q.category_dict["depth"]) for q in large[:6]}) == 6


def test_mc_letters_evenly_spread_per_length_and_depth():
    questions = Passkey(context_tokens=[300, 500], depths=[0, 1], num_questions=21, form="mc", num_options=3).load()
    for pair in {(q.category, q.category_dict["depth"]) for q in questions}:
        counts = Counter(q.answer for q in questions if (q.category, q.category_dict["depth"]) == pair)
        assert sorted(counts) == ["A", "B", "C"] and max(counts.values()) - min(counts.values()) <= 1


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2's real tokenizer (no weights)."""
    return SmolLM2(cache_dir=SmolLM2_CACHE).load_processor()


SmolLM2_CACHE = "~/.cache/outro_sweep"


@pytest.mark.parametrize("form", ["generate", "mc"])
def test_lengths_in_smollm2_tokens(tokenizer, form):
    """The estimate is SmolLM2's exact count of the prompt, and the chat-rendered prompt plus
    the answer fills ``context_tokens`` to within one filler sentence (and never past it)."""
    lengths = [Passkey(form=form).shortest_context(), 256, 1024, 4096, 8192]
    benchmark = Passkey(context_tokens=lengths, depths=[0.0, 0.5, 1.0], num_questions=2, form=form)
    longest_sentence = max(estimate_tokens(" " + s) for s in FILLER)
    for q in benchmark.load():
        assert estimate_tokens(q.prompt) == len(tokenizer(q.prompt, add_special_tokens=False).input_ids), q.id
        chat = tokenizer.apply_chat_template([{"role": "user", "content": q.prompt}], tokenize=False,
                                             add_generation_prompt=True)
        total = len(tokenizer(chat, add_special_tokens=False).input_ids) + benchmark.max_new_tokens
        context = int(q.category)
        assert context - longest_sentence - 2 <= total <= context, (q.id, total)


def test_smollm2_positions_read_from_its_config_or_gguf(tmp_path):
    """8192 from the converted folder's config.json, and the same from the GGUF header when
    nothing is converted yet (a fresh cache): no weights are read either way."""
    assert SmolLM2(cache_dir=SmolLM2_CACHE).max_positions() == 8192
    fresh = SmolLM2(cache_dir=str(tmp_path))
    assert fresh.max_positions() == 8192 and not fresh.converted_dir.exists()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=["benchmark=passkey", "outro=off", *overrides])


def test_a_context_past_the_models_positions_is_refused_before_load(monkeypatch, tiny_model_dir):
    def no_load(self):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(SmolLM2, "load", no_load)
    with pytest.raises(ConfigError) as info:
        check_cell(composed("benchmark.context_tokens=[1024,8193]"))
    message = str(info.value)
    assert message.startswith("benchmark.context_tokens=8193 exceeds the 8192 positions of model=smollm2_135m")
    assert "valid values are <= 8192" in message and "\n" not in message
    check_cell(composed("benchmark.context_tokens=[1024,8192]"))  # the limit itself fits
    # Any causal LM: its own config's max_position_embeddings (the tiny Llama's default, 2048).
    tiny = ("model=hf_causal_lm", f"model.path={tiny_model_dir}")
    with pytest.raises(ConfigError, match=r"^benchmark.context_tokens=4096 exceeds the 2048 positions of model=hf"):
        check_cell(composed(*tiny, "benchmark.context_tokens=4096"))


@pytest.mark.parametrize(
    "kwargs,start",
    [
        ({"context_tokens": 0}, "benchmark.context_tokens=0 is invalid"),
        ({"context_tokens": []}, "benchmark.context_tokens=[] is invalid"),
        ({"context_tokens": 100}, "benchmark.context_tokens=100 leaves no room for filler text: valid values are >= 123"),
        ({"depths": [1.5]}, "benchmark.depths=[1.5] is invalid"),
        ({"depths": []}, "benchmark.depths=[] is invalid"),
        ({"form": "text"}, "benchmark.form=text is invalid"),
        ({"num_options": 10, "form": "mc"}, "benchmark.num_options=10 is invalid"),
        ({"num_questions": 0}, "benchmark.num_questions=0 is invalid"),
        ({"scoring": "logits"}, "benchmark.scoring=logits reads option-letter logits, and benchmark.form=generate"),
    ],
)
def test_bad_settings_refused_in_one_line(kwargs, start):
    with pytest.raises(ConfigError) as info:
        Passkey(**kwargs)
    message = str(info.value)
    assert message.startswith(start) and "valid values" in message and "\n" not in message


@pytest.mark.parametrize(
    "output,prediction,correct",
    [
        ("48213", "48213", True),
        ("The pass key is 48213.", "48213", True),
        ("The pass key is 48,213.", "48213", True),
        ("48213 is the pass key, not 11111", "48213", True),
        ("The pass key is 4821.", "4821", False),
        ("1. The pass key is 48213.", "1", False),  # the first number said is the answer
        ("I do not know.", None, False),
    ],
)
def test_generated_numbers_scored_by_the_first_number(output, prediction, correct):
    scorer = Scorer.for_benchmark({"_target_": "outro_sweep.benchmarks.passkey.Passkey"})
    score = scorer.score({"kind": "open", "output": output, "references": ["48213"], "categories": {}})
    assert (score.prediction, score.correct, score.score) == (prediction, correct, float(correct))
