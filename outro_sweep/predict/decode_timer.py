"""Decode speed of ``model.generate``: prefill and decode timed apart, with the device synchronised.

``DecodeTimer`` is a ``StoppingCriteria`` that never stops generation: generate calls it once
per new token, right after that token is chosen, and it stamps the time after a device
synchronise (queued CUDA kernels would otherwise finish after the stamp). So, for one batch of
B rows that generates T tokens per row (T stamps):

- prefill = generate start -> first stamp: the prompt's forward pass and the first token;
  ``prefill_tokens`` = the prompt's real (unpadded) tokens over all rows;
- decode = first stamp -> last stamp: the T - 1 single-token steps; ``decode_tokens`` =
  (T - 1) x B. Every row of the batch is computed at every step (generate pads rows that
  have finished rather than dropping them), so B rows are the work done per step.

The four sums of a batch (``speed.TIMING_KEYS``) are additive: the prediction writer puts each
batch's into its shard header (``timing``), so a cell's speed sums over every batch of every
process and attempt (``outro_sweep.predict.speed``), as ``diagnostic_sums`` do. The speed is a property of
the machine, so each timed shard also records ``machine()``: the device, torch's CPU threads and
the configured batch size. Speed is measured, never configured: it is not part of a cell's
identity.
"""

from __future__ import annotations

import time

import torch
from transformers import StoppingCriteria

from outro_sweep.predict.speed import TIMING_KEYS


def synchronise(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DecodeTimer(StoppingCriteria):
    """Create it right before ``generate`` (that is the start), pass it in
    ``stopping_criteria``, read ``sums()`` afterwards."""

    def __init__(self, device: torch.device, rows: int, prompt_tokens: int) -> None:
        self.device = torch.device(device)
        self.rows = rows
        self.prompt_tokens = prompt_tokens
        self.stamps: list[float] = []  # perf_counter seconds, one per generated token
        synchronise(self.device)
        self.started = time.perf_counter()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        synchronise(input_ids.device)
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (B,): never stop

    @property
    def steps(self) -> int:
        return len(self.stamps)

    def sums(self) -> dict[str, float]:
        """This generate call's additive timing (``TIMING_KEYS``); zeros when nothing was generated."""
        if not self.stamps:
            return dict.fromkeys(TIMING_KEYS, 0.0)
        return {"prefill_seconds": self.stamps[0] - self.started, "prefill_tokens": float(self.prompt_tokens),
                "decode_seconds": self.stamps[-1] - self.stamps[0],
                "decode_tokens": float((self.steps - 1) * self.rows)}


def device_name(device: torch.device) -> str:
    """"cpu", or the CUDA device's name (e.g. "NVIDIA H200")."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def machine(device: torch.device, batch_size: int | None) -> dict:
    """What the measured speed depends on besides the cell: recorded beside it."""
    return {"device": device_name(device), "torch_threads": torch.get_num_threads(), "batch_size": batch_size}
