"""The atlas's own keys (``atlas.*``, conf/atlas/default.yaml), typed and range-checked: a bad
value is refused in one line naming the key, the value and the valid values, before any load."""

from __future__ import annotations

from typing import Annotated, Literal

from outro_sweep.config.schema import Range, check_arguments
from outro_sweep.errors import ConfigError


class AtlasSettings:
    config_key = "atlas"

    def __init__(
        self,
        tau: Annotated[float, Range(gt=0, finite=True)] = 20.0,
        dim_share: Annotated[float, Range(gt=0, le=1)] = 0.1,
        eps: Annotated[float, Range(gt=0, lt=1)] = 0.3,
        min_rate: Annotated[float, Range(gt=0, le=1)] = 0.5,
        suggest_layers: Annotated[int, Range(ge=1)] = 3,
        suggest_step: Annotated[int, Range(ge=1)] = 2,
        device: Literal["auto", "cpu", "cuda"] = "auto",
    ) -> None:
        check_arguments(AtlasSettings, locals(), self.config_key)
        self.tau, self.dim_share, self.eps, self.min_rate = float(tau), float(dim_share), float(eps), float(min_rate)
        self.suggest_layers, self.suggest_step = suggest_layers, suggest_step
        self.device = device

    def torch_device(self) -> str:
        """Where the model runs: ``auto`` is the first CUDA device when one is visible, else the CPU."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("atlas.device=cuda but no CUDA device is visible: valid values are auto, cpu, cuda")
        return self.device
