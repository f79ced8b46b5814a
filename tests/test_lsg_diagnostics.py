"""LSG's sink taxonomy in its diagnostics (outro_sweep/interventions/lsg.py), its refusals before
the model loads, and the report's V-/L-sink figure.

The tiny random Qwen2.5-VL (tests/tiny_vlms.py, real processor) runs a real left-padded batch of
two videos. A V-sink is planted on the vision tower's patch embedding (as in
test_vision_sinks.py): patch 0 of clip 0, so row 0's first video token. An LLM-side spike is
planted on decoder layer 0's output (the stream entering layer 1) at row 0's 6th video token
and at its V-sink. By hand, entering layer 0 no visual token is massive but the V-sink
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
from outro_sweep.models.qwen2_5_vl import Qwen2_5VL
from tests import tiny_vlms
from tests.test_vision_sinks import DIM, SPIKE, TAU, plant, qwen_inputs, video_slots

GATE_LAYER = 0  # the tiny model has 2 text layers: keys scaled at layer 1


@pytest.fixture(scope="module")
def planted():
    """(model, processor, inputs, lsink position, vsink position) with both spikes planted."""
    model, processor = tiny_vlms.build("qwen2_5_vl")
    inputs = qwen_inputs(processor)
    slots = video_slots(inputs, model.config.video_token_id)
    lsink, vsink = int(slots[0][5]), int(slots[0][0])

    def llm_spike(_module, _args, output):  # layer 0's output: (B, S, D), or a tuple starting with it
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        if hidden.shape[1] > lsink:  # prefill only (a decode step has one position)
            hidden[0, [lsink, vsink], 3] += SPIKE
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handles = [plant(model.model.visual.patch_embed, [0]),
               model.model.language_model.layers[0].register_forward_hook(llm_spike)]
    yield model, processor, inputs, lsink, vsink
    for handle in handles:
        handle.remove()


def loaded(model, processor) -> LoadedModel:
    loader = Qwen2_5VL(path="unused", name="tiny_qwen2_5_vl", vsink_dims=[DIM], vsink_tau=TAU)
    return LoadedModel(model, processor, loader, loader.name)


@pytest.mark.parametrize("run", ["forward", "generate"])
def test_per_sample_vsink_and_lsink_counts_are_the_planted_ones(planted, run):
    model, processor, inputs, _, _ = planted
    lsg = LSGIntervention(layer=GATE_LAYER, rho_vsink=0.2, lsink_layers=[0, 1])
    with torch.no_grad(), lsg.attach(loaded(model, processor), MassiveActivation()) as gate:
        if run == "forward":
            model(**inputs)
        else:  # the decode steps must not replace what the prefill found
            model.generate(**inputs, max_new_tokens=3, do_sample=False)
        rows = gate.take_sample_diagnostics()
        assert gate.take_sample_diagnostics() == []  # taken once per prefill
    assert [(r["vsinks"], r["visual"]) for r in rows] == [(1, 64), (0, 64)]
    assert [r["lsinks"] for r in rows] == [{"0": 0, "1": 1}, {"0": 0, "1": 0}]
    assert rows[0]["rho_vsink"] == 0.2 and rows[0]["rho_rest"] == pytest.approx(0.8)
    json.dumps(rows)  # JSON-ready, as the shard writer stores them

    summary = lsg.summarise([*rows, None], {})
    assert summary["samples"] == 2 and summary["gate_layers"] == [GATE_LAYER]
    assert summary["mean_vsinks"] == 0.5 and summary["mean_visual"] == 64
    assert summary["mean_lsinks_per_layer"] == {"0": 0.0, "1": 0.5}


def test_no_hidden_states_are_requested_and_the_model_is_stock_after_detach(planted):
    """The counts come from pre-hooks at prefill: the model's output carries no hidden states,
    and outside ``with`` no hook is left on the decoder layers."""
    model, processor, inputs, _, _ = planted
    layers = model.model.language_model.layers
    before = [len(layer._forward_pre_hooks) for layer in layers]
    lsg = LSGIntervention(layer=GATE_LAYER, lsink_layers=[0, 1])
    with torch.no_grad(), lsg.attach(loaded(model, processor), MassiveActivation()):
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
    from outro_sweep.sweep.cli import main

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
