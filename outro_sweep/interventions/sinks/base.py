"""What a sink-detection rule is.

A rule looks at ONE sequence's real (non-pad) tokens at ONE layer and returns which of them
are sinks. Working on one unpadded row at a time is what makes a row's sinks independent
of whatever else is in the batch.
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
        raise NotImplementedError

    def from_attention(self, probs: torch.Tensor) -> torch.Tensor:
        """probs: (H, n, n) attention probabilities among real tokens (query, key).

        Returns (n,) bool. Only rules with ``needs_attention_probs`` implement it.
        """
        raise NotImplementedError
