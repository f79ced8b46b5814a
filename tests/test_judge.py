"""The optional LLM judge for open-ended answers: reply parsing, config checks, Hydra
composition of conf/judge/, summary metrics, and an end-to-end run with the real SmolLM2."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from outro_sweep.errors import ConfigError
from outro_sweep.scoring.judge import LLMJudge, judge_summary, parse_judgement
from outro_sweep.models.hf_causal_lm import HFCausalLM
from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.scoring.stats import wilson_interval
from tests.conftest import REPO_ROOT

CONF_DIR = REPO_ROOT / "conf"
PROMPT = "Q: {question}\nReference: {answer}\nPredicted: {prediction}\nReply {'pred': 'yes', 'score': 5}."
SMOLLM2_CACHE = os.environ.get("OUTRO_SWEEP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "outro_sweep"))


def build(node):
    """Hydra's instantiate, unwrapping our ConfigError as the cell does."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


# ---- parsing the judge's reply -------------------------------------------------------------

@pytest.mark.parametrize(
    "reply, expected",
    [
        ("{'pred': 'yes', 'score': 4}", ("yes", 4)),  # the requested python dict
        ('{"pred": "no", "score": 0}', ("no", 0)),  # JSON
        ("Sure! Here is my evaluation:\n{'pred': 'yes', 'score': 5}\nThe answers match.", ("yes", 5)),
        ("The correct answer is:\n{\n  \"pred\": \"Yes\",\n  \"score\": 3\n}", ("yes", 3)),  # multi-line, capital
        ("{'Pred': 'NO', 'Score': '1'}", ("no", 1)),  # keys and values in odd case, score as text
        ("{'pred': 'yes', 'score': 4.0}", ("yes", 4)),  # an integral float is still an integer
        ("{'pred': 'yes', 'score", ("yes", None)),  # cut off by max_new_tokens
        ("Pred: no, Score: 2", ("no", 2)),  # key-value prose
        ("I would give it a score of 3. pred: yes", ("yes", 3)),
        ("yes, 4", ("yes", 4)),  # bare
        ("No. 1", ("no", 1)),
        ("Yep, 5", ("yes", 5)),
        ("yes", ("yes", None)),
        ("The prediction is wrong, no", ("no", None)),
        ("The correct answer is 4. The predicted answer is 4.", (None, None)),  # a number, no verdict
        ("The woman holding is a small dog.", (None, None)),  # garbage
        ("", (None, None)),
        ("Not sure: yes or no", (None, None)),  # both words, neither first: undecided
        ("yes and no", ("yes", None)),  # the first word decides (scoring_open.parse_yes_no)
        ("{'pred': 'maybe', 'score': 2}", (None, 2)),  # a verdict that is neither yes nor no
        ("{'pred': 'yes', 'score': 7}", ("yes", None)),  # out of range: not clipped to 5
        ("{'pred': 'no', 'score': -1}", ("no", None)),
        ("{'pred': 'yes', 'score': 4.5}", ("yes", None)),  # not an integer
        ("{'pred': 'yes', 'score': True}", ("yes", None)),  # bool is not a score
        ("yes, 10", ("yes", None)),
    ],
)
def test_parse_judgement(reply, expected):
    assert parse_judgement(reply) == expected


# ---- config checks -------------------------------------------------------------------------

def smollm2_loader() -> SmolLM2:
    return SmolLM2(cache_dir=SMOLLM2_CACHE)


@pytest.mark.parametrize(
    "overrides, key, fragment",
    [
        ({"prompt": "Q: {question}\nA: {answer}"}, "judge.prompt", "{prediction}"),
        ({"prompt": "no placeholders"}, "judge.prompt", "{question}, {answer}, {prediction}"),
        ({"prompt": ""}, "judge.prompt", "{question}"),
        ({"max_new_tokens": 0}, "judge.max_new_tokens=0", "integers >= 1"),
        ({"max_new_tokens": True}, "judge.max_new_tokens=true", "integers >= 1"),
        ({"batch_size": "8"}, "judge.batch_size='8'", "integers >= 1"),
        ({"model": {"_target_": "x"}}, "judge.model", "conf/model/"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(overrides, key, fragment):
    kwargs = {"model": smollm2_loader(), "prompt": PROMPT, **overrides}
    with pytest.raises(ConfigError) as err:
        LLMJudge(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key) and "valid values" in message and fragment in message


def test_identity_records_model_and_exact_prompt():
    judge = LLMJudge(smollm2_loader(), PROMPT, max_new_tokens=5, batch_size=2)
    identity = judge.identity()
    assert identity == {
        "model": "smollm2_135m",
        "model_path": None,  # the smollm2 loader has no model.path
        "loader": "outro_sweep.models.smollm2.SmolLM2",
        "dtype": "float32",
        "prompt": PROMPT,
        "prompt_sha256": hashlib.sha256(PROMPT.encode()).hexdigest()[:16],
        "max_new_tokens": 5,
        "batch_size": 2,
    }
    other = LLMJudge(HFCausalLM(path="/data/Qwen2.5-7B-Instruct", dtype="bfloat16"), PROMPT + " ")
    assert other.identity()["model_path"] == "/data/Qwen2.5-7B-Instruct"
    assert other.identity()["loader"] == "outro_sweep.models.hf_causal_lm.HFCausalLM"
    assert other.identity()["dtype"] == "bfloat16"
    assert other.identity()["prompt_sha256"] != identity["prompt_sha256"]  # one space more is another judge


def test_render_prompt_substitutes_once_and_keeps_other_braces():
    judge = LLMJudge(smollm2_loader(), PROMPT)
    record = {"question": "What is {answer}?", "target": ["a dog", "puppy"], "output": " a cat\n"}
    assert judge.render_prompt(record) == (
        "Q: What is {answer}?\nReference: a dog / puppy\nPredicted: a cat\nReply {'pred': 'yes', 'score': 5}."
    )


def test_importing_the_judge_does_not_import_torch():
    # Building an LLMJudge is a config check; it must not cost the seconds of importing torch.
    code = "import sys, outro_sweep.scoring.judge; print('torch' in sys.modules, 'lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.split() == ["False", "False"]


# ---- Hydra composition of conf/judge/ ------------------------------------------------------

def compose_with_judge_llm(*overrides: str, config_dir: Path = CONF_DIR):
    """The root config with judge=llm: `judge=llm` once config.yaml lists `judge: "off"` in its
    defaults (the cell's wiring), `+judge=llm` while it does not (Hydra accepts only one of the two)."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        switch = "judge=llm" if "judge" in compose(config_name="config") else "+judge=llm"
        return compose(config_name="config", overrides=[switch, *overrides])


def test_compose_judge_llm_brings_the_smollm2_loader():
    cfg = compose_with_judge_llm()
    assert cfg.judge.enabled is True
    assert cfg.judge._target_ == "outro_sweep.scoring.judge.LLMJudge"
    assert cfg.judge.model._target_ == "outro_sweep.models.smollm2.SmolLM2"
    assert cfg.judge.model.cache_dir == cfg.paths.cache_dir  # interpolations resolve from the root
    assert all("{" + p + "}" in cfg.judge.prompt for p in ("question", "answer", "prediction"))
    judge = build(cfg.judge)  # every YAML key is a constructor argument
    assert isinstance(judge, LLMJudge) and isinstance(judge.model, SmolLM2)
    assert judge.identity()["prompt"] == cfg.judge.prompt
    assert (judge.max_new_tokens, judge.batch_size) == (cfg.judge.max_new_tokens, cfg.judge.batch_size)


def test_compose_switches_the_judge_model_and_leaves_the_answering_model():
    # A nested group choice is named by its package: model@judge.model (not judge/model, which
    # would need a conf/judge/model/ folder).
    cfg = compose_with_judge_llm("model@judge.model=hf_causal_lm", "judge.model.path=/data/Qwen2.5-7B-Instruct")
    assert cfg.judge.model._target_ == "outro_sweep.models.hf_causal_lm.HFCausalLM"
    assert cfg.model._target_ == "outro_sweep.models.smollm2.SmolLM2"  # the answering model is untouched
    assert build(cfg.judge).identity()["model_path"] == "/data/Qwen2.5-7B-Instruct"


def test_compose_bad_judge_value_fails_in_one_line():
    cfg = compose_with_judge_llm("judge.max_new_tokens=0")
    with pytest.raises(ConfigError, match=r"^judge\.max_new_tokens=0 is invalid: valid values are integers >= 1$"):
        build(cfg.judge)


def test_judge_off_as_a_default_then_judge_llm(tmp_path):
    """The cell's wiring: `judge: "off"` in the primary defaults (quoted: a bare off is YAML's
    false, which Hydra rejects in a defaults list); `judge=llm` switches it on."""
    conf = shutil.copytree(CONF_DIR, tmp_path / "conf")
    primary = (conf / "config.yaml").read_text()
    if "- judge:" not in primary:  # not wired yet: wire it here as the lead will
        assert "  - _self_\n" in primary
        primary = primary.replace("  - _self_\n", '  - judge: "off"\n  - _self_\n', 1)
        (conf / "config.yaml").write_text(primary)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        off = compose(config_name="config")
    on = compose_with_judge_llm("model@judge.model=hf_causal_lm", "judge.model.path=/data/judge", config_dir=conf)
    assert dict(off.judge) == {"enabled": False}
    assert on.judge.enabled is True and on.judge.model.path == "/data/judge"


# ---- summary metrics -----------------------------------------------------------------------

def test_judge_summary_counts_unparsable_as_no():
    judged = [("yes", 4), ("no", 1), (None, None), ("yes", None)]
    records = [{"index": i, "judge": {"output": "", "verdict": v, "score": s}} for i, (v, s) in enumerate(judged)]
    records += [{"index": 4, "judge": None}, {"index": 5}]  # not judged: left out
    summary = judge_summary(records)
    low, high = wilson_interval(2, 4)
    assert summary == {
        "judge_n": 4, "judge_yes": 2, "judge_accuracy": 0.5, "judge_ci_low": low, "judge_ci_high": high,
        "judge_score_mean": 2.5, "judge_scored": 2, "judge_unparsable": 1,
    }
    empty = judge_summary([{"index": 0, "judge": None}])
    assert empty["judge_n"] == 0 and math.isnan(empty["judge_accuracy"]) and math.isnan(empty["judge_score_mean"])


# ---- end to end with the real SmolLM2 judge ------------------------------------------------

class CountingSmolLM2(SmolLM2):
    """The real SmolLM2 loader, counting its loads (the judge must load only when needed)."""

    loads = 0

    def load(self):
        self.loads += 1
        return super().load()


class BatchRecorder:
    """A Lightning callback that keeps what the judge model was actually fed."""

    def __init__(self) -> None:
        self.batches: list[dict] = []

    def as_callback(self):
        from lightning.pytorch.callbacks import Callback

        recorder = self

        class _Recorder(Callback):
            def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
                recorder.batches.append({
                    "prompts": [item.question.prompt for item in batch["usable"]],
                    "token_text": pl_module.tokenizer.batch_decode(batch["inputs"]["input_ids"],
                                                                   skip_special_tokens=True),
                    "last_is_real": bool(batch["inputs"]["attention_mask"][:, -1].all()),  # left padding
                })

        return _Recorder()


OPEN_RECORDS = [
    {"index": 0, "kind": "open", "question": "What color is the car the man is washing?", "target": "red",
     "output": "The car is red.", "error": None},
    {"index": 1, "kind": "mc", "question": "Which sport is shown? A. golf B. tennis", "target": "B",
     "output": "B", "error": None},
    {"index": 2, "kind": "open", "question": "What is the woman holding?", "target": "umbrella",
     "output": "a small dog", "error": None},
    {"index": 3, "kind": "open", "question": "How many dogs are there?", "target": "2", "output": None,
     "error": "video file missing"},
    {"index": 4, "kind": "open", "question": "Where are the people dancing?", "target": "on the beach",
     "output": "beach", "error": None},
]
JUDGED = (0, 2, 4)


def run_judge(judge: LLMJudge, records: list[dict]) -> tuple[list[dict], BatchRecorder]:
    import lightning.pytorch as pl

    recorder = BatchRecorder()

    def trainer_factory():
        return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, accelerator="cpu", devices=1,
                          callbacks=[recorder.as_callback()])

    return judge.judge(records, trainer_factory=trainer_factory), recorder


def test_judge_end_to_end_with_smollm2():
    loader = CountingSmolLM2(cache_dir=SMOLLM2_CACHE)
    judge = LLMJudge(loader, PROMPT, max_new_tokens=16, batch_size=2)

    first, recorder = run_judge(judge, OPEN_RECORDS)
    assert loader.loads == 1
    assert [r["index"] for r in first] == [r["index"] for r in OPEN_RECORDS]
    for source, result in zip(OPEN_RECORDS, first):
        assert {k: v for k, v in result.items() if k != "judge"} == source  # the record itself is unchanged
        if source["index"] in JUDGED:
            judgement = result["judge"]
            assert set(judgement) == {"output", "verdict", "score"}
            assert isinstance(judgement["output"], str) and judgement["output"]
            assert (judgement["verdict"], judgement["score"]) == parse_judgement(judgement["output"])
        else:
            assert result["judge"] is None  # mc and errored records are never judged
    assert "judge" not in OPEN_RECORDS[0]  # new dicts, the input is not modified

    # What the judge model was fed: 3 prompts in batches of 2, left-padded, each holding its
    # record's question, reference and prediction, in record order.
    assert [len(b["prompts"]) for b in recorder.batches] == [2, 1]
    assert all(b["last_is_real"] for b in recorder.batches)
    fed_prompts = [p for b in recorder.batches for p in b["prompts"]]
    fed_tokens = [t for b in recorder.batches for t in b["token_text"]]
    for index, prompt, tokens in zip(JUDGED, fed_prompts, fed_tokens):
        record = OPEN_RECORDS[index]
        assert prompt == judge.render_prompt(record)
        for text in (record["question"], f"Reference: {record['target']}", f"Predicted: {record['output']}"):
            assert text in prompt and text in tokens

    second, _ = run_judge(judge, OPEN_RECORDS)
    assert loader.loads == 2
    assert second == first  # greedy: the same judge gives the same verdicts

    summary = judge_summary(first)
    verdicts = [first[i]["judge"]["verdict"] for i in JUDGED]
    scores = [first[i]["judge"]["score"] for i in JUDGED if first[i]["judge"]["score"] is not None]
    assert summary["judge_n"] == 3
    assert summary["judge_yes"] == verdicts.count("yes")
    assert summary["judge_accuracy"] == verdicts.count("yes") / 3
    assert summary["judge_unparsable"] == verdicts.count(None)
    assert summary["judge_scored"] == len(scores)
    if scores:
        assert summary["judge_score_mean"] == sum(scores) / len(scores)
    else:
        assert math.isnan(summary["judge_score_mean"])


def test_judge_does_not_load_the_model_without_open_answers():
    loader = CountingSmolLM2(cache_dir=SMOLLM2_CACHE)
    judge = LLMJudge(loader, PROMPT)
    records = [OPEN_RECORDS[1], OPEN_RECORDS[3]]  # one mc, one open answer that failed
    result = judge.judge(records, trainer_factory=lambda: pytest.fail("no trainer may be built"))
    assert loader.loads == 0
    assert [r["judge"] for r in result] == [None, None]
