"""The cell's W&B run: a requeued attempt waits for the killed attempt's service to release the
run id. wandb is replaced by a stand-in that refuses the id a few times (the real refusal needs
a W&B service still holding a killed process's run, which a unit test cannot stage)."""

from __future__ import annotations

import pytest

from outro_sweep.cell import tracking


class RefusingWandb:
    def __init__(self, refusals: int, message: str = "run ID {id} is in use") -> None:
        self.refusals, self.message, self.calls = refusals, message, 0

    def init(self, **arguments):
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(self.message.format(id=arguments["id"]))
        return f"run {arguments['id']}"


def test_a_held_run_id_is_retried_until_released(monkeypatch):
    monkeypatch.setattr(tracking, "IN_USE_WAIT_S", 0.0)
    wandb = RefusingWandb(refusals=3)
    assert tracking._init_when_free(wandb, {"id": "abc123"}) == "run abc123" and wandb.calls == 4


def test_a_run_id_held_for_good_or_another_error_is_raised(monkeypatch):
    monkeypatch.setattr(tracking, "IN_USE_WAIT_S", 0.0)
    held = RefusingWandb(refusals=10**6)
    with pytest.raises(RuntimeError, match="is in use"):
        tracking._init_when_free(held, {"id": "abc123"})
    assert held.calls == tracking.IN_USE_RETRIES + 1
    other = RefusingWandb(refusals=1, message="permission denied")
    with pytest.raises(RuntimeError, match="permission denied"):
        tracking._init_when_free(other, {"id": "abc123"})
    assert other.calls == 1  # not retried
