"""The LightningModule that answers one batch of video questions.

Every question yields exactly one record: answered rows from the model, rows whose clip
could not be decoded as error records (``error`` set, ``valid``/``correct`` false), so a
corrupt video costs one question, never the cell.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from outro_sweep.models.video_lm import LoadedVideoModel
from outro_sweep.predict.video_data import VideoItem
from outro_sweep.scoring.letters import choose_by_logits, letter_token_ids
from outro_sweep.scoring.answers import Score, score_answer


class VideoPredictor(pl.LightningModule):
    def __init__(self, loaded: LoadedVideoModel, scoring: str, max_new_tokens: int,
                 open_metric: str = "exact_match", wups=None) -> None:
        super().__init__()
        self.model = loaded.model
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.scoring = scoring  # "generate" | "logits" (mc-only benchmarks)
        self.max_new_tokens = max_new_tokens
        self.interventions = None  # the attached InterventionStack (outro_sweep.interventions.stack.Attached)
        self.open_metric = open_metric
        self.wups = wups
        self._letter_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self.seconds = 0.0  # wall time in predict_step (model + scoring), all batches of this process

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        # Only the processor tensors move; the items (frames, questions) stay on the host.
        if batch["inputs"] is not None:
            batch = dict(batch, inputs={k: v.to(device) if isinstance(v, torch.Tensor) else v
                                        for k, v in batch["inputs"].items()})
        return batch

    def _letters(self, letters: tuple[str, ...]) -> dict[str, list[int]]:
        if letters not in self._letter_ids:
            self._letter_ids[letters] = letter_token_ids(self.tokenizer, letters)
        return self._letter_ids[letters]

    def _generate(self, inputs: dict, max_new_tokens: int, **kwargs):
        # generate() derives the rotary positions (M-RoPE for Qwen) from the attention mask,
        # so a left-padded row is positioned as it would be alone.
        return self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            **self.loaded.loader.generate_kwargs(),
            **kwargs,
        )

    def _answers(self, inputs: dict, items: list[VideoItem]) -> list[tuple[str, Score]]:
        prompt_length = inputs["input_ids"].shape[1]
        if self.scoring == "logits":
            # One greedy step, raw logits (before any logits processor): (B, V) at the answer position.
            out = self._generate(inputs, 1, output_logits=True, return_dict_in_generate=True)
            logits = out.logits[0].float()
            answers = []
            for row, item in enumerate(items):
                letter = choose_by_logits(logits[row], self._letters(item.question.letters))
                answers.append((letter, score_answer(item.question, letter)))
            return answers
        generated = self._generate(inputs, self.max_new_tokens)
        texts = self.tokenizer.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)
        return [(text, score_answer(item.question, text, self.open_metric, self.wups))
                for text, item in zip(texts, items)]

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        started = time.perf_counter()
        usable, records = batch["usable"], []
        if usable:
            answers = self._answers(batch["inputs"], usable)
            diagnostics = self.interventions.sample_diagnostics() if self.interventions is not None else []
            for item, (output, score), diagnostic in zip(usable, answers, diagnostics or [{}] * len(usable)):
                records.append(video_record(item, output, score, diagnostic))
        for item in batch["failed"]:
            records.append(video_record(item, "", None, {}))
        self.seconds += time.perf_counter() - started
        return records


def video_record(item: VideoItem, output: str, score: Score | None, diagnostics: dict) -> dict:
    """One line of predictions.jsonl for a video question (``score`` None: the clip failed)."""
    question, clip = item.question, item.clip
    return {
        "index": item.index,
        "id": question.id,
        "video": question.video,
        "kind": question.kind,
        "question": question.question,
        "prompt_hash": question.prompt_hash,
        "category": question.category,
        "categories": question.category_dict,
        "output": output,
        "prediction": None if score is None else score.prediction,
        "target": question.answer,
        "references": [question.answer, *question.extra_answers],
        "valid": score is not None and score.prediction is not None,
        "correct": score is not None and score.correct,
        "score": 0.0 if score is None else score.score,
        "error": item.error,
        "frames": None if clip is None else clip.num_frames,
        "audio_seconds": None if clip is None or clip.audio is None else clip.audio.size / clip.audio_sample_rate,
        "video_cache": item.cache,
        "diagnostics": diagnostics,
    }
