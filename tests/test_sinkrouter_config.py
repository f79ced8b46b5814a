"""SinkRouter as a config group: refusals before the model loads, the cell identity, stacking
with OutRo, and one real cell through ``python -m outro_sweep`` (SmolLM2, offline).

- a bad ``sinkrouter.*`` value is refused in one line naming the key, the value and the valid
  values, before any output folder exists;
- the identity reads the knob its mode uses and ignores the other;
- OutRo and SinkRouter stack (they edit different things): with nothing skipped the stack is
  OutRo alone bit for bit at every decode step, and with skipping both record diagnostics;
- a stacked cell runs end to end and its metrics.json skip rate is the per-sample rates pooled
  over their decode steps, recomputed here from predictions.jsonl.
"""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from outro_sweep.cell.identity import identity_of
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError
from outro_sweep.interventions.stack import InterventionStack
from outro_sweep.preflight.command_line import preflight
from tests.cell_runs import run_cli

PROMPTS = ["The capital of France is a large old city on the river called", "Two plus two equals, said the"]


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# ---- one-line refusals before the model loads --------------------------------------------------
@pytest.mark.parametrize("overrides,needles", [
    (["sinkrouter.target_skip=1.5"], ["sinkrouter.target_skip=1.5", "[0, 1)"]),
    (["sinkrouter.target_skip=-0.1"], ["sinkrouter.target_skip=-0.1", "[0, 1)"]),
    (["sinkrouter.threshold=nan"], ["sinkrouter.threshold=nan", "finite"]),
    (["sinkrouter.threshold=high"], ["sinkrouter.threshold=high", "number"]),
    (["sinkrouter.mode=adaptive"], ["sinkrouter.mode=adaptive", "constant", "target_skip"]),
    (["sinkrouter.aggregate=median"], ["sinkrouter.aggregate=median", "mean", "max"]),
    (["sinkrouter.first_layer=30"], ["sinkrouter.first_layer=30", "0..29"]),
    (["sinkrouter.first_layer=-1"], ["sinkrouter.first_layer=-1", ">= 0"]),
    (["benchmark.scoring=logits"], ["sinkrouter", "benchmark.scoring=logits", "benchmark.scoring=generate"]),
])
def test_bad_settings_are_refused_in_one_line(tmp_path, overrides, needles):
    out = tmp_path / "outputs"
    with pytest.raises(ConfigError) as err:
        preflight(["outro=off", "sinkrouter=default", *overrides, f"paths.output_dir={out}"])
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not out.exists()


def test_sinkrouter_off_is_the_default_and_the_baseline():
    config = composed()
    assert config.sinkrouter.enabled is False
    stack = InterventionStack.from_config(composed("outro=off"))
    assert not stack.active  # every intervention off: the stock-model baseline
    assert identity_of(composed("outro=off")) == identity_of(composed("outro=off", "sinkrouter.threshold=0.1"))


# ---- identity --------------------------------------------------------------------------------
def test_the_identity_reads_the_knob_the_mode_uses():
    constant = ["outro=off", "sinkrouter=default", "sinkrouter.threshold=0.3"]
    assert identity_of(composed(*constant)) == identity_of(composed(*constant, "sinkrouter.target_skip=0.2"))
    assert identity_of(composed(*constant)) != identity_of(composed(*constant[:-1], "sinkrouter.threshold=0.5"))
    target = ["outro=off", "sinkrouter=default", "sinkrouter.mode=target_skip", "sinkrouter.target_skip=0.6"]
    assert identity_of(composed(*target)) == identity_of(composed(*target, "sinkrouter.threshold=0.9"))
    assert identity_of(composed(*target)) != identity_of(composed(*target[:-1], "sinkrouter.target_skip=0.4"))
    assert identity_of(composed(*constant)) != identity_of(composed(*constant, "sinkrouter.aggregate=max"))


# ---- stacking with OutRo -----------------------------------------------------------------------
def stacked_generate(loaded, inputs, *overrides):
    config = composed(*overrides)
    stack = InterventionStack.from_config(config)
    rule = instantiate(config.sink)  # the cell's sink rule, configured as check_cell does
    rule.configure(loaded.loader.sink_dims)
    with torch.no_grad(), stack.attach(loaded, rule) as attached:
        out = loaded.model.generate(**inputs, max_new_tokens=5, do_sample=False, output_logits=True,
                                    return_dict_in_generate=True, pad_token_id=loaded.tokenizer.pad_token_id)
        return out, attached.sample_diagnostics()


def test_outro_and_sinkrouter_stack(smollm2):
    inputs = smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    outro, _ = stacked_generate(smollm2, inputs, "outro=default")
    idle, _ = stacked_generate(smollm2, inputs, "outro=default", "sinkrouter=default", "sinkrouter.threshold=1.5")
    for a, b in zip(idle.logits, outro.logits):
        assert torch.equal(a, b)
    both, rows = stacked_generate(smollm2, inputs, "outro=default", "sinkrouter=default", "sinkrouter.threshold=0.3")
    assert torch.equal(both.logits[0], outro.logits[0])  # prefill: OutRo's alone
    assert max((a - b).abs().max() for a, b in zip(both.logits[1:], outro.logits[1:])) > 1e-2
    assert all(set(row) == {"outro", "sinkrouter"} and row["sinkrouter"]["skip_rate"] > 0 for row in rows)
    assert smollm2.model.config._attn_implementation == "sdpa"


# ---- a real cell ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_stacked_cell_runs_end_to_end_and_pools_its_skip_rate(tmp_path):
    out = tmp_path / "out"
    args = ["outro=default", "sinkrouter=default", "sinkrouter.threshold=0.4", "benchmark.limit=4",
            "predict.batch_size=2", "trainer.enable_progress_bar=false", "logger.mode=disabled"]
    result = run_cli(args, out, tmp_path / "run", timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (cell,) = (out / "cells").iterdir()
    metrics = json.loads((cell / "metrics.json").read_text())
    summary = metrics["diagnostics"]["sinkrouter"]
    records = [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]
    samples = [record["diagnostics"]["sinkrouter"] for record in records]
    assert len(samples) == 4 and all("outro" in record["diagnostics"] for record in records)
    steps = [sample["decode_steps"] for sample in samples]
    assert all(step > 0 for step in steps)
    pooled = sum(s["skip_rate"] * n for s, n in zip(samples, steps)) / sum(steps)
    assert summary["skip_rate"] == pytest.approx(pooled, abs=1e-12) and 0 < pooled < 1
    per_layer = [sum(s["skip_rate_per_layer"][i] * n for s, n in zip(samples, steps)) / sum(steps) for i in range(30)]
    assert summary["skip_rate_per_layer"] == pytest.approx(per_layer, abs=1e-12)
    assert summary["samples"] == 4
    assert OmegaConf.load(cell / "config.yaml").sinkrouter.threshold == 0.4
