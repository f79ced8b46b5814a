"""The LightningModule that trains one LSG gate with the backbone frozen: the backbone's
parameters have ``requires_grad`` False and are no attribute Lightning sees (so neither the
optimizer nor the checkpoint holds anything of them); the loss is next-token cross-entropy on
the answer tokens only."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from outro_sweep.fit.data import IGNORE
from outro_sweep.fit.gate import SinkGate
from outro_sweep.interventions.lsg import LayerSinkGate, PositionsProvider, RopeOrder, ScaleRule


class GateFit(pl.LightningModule):
    """``backbone``: the loaded model's module (frozen here); ``positions``: the sink-positions
    provider for LayerSinkGate (the V-sink probe on the model, or given positions)."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int, layer: int, lr: float,
                 scale: ScaleRule = "two_rho", rope: RopeOrder = "after", positions: PositionsProvider | None = None
                 ) -> None:
        super().__init__()
        backbone.requires_grad_(False)
        backbone.eval()  # no dropout: the frozen model computes what it computes at prediction
        self.__dict__["backbone"] = backbone  # bypasses nn.Module registration: not a submodule
        self.gate = SinkGate(hidden_size)
        self.layer, self.lr, self.scale, self.rope, self.positions = layer, lr, scale, rope, positions

    def on_fit_start(self) -> None:
        self.backbone.to(self.device)

    def positions_for(self, batch: dict) -> PositionsProvider | None:
        """The positions provider of ``batch`` (a subclass with its own positions overrides this)."""
        return self.positions

    def loss(self, batch: dict) -> torch.Tensor:
        inputs, labels = batch["inputs"], batch["labels"]
        with LayerSinkGate(self.backbone, [], 0.5, scale=self.scale, rope=self.rope,
                           positions=self.positions_for(batch), weights={self.layer: self.gate}) as gate:
            gate.query = batch["query"]
            logits = self.backbone(**inputs, use_cache=False).logits  # (B, S, V)
        # position t predicts token t + 1
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                 ignore_index=IGNORE)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["labels"].shape[0])
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.gate.parameters(), lr=self.lr)
