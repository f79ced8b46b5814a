"""The cell's W&B run lives in a W&B service its own process started: a service token inherited
from a parent process is dropped, the process's own token is kept. The tokens are written here
in wandb's format (``<version>-<pid>-unix-<socket>``); no W&B server is involved."""

from __future__ import annotations

import os

from outro_sweep.cell.tracking import use_own_wandb_service


def test_an_inherited_service_is_forgotten_and_the_own_one_kept(monkeypatch):
    monkeypatch.setenv("WANDB_SERVICE", f"2-{os.getppid()}-unix-/tmp/parent.sock")
    use_own_wandb_service()
    assert "WANDB_SERVICE" not in os.environ
    own = f"2-{os.getpid()}-unix-/tmp/own.sock"
    monkeypatch.setenv("WANDB_SERVICE", own)
    use_own_wandb_service()
    assert os.environ["WANDB_SERVICE"] == own
    monkeypatch.delenv("WANDB_SERVICE")
    use_own_wandb_service()  # nothing set: nothing to do
    assert "WANDB_SERVICE" not in os.environ
