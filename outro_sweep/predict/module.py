"""The LightningModule that answers one batch of questions.

``predict_step`` returns one record per question; the prediction writer persists them as
batches finish, so nothing is held back until the end of the cell.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from outro_sweep.models.base import LoadedModel
from outro_sweep.scoring.letters import choose_by_logits, letter_token_ids, parse_choice


class MCPredictor(pl.LightningModule):
    def __init__(
        self,
        loaded: LoadedModel,
        scoring: str,
        max_new_tokens: int,
    ) -> None:
        super().__init__()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.scoring = scoring
        self.max_new_tokens = max_new_tokens
        self.interventions = None  # the attached InterventionStack (outro_sweep.interventions.stack.Attached)
        self._letter_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self.seconds = 0.0  # wall time spent in predict_step, all batches of this process

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        # Only the tensors move; the question records (frozen dataclasses) stay as they are,
        # which Lightning's generic collection mover refuses to do.
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _letters(self, letters: tuple[str, ...]) -> dict[str, list[int]]:
        if letters not in self._letter_ids:
            self._letter_ids[letters] = letter_token_ids(self.tokenizer, letters)
        return self._letter_ids[letters]

    def _generate(self, input_ids, attention_mask) -> list[str]:
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)

    def _answer_logits(self, input_ids, attention_mask) -> torch.Tensor:
        # Positions count real tokens only, so a left-padded row sees the positions it would alone.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1
        ).logits
        return logits[:, -1].float()  # (B, V) next-token logits at the answer position

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        started = time.perf_counter()
        items = batch["items"]
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if self.scoring == "generate":
            outputs = self._generate(input_ids, attention_mask)
            chosen = [parse_choice(text, item.question.letters) for text, item in zip(outputs, items)]
        else:
            logits = self._answer_logits(input_ids, attention_mask)
            chosen = [choose_by_logits(logits[i], self._letters(item.question.letters)) for i, item in enumerate(items)]
            outputs = list(chosen)
        diagnostics = self.interventions.sample_diagnostics() if self.interventions is not None else []
        diagnostics = diagnostics or [{}] * len(items)
        self.seconds += time.perf_counter() - started
        records = []
        for item, output, answer, diagnostic in zip(items, outputs, chosen, diagnostics):
            question = item.question
            records.append(
                {
                    "index": item.index,
                    "id": question.id,
                    "prompt_hash": question.prompt_hash,
                    "category": question.category,
                    "output": output,
                    "prediction": answer,
                    "target": question.answer,
                    "valid": answer is not None,
                    "correct": answer == question.answer,
                    "diagnostics": diagnostic,
                }
            )
        return records
