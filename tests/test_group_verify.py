"""The group replay checks its own rules.

- ``group.verify=N``: a deliberately broken intervention (OutRo whose replay signature leaves out
  ``alpha``, which changes its output) makes a cell replay another cell's layers wrongly; verify
  runs the cell's first batches without replay, finds the layer where the two differ, and fails
  the cell with one line naming it and the layer: in-process, and as a sweep whose cell is marked
  failed while the others finish. On a correct grouped text sweep (SmolLM2), verify passes;
- between cells, a kept model must be stock: a hook left on any module, an editor left on an
  attention module, a replay left watching it or another attention implementation stops the
  process with one line (``NotStock``); a sweep whose intervention leaks a hook stops there;
- transformers' own output-capturing hooks (installed for good by a forward that asks for hidden
  states) are inert, so they neither block a replay nor count as left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.prefix import PrefixReplay, ReplayMismatch
from outro_sweep.interventions.outro import OutRo, OutRoIntervention
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.interventions.stack import Attached

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
PROMPTS = ["The capital of France is", "Two plus two equals four, and three plus three equals",
           "Name a colour:"]


class AlphaBlindOutRo(OutRo):
    """OutRo with a broken replay signature: it leaves ``alpha`` out (as if alpha acted per layer),
    so two cells that differ only in alpha call every layer alike, wrongly past the first sink."""

    per_layer_settings = ("layer", "alpha")


class AlphaBlindIntervention(OutRoIntervention):
    """The broken OutRo as a plug-in (``conf/alpha_blind/default.yaml``, written by the sweep test)."""

    def attach(self, loaded, sink_rule) -> AlphaBlindOutRo:
        return AlphaBlindOutRo(loaded.model, sink_rule, alpha=self.alpha, temperature=self.temperature,
                               layer=self.layer, rotate_decode=self.rotate_decode)


def batch(smollm2) -> dict:
    return dict(smollm2.tokenizer(PROMPTS, return_tensors="pt", padding=True))


def run_cell(smollm2, inputs: dict, store: BoundedCache | None, verify: int = 0, **settings):
    """One cell of the broken OutRo: its logits and per-row diagnostics (replaying from ``store``)."""
    model = smollm2.model
    with AlphaBlindOutRo(model, MassiveActivation(), **settings) as outro:
        if store is None:
            return model(**inputs).logits, outro.take_sample_diagnostics()
        with PrefixReplay(model, Attached([("outro", outro)]), store, verify=verify, cell="c0ffee000000"):
            return model(**inputs).logits, outro.take_sample_diagnostics()


@torch.no_grad()
def test_verify_fails_a_cell_whose_signature_leaves_out_a_knob_and_names_the_layer(smollm2):
    inputs = batch(smollm2)
    alone, diagnostics = run_cell(smollm2, inputs, None, alpha=3.0, layer=1)
    first_sink = min(row["first_sink_layer"] for row in diagnostics)
    store = BoundedCache(2 ** 31)
    run_cell(smollm2, inputs, store, alpha=0.3, layer=1)  # the first cell records every layer
    # Without verify the broken signature goes unnoticed: the cell replays alpha 0.3's layers.
    wrong, _ = run_cell(smollm2, inputs, store, alpha=3.0, layer=1)
    assert not torch.equal(wrong, alone), "the premise: the broken signature makes a replay wrong"
    with pytest.raises(ReplayMismatch) as err:
        run_cell(smollm2, inputs, store, verify=2, alpha=3.0, layer=1)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"group.verify: cell c0ffee000000 computes decoder layer {first_sink} differently "
                              "from the replay (output differs, batch 1, prefill)"), message
    # The same cell with a correct signature (OutRo's own) passes verify and equals its run alone.
    model = smollm2.model
    with OutRo(model, MassiveActivation(), alpha=0.3, layer=1) as outro:
        with PrefixReplay(model, Attached([("outro", outro)]), store):
            model(**inputs)
    before = COUNTS.copy()
    with OutRo(model, MassiveActivation(), alpha=3.0, layer=1) as outro:
        with PrefixReplay(model, Attached([("outro", outro)]), store, verify=2):
            verified = model(**inputs).logits
    with OutRo(model, MassiveActivation(), alpha=3.0, layer=1):
        assert torch.equal(verified, model(**inputs).logits)
    assert COUNTS["verified_layers"] - before["verified_layers"] == first_sink


@torch.no_grad()
def test_verify_checks_decode_steps_and_the_output_head_too(smollm2):
    """A cell that computes a batch exactly as the recording one (OutRo relaxing only at layers
    without sinks): verify runs every layer of the prefill and of each decode step it would replay,
    and the head, and finds them equal; the cell equals its run alone."""
    model, inputs = smollm2.model, batch(smollm2)
    generate = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, temperature=None, top_p=None, top_k=None,
                    pad_token_id=smollm2.tokenizer.pad_token_id)
    store = BoundedCache(2 ** 31)
    with OutRo(model, MassiveActivation(), alpha=0.3, layer=1) as outro:
        with PrefixReplay(model, Attached([("outro", outro)]), store):
            model.generate(**inputs, **generate)
    before = COUNTS.copy()
    with OutRo(model, MassiveActivation(), alpha=0.3, layer=2) as outro:
        with PrefixReplay(model, Attached([("outro", outro)]), store, verify=1):
            verified = model.generate(**inputs, **generate)
    with OutRo(model, MassiveActivation(), alpha=0.3, layer=2):
        assert torch.equal(verified, model.generate(**inputs, **generate))
    layers = len(model.model.layers)
    assert COUNTS["verified_layers"] - before["verified_layers"] == layers
    assert COUNTS["verified_decode_steps"] - before["verified_decode_steps"] == 3
    assert COUNTS["prefix_layers_replayed"] == before["prefix_layers_replayed"]  # nothing was replayed


@torch.no_grad()
def test_transformers_output_capturing_hooks_do_not_block_a_replay(smollm2):
    """A forward that asks for hidden states installs transformers' capturing hooks on every layer
    and its attention for good; they are inert in the forwards that ask for nothing, which still
    replay, and a kept model with them is still stock."""
    from outro_sweep.group.models import check_stock, stock_state
    from outro_sweep.interventions.base import Editor

    class StockBelow12(Editor):
        def unchanged_prefix(self, hidden, real) -> int:
            return 12

    model, inputs = smollm2.model, batch(smollm2)
    stock = stock_state(model)
    model(**inputs, output_hidden_states=True)
    assert model.model.layers[0].self_attn._forward_hooks, "the premise: transformers installed its hooks"
    check_stock(model, stock)
    store = BoundedCache(2 ** 30)
    editors = Attached([("stand_in", StockBelow12(model))])
    expected = model(**inputs, output_hidden_states=True)
    with PrefixReplay(model, editors, store):
        model(**inputs)  # records layers 0..11
    before = COUNTS["prefix_layers_replayed"]
    with PrefixReplay(model, editors, store):
        assert torch.equal(model(**inputs).logits, expected.logits)
    assert COUNTS["prefix_layers_replayed"] - before == 12
    # A forward that asks for hidden states makes the hooks live: nothing is replayed under them.
    with PrefixReplay(model, editors, store):
        captured = model(**inputs, output_hidden_states=True)
    assert COUNTS["prefix_layers_replayed"] - before == 12
    assert all(torch.equal(a, b) for a, b in zip(captured.hidden_states, expected.hidden_states))


class _Loader:
    def __init__(self, loaded) -> None:
        self.loaded = loaded

    def load(self):
        return self.loaded


@torch.no_grad()
def test_a_kept_model_that_is_not_stock_stops_the_process_in_one_line(smollm2):
    from outro_sweep.group import models
    from outro_sweep.interventions.attention_hook import attach_editor, detach_editor
    from outro_sweep.interventions.base import Editor
    from outro_sweep.interventions.decoder import set_text_attention

    model = smollm2.model
    models.release()
    try:
        session = models.shared_session(_Loader(smollm2), "smollm2", 0.1)
        assert models.shared_session(_Loader(smollm2), "smollm2", 0.1) is session  # stock: kept

        def refused() -> str:
            with pytest.raises(models.NotStock) as err:
                models.shared_session(_Loader(smollm2), "smollm2", 0.1)
            assert isinstance(err.value, SystemExit) and "\n" not in str(err.value)
            return str(err.value)

        handle = model.model.layers[3].mlp.register_forward_hook(lambda *args: None)
        assert "a forward hook left on model.layers.3.mlp after the previous cell" in refused()
        handle.remove()
        editor = Editor(model)
        attach_editor(model.model.layers[7].self_attn, editor)
        assert "an editor still attached to the attention of decoder layer 7" in refused()
        detach_editor(model.model.layers[7].self_attn, editor)
        set_text_attention(model, editor.parts, "eager")
        assert "its attention implementation 'eager', loaded as 'sdpa'" in refused()
        set_text_attention(model, editor.parts, "sdpa")
        assert models.shared_session(_Loader(smollm2), "smollm2", 0.1) is session  # stock again
    finally:
        models.release()


# ---- whole sweeps ---------------------------------------------------------------------------------


def sweep(out: Path, *args: str, plugins: Path | None = None) -> subprocess.CompletedProcess:
    extra = [f"hydra.searchpath=[file://{plugins}]"] if plugins is not None else []
    return subprocess.run([sys.executable, "-m", "outro_sweep", "-m", *args, *extra, "logger.mode=disabled",
                           f"paths.output_dir={out}", f"hydra.sweep.dir={out / 'sweep'}"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def statuses(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "sweep").glob("*/status.json"))]


@pytest.mark.slow
def test_a_grouped_text_sweep_passes_verify(tmp_path):
    result = sweep(tmp_path, "outro.alpha=0.3,3", "outro.layer=1", "benchmark.limit=6", "predict.batch_size=3",
                   "benchmark.max_new_tokens=4", "group.verify=2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 3 succeeded, 0 skipped (already done), 0 failed, of 3 cells" in result.stdout
    jobs = sorted((tmp_path / "sweep").glob("*/sharing.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    counts = json.loads(jobs[-1].read_text())
    # the two OutRo cells verify both their batches (the baseline records: nothing to verify)
    assert counts["verified_prefills"] == 4 and counts.get("prefill_replays", 0) == 0
    assert counts["verified_layers"] > 0 and counts["model_loads"] == 1


ALPHA_BLIND_YAML = """\
_target_: tests.test_group_verify.AlphaBlindIntervention
enabled: true
alpha: 3.0
temperature: 0.1
layer: 1
rotate_decode: true
"""


@pytest.mark.slow
def test_a_sweep_cell_that_fails_verify_is_marked_failed_and_the_others_finish(tmp_path):
    conf = tmp_path / "conf" / "alpha_blind"
    conf.mkdir(parents=True)
    (conf / "default.yaml").write_text(ALPHA_BLIND_YAML)
    out = tmp_path / "out"
    result = sweep(out, "outro=off", "+alpha_blind=default", "alpha_blind.alpha=0.3,3", "benchmark.limit=3",
                   "predict.batch_size=3", "benchmark.scoring=logits", "group.verify=2", plugins=tmp_path / "conf")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "sweep: 2 succeeded, 0 skipped (already done), 1 failed, of 3 cells" in result.stdout
    (failed,) = [status for status in statuses(out) if status["status"] == "failed"]
    identity = failed["identity"]
    assert failed["error"].startswith(f"group.verify: cell {identity} computes decoder layer "), failed["error"]
    marker = json.loads((out / "cells" / identity / "FAILED").read_text())
    assert marker["error"].endswith(failed["error"])  # the marker names the exception's type too
    config = (out / "cells" / identity / "config.yaml").read_text()
    assert "alpha: 3" in config  # the second cell, which replayed the first's layers


LEAKY_PY = '''
from outro_sweep.interventions.base import Editor, Intervention
from outro_sweep.interventions.decoder import attention_modules


class Leaky(Intervention):
    sweep_axes = ("factor",)
    edits = frozenset({"value_vectors"})

    def __init__(self, group="leaky", enabled=True, factor=1.0):
        super().__init__(group, enabled)
        self.factor = factor

    def attach(self, loaded, sink_rule):
        return _LeavesAHook(loaded.model, self.factor)


class _LeavesAHook(Editor):
    def __init__(self, model, factor):
        super().__init__(model)
        self.factor = factor

    def start(self, edits):
        # registered around ``edits``: nothing removes it on exit
        attention_modules(self.model)[0].v_proj.register_forward_hook(lambda module, args, output: None)
'''


@pytest.mark.slow
def test_a_sweep_whose_intervention_leaves_a_hook_stops_at_the_next_cell_in_one_line(tmp_path):
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "leaky_plugin.py").write_text(LEAKY_PY)
    (tmp_path / "conf" / "leaky").mkdir(parents=True)
    (tmp_path / "conf" / "leaky" / "default.yaml").write_text("_target_: leaky_plugin.Leaky\nenabled: true\n"
                                                              "factor: 1.0\n")
    out = tmp_path / "out"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "py"), str(REPO)])}
    result = subprocess.run([sys.executable, "-m", "outro_sweep", "-m", "outro=off", "+leaky=default",
                             "leaky.factor=1,2", "benchmark.limit=3", "predict.batch_size=3",
                             "benchmark.scoring=logits", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                             "logger.mode=disabled", f"paths.output_dir={out}", f"hydra.sweep.dir={out / 'sweep'}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model kept for the next cell of the group is not the stock model (a forward "
                           "hook left on model.layers.0.self_attn.v_proj after the previous cell)"), last
    done = [status for status in statuses(out) if status["status"] == "succeeded"]
    assert len(done) == 2  # the baseline and the first leaky cell; the sweep stopped before the third
