"""The intervention seam holds: a second intervention, written here and nowhere else (one ``.py``
and one ``.yaml`` in a temporary folder, found through ``hydra.searchpath``), is swept end to end
with its baseline and report, stacks with OutRo, and a conflicting one is refused before any
model loads. Also: the paper experiment's multirun gets its baseline.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.cell.baseline import baseline_config, baseline_identity, baseline_overrides, is_baseline

REPO = Path(__file__).resolve().parents[1]

# The toy: multiply the first token's value vector by ``factor`` at one decoder layer, through a
# forward hook on that layer's v_proj. Batch size 1 keeps "the first token" the first real one.
TOY_PY = '''
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.base import Editor, Intervention
from outro_sweep.interventions.decoder import attention_modules


class SinkValueScale(Intervention):
    sweep_axes = ("layer", "factor")
    edits = frozenset({EDITS_HERE})

    def __init__(self, group, enabled=True, factor=1.0, layer=0):
        super().__init__(group, enabled)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
            raise ConfigError(f"{group}.factor={factor!r} is invalid: valid values are numbers >= 0")
        self.factor, self.layer = float(factor), layer

    def check_model(self, num_layers):
        if not 0 <= self.layer < num_layers:
            raise ConfigError(f"{self.group}.layer={self.layer} is out of range: valid values are 0..{num_layers - 1}")

    def attach(self, loaded, sink_rule):
        return _Scaler(loaded.model, self.layer, self.factor)

    def summarise(self, samples, sums):
        return {"samples": sum(1 for s in samples if s), "scaled_rows": sums.get("scaled_rows", 0.0)}


class _Scaler(Editor):
    def __init__(self, model, layer, factor):
        super().__init__(model)
        self.projection = attention_modules(model)[layer].v_proj
        self.factor, self.rows, self.batch = factor, 0.0, 0

    def start(self, edits):
        edits.hook(self.projection.register_forward_hook(self._hook))

    def _hook(self, module, args, output):  # output: (B, S, H_kv * d)
        if self.prefill:
            self.batch, self.rows = output.shape[0], self.rows + output.shape[0]
            output = output.clone()
            output[:, 0] *= self.factor
        return output

    def take_sample_diagnostics(self):
        return [{"factor": self.factor}] * self.batch

    def running_sums(self):
        return {"scaled_rows": self.rows}
'''

TOY_YAML = """\
# A toy intervention: scales the first token's value vector at one layer.
_target_: {module}.SinkValueScale
enabled: true
factor: 1.0
layer: 0
"""


def write_plugin(root: Path, name: str, edits: str = '"value_vectors"') -> Path:
    """``root/py/<name>.py`` and ``root/conf/<name>/default.yaml``; returns root."""
    (root / "py").mkdir(parents=True, exist_ok=True)
    (root / "conf" / name).mkdir(parents=True, exist_ok=True)
    (root / "py" / f"{name}.py").write_text(textwrap.dedent(TOY_PY).replace("EDITS_HERE", edits))
    (root / "conf" / name / "default.yaml").write_text(TOY_YAML.format(module=name))
    return root


def run_cli(args: list[str], plugin_root: Path, output_dir: Path, sweep_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true",
           "PYTHONPATH": os.pathsep.join([str(plugin_root / "py"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "outro_sweep", *args, f"hydra.searchpath=[file://{plugin_root / 'conf'}]",
         f"paths.output_dir={output_dir}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory, tiny_model_dir) -> dict:
    root = write_plugin(tmp_path_factory.mktemp("plugin"), "toy_scale")
    out = tmp_path_factory.mktemp("toy_out")
    result = run_cli(["-m", "outro=off", "+toy_scale=default", "toy_scale.layer=0,1", "toy_scale.factor=0.5,4",
                      "model=hf_causal_lm", f"model.path={tiny_model_dir}", "benchmark.limit=6",
                      "benchmark.scoring=logits", "predict.batch_size=1", "logger.mode=offline"],
                     root, out, out / "sweep")
    return {"root": root, "out": out, "sweep": out / "sweep", "result": result}


@pytest.mark.slow
def test_a_second_intervention_is_swept_with_its_baseline_and_report(toy_sweep):
    result = toy_sweep["result"]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # Nothing of the project names it: its .py and .yaml live outside the repository.
    assert not toy_sweep["root"].is_relative_to(REPO)
    assert "toy_scale" not in subprocess.run(["git", "grep", "-l", "toy_scale", "--", "outro_sweep", "conf"],
                                             cwd=REPO, capture_output=True, text=True).stdout
    assert "sweep: 5 succeeded, 0 skipped (already done), 0 failed, of 5 cells" in result.stdout
    configs = {c.name: OmegaConf.to_container(OmegaConf.load(c / "config.yaml"))
               for c in (toy_sweep["out"] / "cells").iterdir()}
    baselines = [name for name, c in configs.items() if c["toy_scale"]["enabled"] is False]
    assert len(baselines) == 1  # added by the sweeper, once
    assert {c["baseline_identity"] for c in configs.values()} == set(baselines)
    for name, config in configs.items():
        metrics = json.loads((toy_sweep["out"] / "cells" / name / "metrics.json").read_text())
        if name in baselines:
            assert metrics["diagnostics"] == {}
        else:  # the plug-in's own diagnostics went through the shards: 6 prefills of batch 1
            assert metrics["diagnostics"] == {"toy_scale": {"samples": 6, "scaled_rows": 6.0}}
    with open(toy_sweep["sweep"] / "report" / "table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    toy_rows = [r for r in rows if r["interventions"] == "toy_scale"]
    assert len(toy_rows) == 4 and all(r["baseline"] == baselines[0] and r["paired_n"] == "6" for r in toy_rows)
    assert {(r["grid_row"], r["grid_column"]) for r in toy_rows} == {("0", "0.5"), ("0", "4"), ("1", "0.5"), ("1", "4")}
    heatmaps = list((toy_sweep["sweep"] / "report").glob("heatmap_*.png"))
    assert len(heatmaps) == 1
    table = (toy_sweep["sweep"] / "report" / "table.md").read_text()
    assert "| toy_scale.layer | toy_scale.factor |" in table  # the plug-in's declared axes


def test_stacking_and_conflicts_are_decided_from_the_config(tmp_path, monkeypatch):
    write_plugin(tmp_path, "toy_values")
    write_plugin(tmp_path, "toy_outputs", edits='"attention_output"')  # OutRo edits this too
    monkeypatch.syspath_prepend(str(tmp_path / "py"))
    outro = dict(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "outro" / "default.yaml")))
    values = {"_target_": "toy_values.SinkValueScale", "enabled": True, "factor": 2.0, "layer": 1}
    stacked = InterventionStack.from_config({"outro": outro, "toy_values": values, "seed": 0})
    assert [i.group for i in stacked.active_interventions] == ["outro", "toy_values"]
    with pytest.raises(ConfigError) as err:
        InterventionStack.from_config({"outro": outro, "toy_outputs": dict(values, _target_="toy_outputs.SinkValueScale")})
    message = str(err.value)
    assert "\n" not in message and "outro and toy_outputs both edit the attention output" in message
    assert "outro.enabled=false" in message
    # Off: no conflict, and the config is its own baseline.
    off = {"outro": dict(outro, enabled=False), "toy_outputs": dict(values, _target_="toy_outputs.SinkValueScale",
                                                                    enabled=False)}
    assert not InterventionStack.from_config(off).active and is_baseline(off)
    both = {"outro": outro, "toy_values": values, "seed": 0}
    assert baseline_overrides(["toy_values.factor=2", "outro.enabled=true"], both) == [
        "toy_values.factor=2", "outro.enabled=false", "toy_values.enabled=false"]
    assert is_baseline(baseline_config(both)) and baseline_identity(both) == baseline_identity(baseline_config(both))


def test_stacked_interventions_edit_the_model_together(smollm2, tmp_path, monkeypatch):
    """OutRo plus the value-scaling toy: each alone changes the logits, together they differ from
    either alone, and detaching both restores the stock logits bit for bit."""
    import torch

    from outro_sweep.interventions.sinks.first_k import FirstK

    write_plugin(tmp_path, "toy_stack")
    monkeypatch.syspath_prepend(str(tmp_path / "py"))
    outro = dict(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "outro" / "default.yaml")), layer=None)
    toy = {"_target_": "toy_stack.SinkValueScale", "enabled": True, "factor": 3.0, "layer": 2}
    model, tokenizer = smollm2.model, smollm2.tokenizer
    batch = tokenizer(["The capital of France is"], return_tensors="pt")

    def logits(config):
        stack = InterventionStack.from_config(config)
        with torch.no_grad(), stack.attach(smollm2, FirstK(k=1)) as attached:
            out = model(**batch).logits[0, -1]
            return out, attached.sample_diagnostics()

    with torch.no_grad():
        stock = model(**batch).logits[0, -1]
    only_outro, _ = logits({"outro": outro})
    only_toy, _ = logits({"toy_stack": toy})
    together, diagnostics = logits({"outro": outro, "toy_stack": toy})
    assert set(diagnostics[0]) == {"outro", "toy_stack"}
    for edited in (only_outro, only_toy):
        assert not torch.equal(edited, stock) and not torch.equal(edited, together)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits[0, -1], stock)


@pytest.mark.slow
def test_the_paper_experiment_gets_its_baseline(tmp_path):
    """experiment=outro_paper_dailyomni switches OutRo on in its own YAML, after the defaults: the
    sweep must still add the stock-model cell (2 cells, not 1)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "outro_sweep", "-m", "experiment=outro_paper_dailyomni",
         f"benchmark.data_dir={tmp_path}", f"benchmark.video_dir={tmp_path}", "+dry_run=true",
         f"paths.output_dir={tmp_path / 'out'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = json.loads((tmp_path / "sweep" / "plan.json").read_text())
    assert len(planned) == 2 and [e["baseline"] for e in planned] == [False, True]
    assert planned[1]["overrides"][-1] == "outro.enabled=false"
    assert "dry run: 2 cells" in result.stdout
