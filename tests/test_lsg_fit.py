"""Training LSG's gate (outro_sweep/fit/) with Lightning's Trainer.fit on real models.

- on a tiny random Llama behind SmolLM2's real tokenizer and loader, with chosen "visual"
  positions (the positions are the method's input, given explicitly as in test_lsg_gate.py; the
  model has no vision tower) and real builtin_mc questions rendered by the loader: only the
  gate's parameters change (sha256 of every backbone tensor before and after), and the
  answer-token loss falls over a few dozen steps;
- the collator labels exactly the answer's tokens and points the gate at the prompt's last token.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_lsg_gate import Explicit  # noqa: E402

from outro_sweep.benchmarks.builtin_mc import BuiltinMC  # noqa: E402
from outro_sweep.fit.data import IGNORE, AnswerCollator  # noqa: E402
from outro_sweep.fit.module import GateFit  # noqa: E402
from outro_sweep.predict.data import QuestionDataset  # noqa: E402

LAYER = 1
QUESTIONS = 4
STEPS = 40


class ChosenPositions(GateFit):
    """'Visual' tokens: the prompt's real tokens 1..24 (the question's text); 'V-sinks': 2, 5, 9."""

    def positions_for(self, batch):
        vsinks, visual = [], []
        for row in batch["inputs"]["attention_mask"].bool():
            first = int(row.long().argmax())
            visual.append([first + i for i in range(1, 25)])
            vsinks.append([first + i for i in (2, 5, 9)])
        return Explicit(vsinks, visual)


def digests(model: torch.nn.Module) -> dict[str, str]:
    return {name: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()
            for name, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def questions():
    return BuiltinMC(limit=QUESTIONS).load()


def test_the_collator_labels_the_answer_tokens_only(smollm2, questions):
    batch = AnswerCollator(smollm2)([QuestionDataset(questions)[i] for i in range(QUESTIONS)])
    ids, labels, query = batch["inputs"]["input_ids"], batch["labels"], batch["query"]
    for row, question in enumerate(questions):
        answer = smollm2.tokenizer(question.answer, add_special_tokens=False)["input_ids"]
        labelled = labels[row][labels[row] != IGNORE].tolist()
        assert labelled == answer == ids[row, -len(answer):].tolist()
        assert int(query[row]) == ids.shape[1] - 1 - len(answer)
        prompt = smollm2.loader.render(smollm2.processor, question.prompt)
        end = int(query[row]) + 1  # the prompt's real tokens: up to the query, without padding
        real = batch["inputs"]["attention_mask"][row, :end].bool()
        assert smollm2.tokenizer.decode(ids[row, :end][real]) == prompt


@pytest.fixture(scope="module")
def tiny(smollm2, tiny_model_dir):
    """A tiny random Llama (conftest's shape, 4 layers, D = 64) behind SmolLM2's real tokenizer
    and loader: the same rendering and collation, fast enough for dozens of steps on a CPU. Its
    weights are drawn with std 0.3, not transformers' 0.02: with 0.02 every attention logit is
    near 0, so scaling keys changes almost nothing and the gate has nothing to learn."""
    from dataclasses import replace

    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return replace(smollm2, model=LlamaForCausalLM(config).eval())


def test_only_the_gate_changes_and_the_loss_falls(tiny, questions):
    smollm2 = tiny
    model = smollm2.model
    before = digests(model)
    pl.seed_everything(0)
    module = ChosenPositions(model, model.config.hidden_size, LAYER, lr=0.01)
    gate_before = {k: v.clone() for k, v in module.gate.state_dict().items()}
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    data = DataLoader(QuestionDataset(questions), batch_size=QUESTIONS, collate_fn=AnswerCollator(smollm2))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=STEPS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    try:
        trainer.fit(module, data)
        optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    finally:
        model.requires_grad_(True)
    assert optimised == {id(p) for p in module.gate.parameters()}  # no optimizer state for the backbone
    assert digests(model) == before  # every backbone tensor, bit for bit
    assert any(not torch.equal(gate_before[k], v) for k, v in module.gate.state_dict().items())
    assert len(losses) == STEPS
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # a deterministic fit with a frozen backbone has no other source of change than the gate
    # (measured: 13.71 -> 13.38 over 40 steps, -2.4 %)
    assert last < 0.99 * first and losses[-1] < min(losses[:5]), losses
