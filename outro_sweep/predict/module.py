"""The LightningModule that answers one batch of questions, for every benchmark and model.

``predict_step`` returns one raw record per question (``record``): what the model produced
(the generated text; with ``scoring=logits`` each option letter's logit), never a judgement
of it: scoring is a separate step over the finished cell (``outro_sweep.scoring.cell``).
A question whose clip could not be decoded yields an error record, so a corrupt video costs
one question, never the cell. The prediction writer persists the records as batches finish.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from transformers import StoppingCriteriaList

from outro_sweep.models.base import LoadedModel
from outro_sweep.predict.data import Item
from outro_sweep.predict.decode_timer import DecodeTimer, machine
from outro_sweep.predict.speed import add_timing
from outro_sweep.scoring.letters import letter_logits, letter_token_ids


class Predictor(pl.LightningModule):
    def __init__(self, loaded: LoadedModel, scoring: str, max_new_tokens: int, batch_size: int | None = None) -> None:
        super().__init__()
        self.model = loaded.model
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.scoring = scoring  # "generate" | "logits" (mc-only benchmarks)
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

    def _generate(self, inputs: dict) -> list[str]:
        prompt = inputs["input_ids"]  # (B, S), left-padded
        mask = inputs.get("attention_mask")
        timer = DecodeTimer(prompt.device, prompt.shape[0], int(mask.sum()) if mask is not None else prompt.numel())
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([timer]),  # stamps each step; never stops generation
            **self.loaded.loader.generate_kwargs(),
        )  # (B, S + new): the prompt, then the answer
        add_timing(self.timing, timer.sums())
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        started = time.perf_counter()
        usable, hashes, records = batch["usable"], batch["prompt_hashes"], []
        if usable:
            if self.scoring == "logits":
                logits = self.loaded.loader.answer_logits(self.loaded, batch["inputs"])  # (B, V)
                answers = [("", letter_logits(logits[row], self._letters(item.question.letters)))
                           for row, item in enumerate(usable)]
            else:
                answers = [(text, None) for text in self._generate(batch["inputs"])]
            # {group: per-sample dict} per row of this prefill; {} per row for the stock model
            diagnostics = self.attached.sample_diagnostics() if self.attached is not None else []
            diagnostics = diagnostics or [{}] * len(usable)
            for item, (output, letters), diagnostic in zip(usable, answers, diagnostics):
                records.append(record(item, hashes[item.index], output, letters, diagnostic))
        for item in batch["failed"]:
            records.append(record(item, hashes[item.index], "", None, {}))
        self.seconds += time.perf_counter() - started
        return records


def record(item: Item, prompt_hash: str, output: str, logits: dict | None, diagnostics: dict) -> dict:
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
    if logits is not None:
        raw["logits"] = logits  # option letter -> logit (scoring=logits)
    if question.video is not None:
        raw.update({
            "video": question.video,
            "frames": None if clip is None else clip.num_frames,
            "audio_seconds": None if clip is None or clip.audio is None else clip.audio.size / clip.audio_sample_rate,
            "video_cache": item.cache,
        })
    return raw
