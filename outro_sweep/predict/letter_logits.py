"""The logits a cell with ``benchmark.scoring=logits`` records: each option letter's best
next-token logit right after the prompt (``scoring.letters.choose_letter`` picks from them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from outro_sweep.errors import ConfigError


def letter_token_ids(tokenizer, letters: Sequence[str]) -> dict[str, list[int]]:
    """Single-token ids that spell each letter, bare ("A") and after a space (" A").

    A chat model may put either variant first, so both count; a variant that the
    tokenizer splits into several tokens cannot be read from one logits row and is skipped.
    """
    ids: dict[str, list[int]] = {}
    for letter in letters:
        variants: list[int] = []
        for spelling in (letter, " " + letter):
            encoded = tokenizer.encode(spelling, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in variants:
                variants.append(int(encoded[0]))
        if not variants:
            raise ConfigError(
                f"benchmark.scoring=logits needs the letter {letter!r} as one token, and this tokenizer has none: "
                "valid values are scoring=generate for this model"
            )
        ids[letter] = variants
    return ids


def letter_logits(logits_row, letter_token_ids: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Each letter's logit: the best of its token variants in the next-token logits (V,)
    right after the prompt. What a cell with ``scoring=logits`` records."""
    out = {}
    for letter, ids in letter_token_ids.items():
        if not ids:
            raise ValueError(f"letter {letter!r} has no token ids")
        out[letter] = float(logits_row[list(ids)].max())
    return out
