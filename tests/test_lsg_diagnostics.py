"""LSG's sink taxonomy in its diagnostics (outro_sweep/interventions/lsg.py), its refusals before
the model loads, and the report's V-/L-sink figure.

The tiny random Qwen2.5-VL (real processor) and LLaVA-OneVision of tests/tiny_vlms.py run a
real left-padded batch of two videos. A V-sink is planted on the vision tower's patch embedding
(as in test_vision_sinks.py): patch 0 of clip 0's first frame, so row 0's first video token. An
LLM-side spike is planted on decoder layer 0's output (the stream entering layer 1) at row 0's
6th video token and at its V-sink. By hand, entering layer 0 no visual token is massive but the V-sink
(excluded); entering layer 1 row 0 has one L-sink (the 6th video token; the V-sink is not an
L-sink), row 1 none.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.lsg import LSGIntervention, lsink_layer_list
from outro_sweep.interventions.sinks.attention_mass import AttentionMass
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.models.base import LoadedModel
from outro_sweep.models.llava_onevision import LlavaOnevision
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from outro_sweep.report.plots import sink_taxonomy
from tests import tiny_vlms
from tests.test_vision_sinks import DIM, SPIKE, TAU, plant, qwen_inputs, video_slots

GATE_LAYER = 0  # the tiny model has 2 text layers: keys scaled at layer 1


@pytest.fixture(scope="module", params=["qwen2_5_vl", "llava_onevision"])
def planted(request):
    """(model, processor, inputs, family) with both spikes planted."""
    family = request.param
    model, processor = tiny_vlms.build(family)
    inputs = qwen_inputs(processor) if family == "qwen2_5_vl" else tiny_vlms.video_batch(family, processor)
    slots = video_slots(inputs, model.config.video_token_id)
    lsink, vsink = int(slots[0][5]), int(slots[0][0])

    def llm_spike(_module, _args, output):  # layer 0's output: (B, S, D), or a tuple starting with it
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        if hidden.shape[1] > lsink:  # prefill only (a decode step has one position)
            hidden[0, [lsink, vsink], 3] += SPIKE
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    # Patch 0 of clip 0's first frame: the row's first video token is a V-sink.
    tower = model.model.visual.patch_embed if family == "qwen2_5_vl" else model.model.vision_tower.embeddings
    handles = [plant(tower, [0] if family == "qwen2_5_vl" else {0: [0]}),
               model.model.language_model.layers[0].register_forward_hook(llm_spike)]
    yield model, processor, inputs, family
    for handle in handles:
        handle.remove()


def loaded(model, processor, family: str) -> LoadedModel:
    cls = Qwen2_5VL if family == "qwen2_5_vl" else LlavaOnevision
    loader = cls(path="unused", name=f"tiny_{family}", vsink_dims=[DIM], vsink_tau=TAU)
    return LoadedModel(model, processor, loader, loader.name)


@pytest.mark.parametrize("run", ["forward", "generate"])
def test_per_sample_vsink_and_lsink_counts_are_the_planted_ones(planted, run):
    model, processor, inputs, family = planted
    visual = [len(s) for s in video_slots(inputs, model.config.video_token_id)]
    lsg = LSGIntervention(layer=GATE_LAYER, rho_vsink=0.2, lsink_layers=[0, 1])
    with torch.no_grad(), lsg.attach(loaded(model, processor, family), MassiveActivation()) as gate:
        if run == "forward":
            model(**inputs)
        else:  # the decode steps must not replace what the prefill found
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
        rows = gate.take_sample_diagnostics()
        assert gate.take_sample_diagnostics() == []  # taken once per prefill
    assert [(r["vsinks"], r["visual"]) for r in rows] == [(1, visual[0]), (0, visual[1])]
    assert [r["lsinks"] for r in rows] == [{"0": 0, "1": 1}, {"0": 0, "1": 0}]
    assert rows[0]["rho_vsink"] == 0.2 and rows[0]["rho_rest"] == pytest.approx(0.8)
    json.dumps(rows)  # JSON-ready, as the shard writer stores them

    summary = lsg.summarise([*rows, None], {})
    assert summary["samples"] == 2 and summary["gate_layers"] == [GATE_LAYER]
    assert summary["mean_vsinks"] == 0.5 and summary["mean_visual"] == sum(visual) / 2
    assert summary["mean_lsinks_per_layer"] == {"0": 0.0, "1": 0.5}


def test_no_hidden_states_are_requested_and_the_model_is_stock_after_detach(planted):
    """The counts come from pre-hooks at prefill: the model's output carries no hidden states,
    and outside ``with`` no hook is left on the decoder layers."""
    model, processor, inputs, family = planted
    layers = model.model.language_model.layers
    before = [len(layer._forward_pre_hooks) for layer in layers]
    lsg = LSGIntervention(layer=GATE_LAYER, lsink_layers=[0, 1])
    with torch.no_grad(), lsg.attach(loaded(model, processor, family), MassiveActivation()):
        out = model(**inputs)
        assert [len(layer._forward_pre_hooks) for layer in layers] == [b + 1 for b in before]
    assert out.hidden_states is None
    assert [len(layer._forward_pre_hooks) for layer in layers] == before


def test_lsink_layers_auto_is_every_layer_up_to_the_last_gate():
    assert lsink_layer_list("auto", 3) == [0, 1, 2, 3]
    assert lsink_layer_list("auto", [6, 3]) == list(range(7))
    assert lsink_layer_list([5, 1, 5], 10) == [1, 5]
    settings = {"layer": 2, "rho_vsink": 0.5, "lsink_layers": "auto"}
    assert (LSGIntervention.identity_settings(settings, 8)
            == LSGIntervention.identity_settings({**settings, "lsink_layers": [0, 1, 2]}, 8))
    assert (LSGIntervention.identity_settings(settings, 8)
            != LSGIntervention.identity_settings({**settings, "lsink_layers": [0]}, 8))
    assert LSGIntervention.needs_sink_rule  # the sink rule defines the L-sinks: part of the identity


def test_lsink_layers_out_of_range_and_attention_rules_are_refused():
    with pytest.raises(ConfigError) as err:
        LSGIntervention(layer=0, lsink_layers=[0, 2]).check_model(2)
    assert "lsg.lsink_layers=[0, 2] is out of range" in str(err.value) and "0..1" in str(err.value)
    loader = Qwen2_5VL(path="unused", name="tiny", vsink_dims="auto")
    with pytest.raises(ConfigError) as err:
        LSGIntervention(layer=0).check_before_load(loader, AttentionMass())
    assert "\n" not in str(err.value) and "sink=attention_mass" in str(err.value)


def test_lsg_on_a_text_model_is_refused_in_one_line_before_loading(tmp_path, monkeypatch, capsys):
    """Through the CLI: exit 2, one line on stderr, no output folder (no cell was made)."""
    from outro_sweep.__main__ import main

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["outro_sweep", "model=smollm2_135m", "lsg=oracle", "lsg.layer=2",
                                      "benchmark.limit=4", f"paths.output_dir={out}"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "lsg.enabled=true needs a video model" in lines[0] and "model=smollm2_135m reads text only" in lines[0]
    assert not out.exists()


def test_lsg_on_an_unsupported_video_family_is_refused_before_loading(tmp_path):
    """The generic video loader (family auto) has no known tower layout."""
    from outro_sweep.models.video_lm import AutoVideoLM

    folder = tiny_vlms.save("qwen2_5_vl", tmp_path / "m", text_layers=2)
    with pytest.raises(ConfigError) as err:
        LSGIntervention(layer=0).check_before_load(AutoVideoLM(path=str(folder), name="any"), MassiveActivation())
    assert "\n" not in str(err.value) and "family auto" in str(err.value)
    LSGIntervention(layer=0).check_before_load(Qwen2_5VL(path=str(folder), name="q"), MassiveActivation())


# ---- one LSG cell as a user runs it, and its report figure -----------------------------------------

LIMIT = 4


@pytest.fixture(scope="module")
def lsg_cell(shared_data, tmp_path_factory) -> dict:
    """``python -m outro_sweep lsg=oracle lsg.layer=1`` on the tiny Qwen2.5-VL saved as a model
    folder (4 text layers), the real NExT-QA annotations with stand-in clips, in a subprocess.
    ``sink=massive_activation`` with both thresholds 0 flags every token, so by hand every visual
    token that is not a V-sink is an L-sink at every layer: L-sinks = visual - V-sinks per row."""
    import os
    import subprocess

    from tests.test_lsg_sweep import ENTRY, REPO, SMALL

    tmp = tmp_path_factory.mktemp("lsgdiag_cell")
    model = tiny_vlms.save("qwen2_5_vl", tmp / "model")
    data_dir, video_dir = tiny_vlms.nextqa_clips(shared_data, tmp, LIMIT)
    entry = tmp / "entry.py"
    entry.write_text(ENTRY.format(tests=str(REPO / "tests")))
    out = tmp / "out"
    args = ["outro=off", "lsg=oracle", "lsg.layer=1", "lsg.rho_vsink=0.2", "sink=massive_activation",
            "sink.abs_threshold=0", "sink.median_ratio=0", "model=qwen2_5_vl_7b", f"model.path={model}", *SMALL,
            "benchmark=nextqa_mc", f"benchmark.data_dir={data_dir}", f"benchmark.video_dir={video_dir}",
            f"benchmark.limit={LIMIT}", "benchmark.scoring=logits", "predict.batch_size=2", "logger.mode=disabled",
            f"paths.output_dir={out}", f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'run'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(entry), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    [cell] = list((out / "cells").iterdir())
    return {"cell": cell, "tmp": tmp}


@pytest.mark.slow
def test_a_cells_taxonomy_means_and_its_figure_come_from_its_predictions(lsg_cell):
    from outro_sweep.report.analysis import CellResult
    from outro_sweep.report.build import write_report
    from outro_sweep.report.collect import read_cell
    from outro_sweep.report.plots import lsg_sink_figure_of

    cell = lsg_cell["cell"]
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    samples = [r["diagnostics"]["lsg"] for r in records]
    assert len(samples) == LIMIT
    for sample in samples:  # lsink_layers: auto = 0..the gate layer; every non-V-sink visual token flagged
        assert sample["lsinks"] == {"0": sample["visual"] - sample["vsinks"], "1": sample["visual"] - sample["vsinks"]}
    taxonomy = sink_taxonomy(read_cell(cell).metrics())
    assert taxonomy.group == "lsg" and taxonomy.samples == LIMIT and taxonomy.gate_layers == [1]
    assert taxonomy.vsinks == pytest.approx(sum(s["vsinks"] for s in samples) / LIMIT)
    assert taxonomy.lsinks == pytest.approx({layer: sum(s["lsinks"][str(layer)] for s in samples) / LIMIT
                                             for layer in (0, 1)})
    assert taxonomy.lsinks[0] > 0

    # The figure draws those numbers: V-sink bars, then L-sink bars, one per layer, and the gate line.
    figure = lsg_sink_figure_of(CellResult(read_cell(cell)))
    axes = figure.axes[0]
    heights = [patch.get_height() for patch in axes.patches]
    assert heights == pytest.approx([taxonomy.vsinks] * 2 + [taxonomy.lsinks[0], taxonomy.lsinks[1]])
    assert [line.get_xdata()[0] for line in axes.get_lines()] == [1]  # the gate layer

    report = write_report([], lsg_cell["tmp"] / "report", wandb_mode="disabled", cells=[cell])
    path = report / f"lsg_sinks_{cell.name}.png"
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (report / "table.md").read_text()
    assert f"lsg_sinks_{cell.name}.png" in table and "recorded no sink diagnostics" not in table


def test_a_cell_without_vsink_counts_has_no_taxonomy_figure():
    assert sink_taxonomy({"diagnostics": {"outro": {"sink_rate_per_layer": {"0": 1.0}}}}) is None
    taxonomy = sink_taxonomy({"diagnostics": {"lsg": {"samples": 2, "gate_layers": [3, 1], "mean_vsinks": 1.5,
                                                          "mean_visual": 10, "mean_lsinks_per_layer": {"2": 1, "0": 0}}}})
    assert (taxonomy.vsinks, taxonomy.lsinks, taxonomy.gate_layers) == (1.5, {0: 0.0, 2: 1.0}, [1, 3])


def test_the_sink_rule_defines_an_lsg_cell_and_not_its_baseline():
    """The L-sinks an LSG cell records are the sink rule's: ``sink`` is part of its identity; the
    stock cell ignores it."""
    from omegaconf import OmegaConf

    from outro_sweep.cell.identity import identity_config
    from outro_sweep.config.compose import compose_config
    from outro_sweep.config.command_line import CONF_DIR

    def hashed(*overrides):
        config = compose_config(["model=qwen2_5_vl_7b", "benchmark=videomme", "outro=off", *overrides], CONF_DIR)
        plain = OmegaConf.to_container(config)
        plain.pop("hydra", None)  # not hashed; its run-time fields are unset outside a Hydra job
        return identity_config(OmegaConf.to_container(OmegaConf.create(plain), resolve=True))

    lsg = ("lsg=oracle", "lsg.layer=2")
    assert hashed(*lsg) != hashed(*lsg, "sink=first_k")
    assert "sink" in hashed(*lsg) and "sink" not in hashed("lsg=off")
    assert hashed("lsg=off") == hashed("lsg=off", "sink=first_k")
