"""``lsg=trained``: LSG with gates trained by ``python -m outro_sweep.fit``, one per layer,
stacked (the paper trains each layer alone and stacks them without retraining). A cell names
its gates by identity or path; its identity holds each gate file's content hash, so a retrained
gate makes a new cell. A cell whose benchmark files are a gate's training files is refused in
one line unless ``lsg.force_overlap=true``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from omegaconf import ListConfig

from outro_sweep.config.schema import NonEmpty, check_arguments
from outro_sweep.errors import ConfigError
from outro_sweep.files.fingerprint import fingerprint_files
from outro_sweep.interventions.base import Intervention
from outro_sweep.interventions.lsg import LSGIntervention, LayerSinkGate, lsink_layer_list, vision_sink_probe


def _gate_files(gates: list[str], gates_dir: str | None) -> list[Path]:
    # Deferred on purpose: it imports torch.
    from outro_sweep.fit.store import GATE_FILE, resolve_gate

    files = [resolve_gate(str(reference), gates_dir or ".") for reference in gates]
    for reference, path in zip(gates, files):
        if not path.is_file():
            raise ConfigError(f"lsg.gates: {reference!r} is not a trained gate ({path} does not exist): valid values "
                              f"are gate identities under lsg.gates_dir, gate folders or {GATE_FILE} files")
    return files


class TrainedLSG(LSGIntervention):
    sweep_axes = ("gates",)

    def __init__(self, group: str = "lsg", enabled: bool = True,
                 gates: Annotated[list[str], NonEmpty()] = (), gates_dir: str | None = None,
                 force_overlap: bool = False) -> None:
        Intervention.__init__(self, group, enabled)
        check_arguments(TrainedLSG, locals(), group)
        # Deferred on purpose: it imports torch.
        from outro_sweep.fit.store import load_gate

        self.files = _gate_files(list(gates) if isinstance(gates, (list, ListConfig)) else [gates], gates_dir)
        self.gates = [load_gate(path) for path in self.files]  # (state_dict, record) per gate
        records = [record for _, record in self.gates]
        layers = [record["layer"] for record in records]
        if len(set(layers)) != len(layers):
            raise ConfigError(f"{group}.gates name two gates of one layer ({sorted(layers)}): valid values are "
                              "one gate per layer")
        settings = {(record["scale"], record["rope"]) for record in records}
        if len(settings) != 1:
            raise ConfigError(f"{group}.gates were trained with different lsg.scale/lsg.rope {sorted(settings)}: "
                              "valid values are gates trained with one setting")
        (self.scale, self.rope), = settings
        self.layer, self.rho_vsink, self.force_overlap = sorted(layers), 0.5, force_overlap
        self.lsink_layers = "auto"  # L-sinks counted at layers 0..the last gate layer, as with lsg=oracle

    @classmethod
    def identity_settings(cls, settings: dict, num_layers: int | None) -> dict:
        """The gates as their files' sha256 (in layer order is not needed: each names its layer);
        where they are looked up does not count."""
        # Deferred on purpose: it imports torch.
        from outro_sweep.fit.store import gate_digest

        files = _gate_files(list(settings.get("gates") or []), settings.get("gates_dir"))
        kept = {key: value for key, value in settings.items() if key not in ("gates", "gates_dir")}
        return {**kept, "gates": sorted(gate_digest(path) for path in files)}

    def check_benchmark(self, benchmark: Any) -> None:
        if self.force_overlap:
            return
        evaluated = set(fingerprint_files(benchmark.data_files(), None).values())
        for path, (_, record) in zip(self.files, self.gates):
            shared = sorted(name for name, digest in record["data_files"].items() if digest in evaluated)
            if shared:
                raise ConfigError(f"{self.group}.gates: gate {record['identity']} was trained on this benchmark's "
                                  f"files ({', '.join(shared)}): valid values are gates trained on other data, or "
                                  f"{self.group}.force_overlap=true")

    def attach(self, loaded, sink_rule: Any) -> LayerSinkGate:
        # Deferred on purpose: it imports torch.
        from outro_sweep.fit.gate import SinkGate

        device = next(loaded.model.parameters()).device
        weights = {}
        for state, record in self.gates:
            gate = SinkGate(record["hidden_size"])
            gate.load_state_dict(state)
            weights[record["layer"]] = gate.to(device).eval().requires_grad_(False)
        provider = self.positions or vision_sink_probe
        return LayerSinkGate(loaded.model, [], 0.5, scale=self.scale, rope=self.rope,
                             positions=lambda _model: provider(loaded), weights=weights, sink_rule=sink_rule,
                             lsink_layers=lsink_layer_list(self.lsink_layers, self.layer))
