"""Questions -> left-padded token batches for the Lightning predict loop."""

from __future__ import annotations

from dataclasses import dataclass

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from outro_sweep.benchmarks.base import MCQuestion


@dataclass
class IndexedQuestion:
    index: int  # position in the cell's question list (the predictions' sort key)
    question: MCQuestion


class QuestionDataset(Dataset):
    """The questions at ``indices`` (default: all), in that order; each item keeps its
    original index into ``questions``, so a resumed or multi-process cell's records are keyed
    exactly as a single uninterrupted run's."""

    def __init__(self, questions: list[MCQuestion], indices: list[int] | None = None) -> None:
        self.questions = questions
        self.indices = list(range(len(questions))) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < len(questions) for i in self.indices):
            raise IndexError(f"question indices out of range 0..{len(questions) - 1}")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> IndexedQuestion:
        index = self.indices[position]
        return IndexedQuestion(index, self.questions[index])


class PromptCollator:
    """Render each prompt (chat template or plain text) and tokenise with left padding.

    Left padding keeps every row's last real token at the end, where generation starts.
    """

    def __init__(self, tokenizer, use_chat_template: bool) -> None:
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def render(self, question: MCQuestion) -> str:
        if not self.use_chat_template:
            return question.prompt
        messages = [{"role": "user", "content": question.prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, items: list[IndexedQuestion]) -> dict:
        texts = [self.render(item.question) for item in items]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.use_chat_template)
        return {
            "input_ids": encoded["input_ids"],  # (B, S) long, left-padded
            "attention_mask": encoded["attention_mask"],  # (B, S) 1 = real token
            "items": items,
        }


class QuestionDataModule(pl.LightningDataModule):
    """``indices``: the questions this process predicts (default: all), already split among
    the processes of a multi-process cell, so Lightning's own distributed sampler is not used
    (``use_distributed_sampler=False``); a process may get none."""

    def __init__(self, questions, tokenizer, use_chat_template: bool, batch_size: int, num_workers: int = 0,
                 indices: list[int] | None = None):
        super().__init__()
        # A multi-process cell near its end may leave a process without questions: it still
        # takes part in the collectives and writes nothing.
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.dataset = QuestionDataset(questions, indices)
        self.collate = PromptCollator(tokenizer, use_chat_template)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )

