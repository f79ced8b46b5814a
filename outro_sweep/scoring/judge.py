"""An optional LLM judge for open-ended answers (ActivityNet-QA, MSVD-QA, MSRVTT-QA, TGIF-QA).

Open-ended video QA is usually scored the Video-ChatGPT way: a language model reads the
question, the correct answer and the predicted answer, and replies with a verdict and a
score, e.g. ``{'pred': 'yes', 'score': 4}``. Accuracy is the share of "yes" verdicts and the
score is averaged. Here the judge is a LOCAL model, itself a ``conf/model/`` loader, so a
cell needs no network and no API account.

The judge is part of the measurement: another judge model or another prompt moves these
numbers by up to 10 points. ``LLMJudge.identity()`` therefore records the judge model, its
loader, the exact prompt and its hash, so every cell says which judge produced its numbers.

Only records of kind "open" without an error are judged; multiple-choice and yes/no answers
already have exact scores. The judge model loads only when there is something to judge and
is freed afterwards, so it never sits beside the answering model longer than needed.

This module imports neither torch nor Lightning at import time (they are imported when the
judge runs), so building an ``LLMJudge`` from a config stays a cheap check.
"""

from __future__ import annotations

import ast
import gc
import hashlib
import json
import logging
import math
import re
import warnings
from dataclasses import dataclass
from typing import Annotated

from outro_sweep.config.schema import Doc, Range, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.scoring.open_answers import NO_WORDS, YES_WORDS, parse_yes_no
from outro_sweep.scoring.stats import accuracy_summary

log = logging.getLogger(__name__)

PLACEHOLDERS = ("question", "answer", "prediction")
PROMPT_VALUES = "a text containing " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
SCORE_RANGE = range(0, 6)  # Video-ChatGPT scores are integers 0..5
# Placeholders are substituted in one pass, literally: other braces in the prompt (the example
# dict) stay as written, and a placeholder inside a prediction is never expanded a second time.
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

# ---- reading the judge's reply -------------------------------------------------------------

_DICT_SPAN = re.compile(r"\{[^{}]*\}")  # a flat {...}: the judge's dict has no nesting
# key-value forms that survive a truncated or badly quoted dict ("{'pred': 'yes', 'score': 4"
# cut off by max_new_tokens, "Pred: yes, Score: 4", "a score of 4", JSON with stray quotes).
_PRED_KEY = re.compile(r"""\bpred\b["']?\s*(?:[:=]|\bis\b)?\s*["']?\s*(yes|no)\b""", re.IGNORECASE)
_SCORE_KEY = re.compile(r"""\bscore\b["']?\s*(?:[:=]|\bis\b|\bof\b)?\s*["']?\s*(-?\d+(?:\.\d+)?)""", re.IGNORECASE)
_HAS_KEYS = re.compile(r"\b(pred|score)\b", re.IGNORECASE)
# the words parse_yes_no reads as a verdict ("yep, 4" is a bare "yes, 4")
_VERDICT_WORD = re.compile(r"\b(" + "|".join(sorted(YES_WORDS | NO_WORDS)) + r")\b", re.IGNORECASE)
# A bare number ("yes, 4"): not part of a word and not the "3" of "3.5" or "v3".
_BARE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w|\.\d)")


def _as_verdict(value) -> str | None:
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower()
    return None


def _as_score(value) -> int | None:
    """An integer 0..5 (4, 4.0, "4"); anything else, including 4.5, 7 and True, is None."""
    if isinstance(value, bool):  # bool is an int subclass; True is not a score
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and value in SCORE_RANGE:
        return value
    return None


def _literal_dict(text: str) -> dict | None:
    """The first {...} in the text that reads as a python dict or a JSON object."""
    for span in _DICT_SPAN.findall(text):
        for reader in (ast.literal_eval, json.loads):
            try:
                value = reader(span)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                # keys compared case-insensitively: small judges write 'Pred' or 'SCORE'
                return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def parse_judgement(text: str) -> tuple[str | None, int | None]:
    """(verdict "yes"/"no", score 0..5) from a judge's reply; None for what is absent or unparsable.

    Tried in order, each field on its own:

    1. a python dict or JSON object anywhere in the text: ``{'pred': 'yes', 'score': 4}``;
    2. ``pred: yes`` / ``score: 4`` key-value forms (a dict cut off by max_new_tokens);
    3. only when the reply names neither key: a bare answer like ``yes, 4`` - the verdict by
       ``scoring_open.parse_yes_no`` (first word, else the only yes/no word), the score as the
       first bare number after the first yes/no word (none without a verdict).

    A score outside 0..5 or not an integer is None (it is not clipped: 7 says the judge did
    not follow the instruction, not that the answer is perfect).
    """
    text = str(text or "")
    verdict = score = None
    found = _literal_dict(text)
    if found is not None:
        verdict = _as_verdict(found.get("pred"))
        score = _as_score(found.get("score"))
    if verdict is None and (match := _PRED_KEY.search(text)):
        verdict = match.group(1).lower()
    if score is None and (match := _SCORE_KEY.search(text)):
        score = _as_score(match.group(1))
    if found is None and not _HAS_KEYS.search(text):
        verdict, score = _bare_judgement(text)
    return verdict, score


def _bare_judgement(text: str) -> tuple[str | None, int | None]:
    """ "yes, 4": the verdict, then the first bare number AFTER it. A number with no verdict
    before it is not taken: in "The correct answer is 4." it is part of an answer, not a score."""
    verdict = parse_yes_no(text)
    if verdict is None:
        return None, None
    after = text[_VERDICT_WORD.search(text).end():]
    number = _BARE_NUMBER.search(after)
    return verdict, _as_score(number.group(0)) if number else None


# ---- the judge ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeRequest:
    """One answer to judge: duck-types the ``Question`` the predict collator reads (``.prompt``,
    ``.video``, ``.template``, ``.continuations``, ``.cloze``, ``.stop``)."""

    record_index: int  # the record's ``index`` (its position in the cell)
    prompt: str  # the rendered judge prompt, before the chat template
    video: None = None  # the judge reads text only
    template: bool = True  # through the judge model's chat template
    continuations: tuple = ()  # the judge generates its verdict, nothing is cloze-scored
    stop: tuple = ()
    cloze: bool = False


def default_trainer():
    """One-device Lightning Trainer for the judge's predict loop: no logs, no checkpoints."""
    import lightning.pytorch as pl

    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="auto", devices=1)


def _check_placeholders(prompt: str) -> str:
    """What the prompt's annotation cannot say: the placeholders it must hold."""
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in prompt]
    if missing:
        # The prompt itself is multi-line; the message names only what is missing.
        raise ConfigError(f"judge.prompt lacks {', '.join('{' + p + '}' for p in missing)}: "
                          f"valid values are {PROMPT_VALUES}")
    return prompt


def _reference_text(target) -> str:
    """The correct answer as the judge reads it; several references are listed with ' / '."""
    if isinstance(target, (list, tuple)):
        return " / ".join(str(t) for t in target)
    return str(target)


def should_judge(record: dict) -> bool:
    """Only open-ended answers that were produced: mc and yes/no have exact scores already."""
    return record.get("kind") == "open" and record.get("error") is None


class LLMJudge:
    """Grades open-ended answers with a local LLM (greedy, Lightning predict loop).

    ``model`` is a ``ModelLoader`` (Hydra instantiates the nested ``judge.model`` node); it is
    loaded by ``judge()`` only when some record needs judging, and freed before it returns.
    """

    config_key = "judge"  # the config group of its keys (prefixes them in messages)

    def __init__(self, model, prompt: Annotated[str, Doc(PROMPT_VALUES)], max_new_tokens: Annotated[int, Range(ge=1)] = 24,
                 batch_size: Annotated[int, Range(ge=1)] = 8, enabled: bool = True) -> None:
        check_arguments(LLMJudge, locals(), self.config_key)
        if not callable(getattr(model, "load", None)):
            raise ConfigError(
                f"judge.model={type(model).__name__} is not a model loader: valid values are the choices "
                "of conf/model/ (e.g. model@judge.model=hf_causal_lm judge.model.path=...)"
            )
        self.model = model
        self.prompt = _check_placeholders(prompt)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.enabled = enabled  # kept for the record; the cell decides whether to judge

    # -- what this judge is ----------------------------------------------------------------

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16]

    def identity(self) -> dict:
        """Everything that decides the judge's verdicts, for the cell's config and metrics."""
        loader = self.model
        dtype = getattr(loader, "dtype", None)
        return {
            "model": getattr(loader, "name", None),
            "model_path": getattr(loader, "path", None),  # hf_causal_lm has one; smollm2 does not
            "loader": f"{type(loader).__module__}.{type(loader).__qualname__}",
            "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "prompt": self.prompt,
            "prompt_sha256": self.prompt_sha256,
            "max_new_tokens": self.max_new_tokens,
            # left padding changes the float arithmetic a little, so batching is part of it
            "batch_size": self.batch_size,
        }

    def render_prompt(self, record: dict) -> str:
        values = {
            "question": str(record.get("question", "")).strip(),
            # every accepted reference where the record lists them (video records), else the target
            "answer": _reference_text(record.get("references") or record.get("target", "")).strip(),
            "prediction": str(record.get("output") or "").strip(),
        }
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.prompt)

    # -- judging -----------------------------------------------------------------------------

    def judge(self, records: list[dict], trainer_factory=None) -> list[dict]:
        """New records, each with ``judge``: {"output", "verdict", "score"} or None (not judged).

        ``trainer_factory()`` returns the Lightning Trainer to predict with (default:
        ``default_trainer``); a test passes one with a callback to see the batches.
        """
        requests = [JudgeRequest(r["index"], self.render_prompt(r)) for r in records if should_judge(r)]
        replies = self._generate(requests, trainer_factory or default_trainer) if requests else {}
        judged = []
        for record in records:
            judgement = None
            if should_judge(record):
                output = replies[record["index"]]
                verdict, score = parse_judgement(output)
                judgement = {"output": output, "verdict": verdict, "score": score}
            judged.append({**record, "judge": judgement})
        return judged

    def _generate(self, requests: list[JudgeRequest], trainer_factory) -> dict[int, str]:
        """record index -> the judge's raw reply. Loads the judge model, runs it, frees it."""
        import torch

        # Deferred on purpose: it imports torch and transformers.
        from outro_sweep.predict.data import QuestionDataModule, QuestionDataset

        if len({r.record_index for r in requests}) != len(requests):
            raise ValueError("records to judge must have distinct 'index' values")
        loaded = self.model.load()
        log.info("judging %d open-ended answers with %s", len(requests), loaded.name)
        try:
            module = _generator_module(loaded, self.max_new_tokens)
            data = QuestionDataModule(QuestionDataset(requests), loaded, self.batch_size)
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # as the cell's own loop
            with warnings.catch_warnings():
                # Intended: only the tensors move to the device (see JudgeGenerator).
                warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
                trainer = trainer_factory()
                batches = trainer.predict(module, datamodule=data, return_predictions=True)
            # QuestionDataset positions index `requests`; map them back to the records' index.
            return {requests[pos].record_index: text for batch in batches for pos, text in batch}
        finally:
            # Free the judge before the caller goes on: a 7B judge next to the answering model
            # would not fit on many GPUs.
            module = data = trainer = batches = loaded = None  # noqa: F841 (drop the references)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _generator_module(loaded, max_new_tokens: int):
    """A LightningModule that greedily generates one reply per prompt of a batch.

    Defined on call so that importing this module does not import Lightning.
    """
    import lightning.pytorch as pl
    import torch

    class JudgeGenerator(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = loaded.model
            self.tokenizer = loaded.tokenizer

        def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
            # Only the tensors move; the request records stay as they are.
            return dict(batch, inputs={k: v.to(device) for k, v in batch["inputs"].items()})

        def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[int, str]]:
            input_ids = batch["inputs"]["input_ids"]  # (B, S) long, left-padded
            attention_mask = batch["inputs"]["attention_mask"]  # (B, S) 1 = real token
            # Greedy, as the answering model: the same judge gives the same verdicts on every run.
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )  # (B, S + new) long: the prompt, then the reply (right-padded after EOS)
            texts = self.tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True)
            return [(item.index, text.strip()) for item, text in zip(batch["usable"], texts)]

    return JudgeGenerator()


# ---- metrics ------------------------------------------------------------------------------


def judge_summary(records: list[dict]) -> dict:
    """Judge metrics over the records that were judged (those whose ``judge`` is not None).

    ``judge_accuracy`` is the share of "yes" verdicts, with its 95% Wilson interval; an
    unparsable verdict counts as "no" (and is counted in ``judge_unparsable``), as an
    unparsable answer counts as wrong. ``judge_score_mean`` averages the parsed scores only
    (``judge_scored`` of them); NaN when there are none, like an accuracy over no questions.
    """
    judgements = [r["judge"] for r in records if r.get("judge") is not None]
    overall = accuracy_summary([j["verdict"] == "yes" for j in judgements])
    scores = [j["score"] for j in judgements if j["score"] is not None]
    return {
        "judge_n": overall["n"],
        "judge_yes": overall["correct"],
        "judge_accuracy": overall["accuracy"],
        "judge_ci_low": overall["ci_low"],
        "judge_ci_high": overall["ci_high"],
        "judge_score_mean": sum(scores) / len(scores) if scores else math.nan,
        "judge_scored": len(scores),
        "judge_unparsable": sum(1 for j in judgements if j["verdict"] is None),
    }
