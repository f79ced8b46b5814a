"""The LightningModule that answers one batch of questions, for every benchmark and model.

``predict_step`` returns one raw record per question (``record``): what the model produced
(the generated text; with ``scoring=logits`` each option letter's logit; with ``scoring=cloze``
each option's log-likelihood with its token and character counts), never a judgement
of it: scoring is a separate step over the finished cell (``outro_sweep.scoring.cell``).
A question whose clip could not be decoded yields an error record, so a corrupt video costs
one question, never the cell. The prediction writer persists the records as batches finish.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from outro_sweep.group.prefix import check_steps, step_criteria
from outro_sweep.models.base import LoadedModel
from outro_sweep.predict.cloze import ClozeOptions, option_loglikelihoods
from outro_sweep.predict.data import Item
from outro_sweep.predict.decode_timer import DecodeTimer, machine
from outro_sweep.predict.speed import add_timing
from outro_sweep.predict.letter_logits import letter_logits, letter_token_ids


class Predictor(pl.LightningModule):
    def __init__(self, loaded: LoadedModel, scoring: str, max_new_tokens: int, batch_size: int | None = None) -> None:
        super().__init__()
        self.model = loaded.model
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.scoring = scoring  # "generate" | "logits" | "cloze" (the last two: mc-only benchmarks)
        self.max_new_tokens = max_new_tokens
        self.attached = None  # the attached interventions (InterventionStack.attach), set while predicting
        self._letter_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self.seconds = 0.0  # wall time spent in predict_step, all batches of this process
        self.batch_size = batch_size  # predict.batch_size, recorded beside the measured speed
        self.timing: dict[str, float] = {}  # generate's prefill/decode sums (speed.TIMING_KEYS), all batches

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        # Only the model tensors move; the items (questions, frames) stay on the host, which
        # Lightning's generic collection mover refuses to do for frozen dataclasses.
        if batch["inputs"] is not None:
            batch = dict(batch, inputs={k: v.to(device) if isinstance(v, torch.Tensor) else v
                                        for k, v in batch["inputs"].items()})
        return batch

    def _letters(self, letters: tuple[str, ...]) -> dict[str, list[int]]:
        if letters not in self._letter_ids:
            self._letter_ids[letters] = letter_token_ids(self.tokenizer, letters)
        return self._letter_ids[letters]

    def machine(self) -> dict:
        """The device, torch threads and batch size the speed was measured with."""
        return machine(self.model.device, self.batch_size)

    def _generate(self, inputs: dict, stops: list[tuple[str, ...]]) -> list[str]:
        """Greedy answers; a row's answer ends before the first of its stop strings (generation
        itself ends once every row has met one of its own)."""
        prompt = inputs["input_ids"]  # (B, S), left-padded
        mask = inputs.get("attention_mask")
        timer = DecodeTimer(prompt.device, prompt.shape[0], int(mask.sum()) if mask is not None else prompt.numel())
        # the group replay's step keys come first: their copy to the host must be queued before the timer waits
        criteria = [*step_criteria(self.model), timer, *stop_criteria(self.tokenizer, stops, prompt.shape[1])]
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList(criteria),
            **self.loaded.loader.generate_kwargs(),
        )  # (B, S + new): the prompt, then the answer
        check_steps(self.model)
        add_timing(self.timing, timer.sums())
        texts = self.tokenizer.batch_decode(output[:, prompt.shape[1]:], skip_special_tokens=True)
        return [cut_at_stop(text, row_stops) for text, row_stops in zip(texts, stops)]

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        started = time.perf_counter()
        usable, hashes, records = batch["usable"], batch["prompt_hashes"], []
        if usable:
            if self.scoring == "logits":
                logits = self.loaded.loader.answer_logits(self.loaded, batch["inputs"])  # (B, V)
                answers = [("", {"logits": letter_logits(logits[row], self._letters(item.question.letters))})
                           for row, item in enumerate(usable)]
            elif self.scoring == "cloze":
                sums = option_loglikelihoods(self.loaded, batch["inputs"], batch["cloze"])
                answers = [("", cloze_fields(item.question, options, row_sums))
                           for item, options, row_sums in zip(usable, batch["cloze"], sums)]
            else:
                stops = [item.question.stop for item in usable]
                answers = [(text, {}) for text in self._generate(batch["inputs"], stops)]
            # {group: per-sample dict} per row of this prefill; {} per row for the stock model
            diagnostics = self.attached.sample_diagnostics() if self.attached is not None else []
            diagnostics = diagnostics or [{}] * len(usable)
            for item, (output, scores), diagnostic in zip(usable, answers, diagnostics):
                records.append(record(item, hashes[item.index], output, scores, diagnostic))
        for item in batch["failed"]:
            records.append(record(item, hashes[item.index], "", {}, {}))
        self.seconds += time.perf_counter() - started
        return records


class _AllRowsStopped(StoppingCriteria):
    """Ends generation once every row's answer holds one of that row's stop strings (what
    lm-eval's ``until`` does); rows without stop strings never end it early."""

    def __init__(self, tokenizer, stops: list[tuple[str, ...]], prompt_length: int) -> None:
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        done = [bool(row) and any(stop in text for stop in row) for text, row in zip(texts, self.stops)]
        return torch.tensor([all(done)] * len(done), device=input_ids.device)


def stop_criteria(tokenizer, stops: list[tuple[str, ...]], prompt_length: int) -> list[StoppingCriteria]:
    return [_AllRowsStopped(tokenizer, stops, prompt_length)] if any(stops) else []


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """The answer before the first stop string it holds (lm-eval's ``until``)."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def cloze_fields(question, options: ClozeOptions, sums: list[float]) -> dict:
    """What cloze scoring records per option, in letter order, so that the scorer needs no model:
    its summed log-probability, its token count and its character count (the option's text, as
    lm-eval's acc_norm divides by)."""
    return {"option_ll": sums, "option_tokens": [len(tokens) for tokens in options.tokens],
            "option_chars": [len(option) for option in question.options]}


def record(item: Item, prompt_hash: str, output: str, scores: dict | None, diagnostics: dict) -> dict:
    """One raw line of a prediction shard; scoring adds ``prediction``/``valid``/``correct``/``score``."""
    question, clip = item.question, item.clip
    raw = {
        "index": item.index,
        "id": question.id,
        "kind": question.kind,
        "question": question.question,
        "options": list(question.options),
        "target": question.answer,
        "references": list(question.references),
        "category": question.category,
        "categories": question.category_dict,
        "prompt_hash": prompt_hash,  # of the rendered prompt the model read
        "output": output,  # the generated text ("" with scoring=logits and for an error record)
        "error": item.error,
        "diagnostics": diagnostics,  # {intervention group: per-sample dict}; {} for the stock model
    }
    if question.rotation is not None:  # benchmark.circular=true (outro_sweep.scoring.circular)
        raw.update(rotation=question.rotation, question_id=question.question_id)
    # scoring=logits: "logits", option letter -> logit; scoring=cloze: cloze_fields
    raw.update(scores or {})
    if question.video is not None:
        raw.update({
            "video": question.video,
            "frames": None if clip is None else clip.num_frames,
            "audio_seconds": None if clip is None or clip.audio is None else clip.audio.size / clip.audio_sample_rate,
            "video_cache": item.cache,
        })
    return raw
