"""The fit's loss curve: kept in Lightning's checkpoint (so a resumed fit has the whole curve),
written to the gate's record and logged to W&B as a ``job_type=fit`` run (run id = the gate's
identity, resumed by a resumed fit)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from outro_sweep.cell.tracking import run_settings, use_own_wandb_service
from outro_sweep.files.masking import mask


class LossCurve(pl.Callback):
    def __init__(self, logger: dict, identity: str, config: dict, directory: Path) -> None:
        self.logger, self.identity, self.config, self.directory = logger, identity, config, directory
        self.losses: list[float] = []  # per optimizer step, in order
        self.run = None

    def state_dict(self) -> dict:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.losses = list(state["losses"])

    def on_fit_start(self, trainer, module) -> None:
        if self.logger.get("mode", "disabled") == "disabled":
            return
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        use_own_wandb_service()
        self.run = wandb.init(id=self.identity, resume="allow", project=self.logger.get("project"),
                              entity=self.logger.get("entity"), job_type="fit", name=f"fit {self.identity}",
                              config=mask(self.config), dir=str(self.directory), mode=self.logger["mode"],
                              reinit="finish_previous", settings=run_settings(self.logger.get("api_key")))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = float(outputs["loss"].detach())
        self.losses.append(loss)
        if self.run is not None:
            self.run.log({"train/loss": loss, "epoch": trainer.current_epoch}, step=len(self.losses))

    def on_fit_end(self, trainer, module) -> None:
        if self.run is not None:
            self.run.summary.update({"final_loss": self.losses[-1] if self.losses else None})
            self.run.finish(exit_code=0)
            self.run = None
