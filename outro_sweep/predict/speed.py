"""A cell's decode speed from its shards' additive timing (model-free: scoring and
re-scoring read it without torch). The timing itself is taken by
``outro_sweep.predict.decode_timer``; metrics.json's ``speed`` is ``speed_metrics``.
"""

from __future__ import annotations

TIMING_KEYS = ("prefill_seconds", "prefill_tokens", "decode_seconds", "decode_tokens")


def add_timing(total: dict[str, float], part: dict) -> dict[str, float]:
    """``total += part`` for the ``TIMING_KEYS`` (in place; returns total)."""
    for key in TIMING_KEYS:
        total[key] = total.get(key, 0.0) + float(part.get(key, 0.0))
    return total


def timing_delta(now: dict, before: dict) -> dict[str, float]:
    """What one batch added to the running sums; {} when it timed nothing (scoring=logits)."""
    delta = {key: float(now.get(key, 0.0)) - float(before.get(key, 0.0)) for key in TIMING_KEYS}
    return delta if any(delta.values()) else {}


def _one_or_all(values: list):
    """The value every timed shard recorded, or the sorted distinct values where they differ
    (a cell resumed on another machine or with another batch size)."""
    distinct = sorted(set(values), key=str)
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    return distinct


def speed_metrics(timing: dict, machines: list[dict]) -> dict | None:
    """metrics.json's ``speed`` from a cell's summed timing and its timed shards' machines;
    None when nothing was decoded (a scoring=logits cell generates nothing). The rates are
    summed tokens over summed seconds: with several processes at once, one process's speed."""
    if not timing or not timing.get("decode_tokens") and not timing.get("prefill_tokens"):
        return None

    def rate(tokens: str, seconds: str) -> float | None:
        return timing[tokens] / timing[seconds] if timing.get(seconds) else None

    return {
        "decode_tokens_per_s": rate("decode_tokens", "decode_seconds"),
        "prefill_tokens_per_s": rate("prefill_tokens", "prefill_seconds"),
        "decode_seconds": timing["decode_seconds"],
        "decode_tokens": int(timing["decode_tokens"]),
        "prefill_seconds": timing["prefill_seconds"],
        "prefill_tokens": int(timing["prefill_tokens"]),
        **{key: _one_or_all([m.get(key) for m in machines]) for key in ("device", "torch_threads", "batch_size")},
    }
