"""Cloze scoring equals feeding each option's tokens one at a time through decode steps (spec §7).

``predict.cloze.option_loglikelihoods`` scores a left-padded batch: one prefill with a KV cache,
then each option's tokens in one forward over that cache. The reference here is the definition
in plain loops: each row alone, its prompt prefilled, then for each option a fresh copy of the
cache and one decode step per token (``model(input_ids=[[token]], past_key_values=...)``, what
``generate`` does), summing ``log_softmax`` of the token it feeds next. With an intervention
attached, every decode step is edited by it as in generation, so equality proves that the
option tokens are edited exactly as decode steps (OutRo in each ``rotate_decode`` mode,
SinkRouter in both modes, LSG's prompt-only keys). Float64 weights: equal to 1e-12.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch

from outro_sweep.interventions.lsg import LayerSinkGate
from outro_sweep.interventions.outro import OutRo
from outro_sweep.interventions.sinkrouter import SinkRouting
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.predict.cloze import cloze_options, option_loglikelihoods
from tests.test_lsg_gate import chosen_positions

F64_TOL = 1e-12
CONTEXTS = [
    "Mary went to the kitchen. John went to the garden. Mary moved to the office.\nQuestion: Where is Mary?\nAnswer:",
    "Question: Which gas do plants take in?\nAnswer:",
]
OPTIONS = [(" office", " kitchen", " garden", " hallway"), (" carbon dioxide", " helium", " neon gas")]


@pytest.fixture(scope="module")
def smol64(smollm2):
    loaded = copy.copy(smollm2)
    loaded.model = copy.deepcopy(smollm2.model).to(torch.float64)
    yield loaded
    del loaded.model


@pytest.fixture(scope="module")
def rows(smollm2):
    return [cloze_options(smollm2.tokenizer, context, options, special_tokens=True)
            for context, options in zip(CONTEXTS, OPTIONS)]


def reference(model, context_ids: list[int], options: tuple[tuple[int, ...], ...]) -> list[float]:
    """One row alone: prefill, then per option a copy of the cache and one decode step per token."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([context_ids]), use_cache=True)
        first = out.logits[0, -1].log_softmax(-1)
        sums = []
        for tokens in options:
            cache, dist, total = copy.deepcopy(out.past_key_values), first, 0.0
            for step, token in enumerate(tokens):
                total += float(dist[token])
                position = torch.tensor([[len(context_ids) + step]])
                logits = model(input_ids=torch.tensor([[token]]), past_key_values=cache, position_ids=position,
                               use_cache=True).logits
                dist = logits[0, -1].log_softmax(-1)
            sums.append(total)
    return sums


def batched(loaded, rows) -> list[list[float]]:
    tokenizer = loaded.tokenizer
    inputs = tokenizer([row.context for row in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        return option_loglikelihoods(loaded, dict(inputs), rows)


def outro(rotate_decode):
    return lambda model, inputs: OutRo(model, MassiveActivation(), alpha=3.0, layer="auto",
                                       rotate_decode=rotate_decode)


def sinkrouter(**settings):
    return lambda model, inputs: SinkRouting(model, first_layer=2, **settings)


def lsg(model, inputs):
    # keys of real prompt tokens 1..5 gated at layer 3 (LSG needs no vision tower for this check)
    return LayerSinkGate(model, [2], 0.1, positions=chosen_positions(inputs["attention_mask"]))


INTERVENTIONS = {
    "stock": lambda model, inputs: nullcontext(),
    "outro_rotate_decode_true": outro(True),
    "outro_rotate_decode_false": outro(False),
    "outro_rotate_decode_official": outro("official"),
    "sinkrouter_constant": sinkrouter(threshold=0.3),
    "sinkrouter_target_skip": sinkrouter(mode="target_skip", target_skip=0.5),
    "lsg_oracle": lsg,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_option_tokens_are_scored_as_decode_steps(smol64, rows, name):
    make = INTERVENTIONS[name]
    tokenizer = smol64.tokenizer
    inputs = tokenizer([row.context for row in rows], return_tensors="pt", padding=True)
    with make(smol64.model, inputs) as attached:
        got = batched(smol64, rows)
        skipped = getattr(attached, "total_skipped", None)
    expected = []
    for row in rows:
        alone = tokenizer([row.context], return_tensors="pt")
        with make(smol64.model, alone):
            expected.append(reference(smol64.model, alone["input_ids"][0].tolist(), row.tokens))
    for mine, theirs in zip(got, expected):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs):
            assert abs(a - b) <= F64_TOL, f"{name}: batched {a!r} vs one token at a time {b!r}"
    if name.startswith("sinkrouter"):
        assert skipped is not None and int(skipped.sum()) > 0, "the router skipped nothing: the check proves little"


def test_an_intervention_changes_the_scores(smollm2, rows):
    """Guards the test above: the edited scores differ from the stock ones."""
    stock = batched(smollm2, rows)
    with OutRo(smollm2.model, MassiveActivation(), alpha=3.0, layer="auto", rotate_decode=True):
        edited = batched(smollm2, rows)
    assert max(abs(a - b) for s, e in zip(stock, edited) for a, b in zip(s, e)) > 1e-3


def test_options_follow_lm_evals_split_of_context_and_continuation(smollm2):
    """Trailing whitespace of the context moves into every continuation, and an option's tokens
    are those of context + continuation past the context's own (lm-eval's _encode_pair)."""
    tokenizer = smollm2.tokenizer
    row = cloze_options(tokenizer, "Answer: ", (" kitchen", "garden"), special_tokens=True)
    assert row.context == "Answer:"
    context = tokenizer(row.context)["input_ids"]
    for tokens, text in zip(row.tokens, ("  kitchen", " garden")):
        assert list(tokens) == tokenizer(row.context + text)["input_ids"][len(context):]
