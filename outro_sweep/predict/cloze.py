"""Cloze scoring (``benchmark.scoring=cloze``): the log-likelihood of each option's text as the
continuation of the prompt, lm-eval's ``multiple_choice`` (spec §7).

Tokenisation follows lm-eval's ``_encode_pair``: trailing whitespace of the context moves to the
front of each continuation, the context is tokenised alone, and an option's tokens are those of
``context + continuation`` past the context's own tokens. So a token that merges across the
boundary is scored as lm-eval scores it.

Compute: the prompt is the prefill, run once per question with a KV cache; each option then
continues from that cache, all rows of the batch at once, one forward per option index (so a
row's interventions keep the per-row state of its prefill). Within that forward the option's
tokens are answer tokens: every attached intervention edits them exactly as it edits decode
steps (a forward over a non-empty cache is a decode forward; each of its query tokens is one
decode step at its position), so the summed log-probability equals feeding the tokens one at a
time (``tests/test_cloze_reference.py``). Between options the cache is put back to the prefill's:
each cache layer's state is forked (a shallow copy: a dynamic cache layer appends by
concatenation, never in place), so options never see each other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from outro_sweep.group.prefix import announce_step, check_steps
from outro_sweep.models.base import LoadedModel


@dataclass(frozen=True)
class ClozeOptions:
    """One row's options as the model scores them."""

    context: str  # the text the prefill reads (the rendered prompt, trailing whitespace moved out)
    tokens: tuple[tuple[int, ...], ...]  # per option: its continuation's token ids


def split_context(rendered: str, continuations: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """lm-eval's whitespace rule: the context's trailing whitespace opens every continuation."""
    context = rendered.rstrip()
    tail = rendered[len(context):]
    return context, tuple(tail + continuation for continuation in continuations)


def cloze_options(tokenizer, rendered: str, continuations: tuple[str, ...], special_tokens: bool) -> ClozeOptions:
    """The context the prefill reads and each option's continuation tokens (``special_tokens``:
    whether the tokenizer adds its own special tokens, as the prompt's batch does)."""
    context, texts = split_context(rendered, continuations)
    context_ids = tokenizer(context, add_special_tokens=special_tokens)["input_ids"]
    tokens = []
    for text in texts:
        whole = tokenizer(context + text, add_special_tokens=special_tokens)["input_ids"]
        tokens.append(tuple(int(t) for t in whole[len(context_ids):]))
    return ClozeOptions(context, tuple(tokens))


def _fork(layers: list) -> list:
    return [copy.copy(layer) for layer in layers]


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax in at least float32 (float64 stays float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1)


def option_loglikelihoods(loaded: LoadedModel, inputs: dict, options: list[ClozeOptions]) -> list[list[float]]:
    """Per row of ``inputs`` (the left-padded prompt batch of the rows' contexts, (B, S)): each
    option's summed log-probability, in option order (0.0 for an option of no tokens)."""
    model, loader = loaded.model, loaded.loader
    mask = inputs["attention_mask"]  # (B, S) 1 for real tokens
    batch = mask.shape[0]
    positions = loader.position_ids(mask)  # (B, S) or None where the model derives its own (M-RoPE)
    extra = {} if positions is None else {"position_ids": positions}
    out = model(**inputs, **extra, use_cache=True, logits_to_keep=1)
    first = _log_probs(out.logits[:, -1])  # (B, V): the distribution of every option's first token
    cache = out.past_key_values
    prefill_layers = list(cache.layers)
    real = mask.long().sum(dim=1)  # (B,) real prompt tokens: the first option token's position
    pad = loaded.tokenizer.pad_token_id
    totals = [[0.0] * len(row.tokens) for row in options]
    for k in range(max(len(row.tokens) for row in options)):
        rows = [row.tokens[k] if k < len(row.tokens) else () for row in options]
        length = max(len(tokens) for tokens in rows)
        if length == 0:
            continue
        ids = torch.full((batch, length), pad, dtype=torch.long)
        kept = torch.zeros(batch, length, dtype=mask.dtype)
        for row, tokens in enumerate(rows):
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            kept[row, :len(tokens)] = 1
        announce_step(model, ids, kept)  # the group replay keys this forward on them, read here on the host
        ids, kept = ids.to(mask.device), kept.to(mask.device)  # (B, T) right-padded option k of each row
        cache.layers = _fork(prefill_layers)
        logits = model(input_ids=ids, attention_mask=torch.cat([mask, kept], dim=1), past_key_values=cache,
                       position_ids=loader.continuation_position_ids(model, real, length),
                       use_cache=True).logits  # (B, T, V)
        # token t is predicted by the prefill's last position (t = 0) or by option token t - 1
        predicted = torch.cat([first[:, None], _log_probs(logits[:, :-1])], dim=1)  # (B, T, V)
        picked = predicted.gather(2, ids[..., None])[..., 0]  # (B, T)
        picked = torch.where(kept.bool(), picked, torch.zeros_like(picked))  # 0 past an option's end
        sums = picked.double().sum(dim=1).tolist()
        for row, tokens in enumerate(rows):
            if k < len(options[row].tokens) and tokens:
                totals[row][k] = sums[row]
    cache.layers = prefill_layers
    check_steps(model)
    return totals
