"""Where a trained gate lives: ``<paths.output_dir>/gates/<identity>/``.

    checkpoints/last.ckpt  Lightning's checkpoint after each epoch (gate + optimizer state): a
                           killed fit rerun with the same keys resumes from it (ckpt_path="last")
    gate.pt                written last: the gate's state_dict and its record (below)
    gate.json              the record: identity, layer, hidden size, lsg.scale / lsg.rope, the
                           model, the training data files' sha256, the loss curve
    wandb/                 the fit's W&B run (job_type=fit, run id = identity)

The identity hashes what the gate's weights depend on with the cells' own hashing
(``outro_sweep.cell.identity.identity_inputs``): the model's files and settings, fit.data as the
benchmark (its config and its files' content), lsg.layer / scale / rope, the fit's
hyper-parameters, the seed and the trainer's settings. Where files go and how runs are logged
(paths, logger) do not count, nor ``fit.force_overlap``.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import torch

from outro_sweep.cell.identity import hash_inputs, identity_inputs
from outro_sweep.files.atomic import write_bytes_atomic, write_json_atomic
from outro_sweep.files.fingerprint import sha256_file

GATE_FILE, RECORD_FILE = "gate.pt", "gate.json"
# Keys of the composed fit config that do not shape the gate (prediction-only and other groups).
_NOT_TRAINING = ("predict", "judge", "outro", "sink", "force", "baseline")


def gate_inputs(config: dict) -> dict:
    """What a gate's identity hashes; ``config``: the composed fit config as a plain dict."""
    config = copy.deepcopy(config)
    fit = config.pop("fit")
    config["benchmark"] = fit.pop("data")  # the training questions, fingerprinted as a cell's benchmark is
    fit.pop("force_overlap", None)
    config["fit"] = fit
    for key in _NOT_TRAINING:
        config.pop(key, None)
    return identity_inputs(config)


class GateStore:
    def __init__(self, output_dir: str | Path, identity: str) -> None:
        self.identity = identity
        self.folder = Path(output_dir) / "gates" / identity

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def gate_file(self) -> Path:
        return self.folder / GATE_FILE

    def done(self) -> bool:
        return self.gate_file.is_file()

    def save(self, gate: torch.nn.Module, record: dict) -> None:
        """The record (gate.json), then gate.pt: its presence marks the gate done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / RECORD_FILE, record)
        buffer = io.BytesIO()
        torch.save({"state_dict": gate.state_dict(), "record": record}, buffer)
        write_bytes_atomic(self.gate_file, buffer.getvalue())


def resolve_gate(reference: str, gates_dir: str | Path) -> Path:
    """A gate's file from its identity (a folder of ``gates_dir``, ``<output_dir>/gates``), its
    folder or its gate.pt."""
    path = Path(reference)
    if path.is_file():
        return path
    if (path / GATE_FILE).is_file():
        return path / GATE_FILE
    return Path(gates_dir) / reference / GATE_FILE


def load_gate(path: Path) -> tuple[dict, dict]:
    """(state_dict, record) of a gate file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["state_dict"], saved["record"]


def gate_digest(path: Path) -> str:
    """The content hash of a gate file (what a cell's identity holds)."""
    return sha256_file(path)
