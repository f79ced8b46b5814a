"""Training examples for the gate: any benchmark's questions with their answers, as (media,
prompt, target). The prompt is rendered by the model's loader exactly as at prediction (chat
template, clip), the target (the option letter for mc, yes/no, an open question's first
reference) is appended, and only the target's tokens carry a label."""

from __future__ import annotations

import torch

from outro_sweep.predict.data import Item

IGNORE = -100  # cross-entropy's ignore_index: prompt and padding positions


class AnswerCollator:
    """Items -> ``{"inputs", "labels", "query"}``: the left-padded model inputs of prompt +
    answer (B, S), labels (B, S) holding the answer's token ids and IGNORE elsewhere, and
    ``query`` (B,) the position of each prompt's last token (where the gate reads the hidden
    state, as it does at prediction's prefill)."""

    def __init__(self, loaded) -> None:
        self.loaded = loaded

    def __call__(self, items: list[Item]) -> dict:
        loader, processor = self.loaded.loader, self.loaded.processor
        failed = [item.error for item in items if item.error is not None]
        if failed:
            raise RuntimeError(f"a training clip could not be used: {failed[0]}")
        answers = [item.question.answer for item in items]
        texts = [loader.render(processor, item.question.prompt) + answer for item, answer in zip(items, answers)]
        inputs = loader.inputs(processor, texts, [item.clip for item in items])
        ids = inputs["input_ids"]
        # The answer follows the rendered prompt's generation cue, so it tokenises alone as it
        # does inside the sequence; with left padding it is each row's last tokens.
        lengths = [len(self.loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers]
        labels = torch.full_like(ids, IGNORE)
        for row, length in enumerate(lengths):
            labels[row, -length:] = ids[row, -length:]
        query = torch.tensor([ids.shape[1] - 1 - length for length in lengths])
        return {"inputs": inputs, "labels": labels, "query": query}
