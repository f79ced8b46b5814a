"""Visual-token positions for LSG's gate in tests, from the token ids alone: the visual tokens
of a row are the positions of the model's image/video placeholder ids in its input_ids, and its
"V-sinks" are the first ``vsinks`` of them, chosen rather than detected (detection belongs to
the vision-sink probe). A provider for ``LayerSinkGate(positions=...)`` /
``LSGIntervention.positions``: called with the model, a context manager while the gate is on.
"""

from __future__ import annotations

import torch


class VisualTokenPositions:
    def __init__(self, loaded, vsinks: int = 2) -> None:
        model = getattr(loaded, "model", loaded)  # the LoadedModel an intervention attaches to, or a module
        self.model, self.vsinks = model, vsinks
        config = getattr(model.config, "thinker_config", model.config)
        ids = [getattr(config, name, None) for name in ("image_token_id", "video_token_id")]
        self.token_ids = torch.tensor([i for i in ids if i is not None])
        self.input_ids: torch.Tensor | None = None  # (B, S) of the model's last call

    def __enter__(self) -> "VisualTokenPositions":
        self.handle = self.model.register_forward_pre_hook(self._capture, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _capture(self, module, args, kwargs):
        self.input_ids = kwargs.get("input_ids", args[0] if args else None)

    def visual_positions(self) -> list[torch.Tensor]:
        visual = torch.isin(self.input_ids, self.token_ids.to(self.input_ids.device))
        return [row.nonzero().flatten() for row in visual]

    def vsink_positions(self) -> list[torch.Tensor]:
        return [positions[: self.vsinks] for positions in self.visual_positions()]
