"""``lsg=trained`` (outro_sweep/fit/trained.py) in-process on SmolLM2-135M (real weights,
offline) with chosen "visual" positions (the method's input, as in test_lsg_gate.py):

- a saved untrained gate attached through TrainedLSG is the stock model bit for bit;
- two gates of different layers stack: the logits equal one LayerSinkGate with both weights;
- the identity settings hold each gate file's sha256 (a retrained gate is another cell) and not
  where gates are looked up; a missing gate or two gates of one layer are refused in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_lsg_gate import PROMPTS, chosen_positions  # noqa: E402

from outro_sweep.errors import ConfigError  # noqa: E402
from outro_sweep.files.fingerprint import sha256_file  # noqa: E402
from outro_sweep.fit.gate import SinkGate  # noqa: E402
from outro_sweep.fit.store import GateStore  # noqa: E402
from outro_sweep.fit.trained import TrainedLSG  # noqa: E402
from outro_sweep.interventions.lsg import LayerSinkGate  # noqa: E402


@pytest.fixture(scope="module")
def batch(smollm2):
    return smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def saved_gate(folder: Path, identity: str, layer: int, hidden: int, bias=(0.0, 0.0)) -> tuple[Path, SinkGate]:
    gate = SinkGate(hidden)
    with torch.no_grad():
        gate.out.bias.copy_(torch.tensor(bias))
    record = {"identity": identity, "layer": layer, "hidden_size": hidden, "scale": "two_rho", "rope": "after",
              "model": "smollm2", "data_files": {"x.csv": "0" * 64}, "losses": []}
    store = GateStore(folder, identity)
    store.save(gate, record)
    return store.gate_file, gate


def logits(smollm2, batch, lsg: TrainedLSG | None):
    with torch.no_grad():
        if lsg is None:
            return smollm2.model(**batch).logits
        lsg.positions = lambda _loaded: chosen_positions(batch["attention_mask"])(None)
        with lsg.attach(smollm2, None):
            return smollm2.model(**batch).logits


def test_an_untrained_saved_gate_is_the_stock_model(smollm2, batch, tmp_path):
    path, _ = saved_gate(tmp_path, "a" * 12, 2, smollm2.model.config.hidden_size)
    lsg = TrainedLSG(gates=[str(path)])
    assert torch.equal(logits(smollm2, batch, lsg), logits(smollm2, batch, None))


def test_two_gates_stack(smollm2, batch, tmp_path):
    hidden = smollm2.model.config.hidden_size
    first, gate1 = saved_gate(tmp_path, "b" * 12, 1, hidden, (0.0, 1.5))
    second, gate3 = saved_gate(tmp_path, "c" * 12, 3, hidden, (1.0, 0.0))
    lsg = TrainedLSG(gates=["b" * 12, str(second.parent)], gates_dir=str(tmp_path / "gates"))
    stacked = logits(smollm2, batch, lsg)
    with torch.no_grad(), LayerSinkGate(smollm2.model, [], 0.5, weights={1: gate1, 3: gate3},
                                        positions=chosen_positions(batch["attention_mask"])):
        expected = smollm2.model(**batch).logits
    assert (stacked - logits(smollm2, batch, None)).abs().max() > 1e-3
    assert torch.equal(stacked, expected)


def test_the_identity_holds_the_gate_files_hash(tmp_path):
    path, _ = saved_gate(tmp_path, "d" * 12, 2, 8)
    settings = {"enabled": True, "gates": ["d" * 12], "gates_dir": str(tmp_path / "gates"), "force_overlap": False}
    kept = TrainedLSG.identity_settings(settings, 30)
    assert kept["gates"] == [sha256_file(path)] and "gates_dir" not in kept
    saved_gate(tmp_path, "d" * 12, 2, 8, (0.0, 0.1))  # retrained in place
    assert TrainedLSG.identity_settings(settings, 30)["gates"] != kept["gates"]


def test_bad_gates_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"lsg.gates: 'nope' is not a trained gate") as missing:
        TrainedLSG(gates=["nope"], gates_dir=str(tmp_path))
    assert "\n" not in str(missing.value)
    saved_gate(tmp_path, "e" * 12, 2, 8)
    saved_gate(tmp_path, "f" * 12, 2, 8)
    with pytest.raises(ConfigError, match="two gates of one layer"):
        TrainedLSG(gates=["e" * 12, "f" * 12], gates_dir=str(tmp_path / "gates"))
