"""What a sink-detection rule is.

A rule decides, for ONE sequence's real (non-pad) tokens at ONE layer, which of them are sinks.
Its batched entry points take a padded batch and a (B, S) mask of real tokens; a row's result
depends on that row's real tokens only, so a row's sinks are independent of whatever else is in
the batch. The built-in rules compute a whole batch at once on the device (no host sync); a rule
that overrides only the one-row method is run row by row by the batched one.
"""

from __future__ import annotations

from typing import ClassVar

import torch


class SinkRule:
    #: Name used in diagnostics and config (``sink=<name>``).
    name: str = "base"
    #: True for rules that read attention probabilities; they force the eager attention path.
    needs_attention_probs: bool = False
    #: The config group whose keys a rule's ``__init__`` takes (prefixes them in messages).
    config_key: ClassVar[str] = "sink"

    def configure(self, sink_dims: list[int]) -> None:
        """Receive per-model settings (only ``sink_dims`` needs any)."""

    def check_hidden_size(self, hidden_size: int) -> None:
        """Checks against the model's hidden size (from its config, before the weights load);
        raise ConfigError."""

    def from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (n, D) residual stream entering the layer, real tokens only.

        Returns (n,) bool: which tokens are sinks at this layer.
        """
        if type(self).from_hidden_batch is SinkRule.from_hidden_batch:
            raise NotImplementedError(f"sink rule {self.name} defines neither from_hidden nor from_hidden_batch")
        real = torch.ones(1, hidden.shape[0], dtype=torch.bool, device=hidden.device)
        return self.from_hidden_batch(hidden[None], real)[0]

    def from_hidden_batch(self, hidden: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """hidden: (B, S, D) padded residual stream entering the layer; real: (B, S) bool.

        Returns (B, S) bool, False at pads. This default runs ``from_hidden`` one row at a time
        (a host sync per row); the built-in rules override it with one batched computation.
        """
        if type(self).from_hidden is SinkRule.from_hidden:
            raise NotImplementedError(f"sink rule {self.name} defines neither from_hidden nor from_hidden_batch")
        sinks = torch.zeros_like(real)
        for row in range(hidden.shape[0]):
            sinks[row, real[row]] = self.from_hidden(hidden[row, real[row]])
        return sinks

    def from_attention(self, probs: torch.Tensor) -> torch.Tensor:
        """probs: (H, n, n) attention probabilities among real tokens (query, key).

        Returns (n,) bool. Only rules with ``needs_attention_probs`` implement it (or its
        batched form).
        """
        if type(self).from_attention_batch is SinkRule.from_attention_batch:
            raise NotImplementedError(f"sink rule {self.name} reads no attention probabilities")
        real = torch.ones(1, probs.shape[-1], dtype=torch.bool, device=probs.device)
        return self.from_attention_batch(probs[None], real)[0]

    def from_attention_batch(self, probs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """probs: (B, H, S, S) attention probabilities of a padded batch (query, key); real: (B, S).

        Returns (B, S) bool, False at pads. This default runs ``from_attention`` one row at a time.
        """
        if type(self).from_attention is SinkRule.from_attention:
            raise NotImplementedError(f"sink rule {self.name} reads no attention probabilities")
        sinks = torch.zeros_like(real)
        for row in range(probs.shape[0]):
            keep = real[row]
            sinks[row, keep] = self.from_attention(probs[row][:, keep][:, :, keep])
        return sinks
