"""The editor base (``outro_sweep.interventions.base``), through the small intervention that
docs/extending.md shows, defined here exactly as printed there:

- attached to SmolLM2 it changes the logits (and at factor 1 leaves them bit for bit), reports
  its diagnostics and sums, and detached the model gives the stock logits bit for bit;
- its settings are checked from its annotations, in one line;
- the base tells a prefill from a decode forward in one place (either name of the KV cache);
- an editor's replay signature is derived from every constructor setting;
- a group's cells share its stock layers, and ``group.verify`` finds the replay right;
- ``attach`` must return an ``Editor``.
"""

from __future__ import annotations

import pytest
import torch

from outro_sweep.errors import ConfigError
from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.prefix import PrefixReplay
from outro_sweep.interventions.base import decoder_call
from outro_sweep.interventions.decoder import attention_modules, decoder_layers
from outro_sweep.interventions.stack import InterventionStack

# ---- the example of docs/extending.md, verbatim ---------------------------------------------------

from typing import Annotated  # noqa: E402

from outro_sweep.config.schema import Range, check_arguments  # noqa: E402
from outro_sweep.interventions.base import Editor, Intervention  # noqa: E402

Factor = Annotated[float, Range(ge=0, finite=True)]
Layer = Annotated[int, Range(ge=0)]


class ValueScale(Intervention):
    """Scales the first token's value vectors at one decoder layer (conf/value_scale/*.yaml)."""

    sweep_axes = ("layer", "factor")  # the report's heatmap: rows, columns
    edits = frozenset({"value_vectors"})  # another intervention that edits these conflicts with it

    def __init__(self, group: str = "value_scale", enabled: bool = True, factor: Factor = 1.0,
                 layer: Layer = 0) -> None:
        super().__init__(group, enabled)
        check_arguments(ValueScale, locals(), group)  # the annotations are the config's schema
        self.factor, self.layer = factor, layer

    def check_model(self, num_layers: int) -> None:
        if self.layer >= num_layers:
            raise ConfigError(f"{self.group}.layer={self.layer} is out of range: valid values are "
                              f"0..{num_layers - 1}")

    def attach(self, loaded, sink_rule) -> ScaleFirstValue:
        return ScaleFirstValue(loaded.model, self.layer, self.factor)

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        return {"samples": sum(1 for sample in samples if sample), "scaled_rows": sums.get("scaled_rows", 0.0)}


class ScaleFirstValue(Editor):
    def __init__(self, model, layer: int, factor: float) -> None:
        super().__init__(model)  # every argument after the model is a setting (its replay signature)
        self.layer, self.factor = layer, factor
        self.rows, self.batch = 0.0, 0

    def start(self, edits) -> None:
        projection = attention_modules(self.model)[self.layer].v_proj
        edits.hook(projection.register_forward_hook(self._scale))  # removed again on exit

    def _scale(self, module, args, output):  # output: (B, S, H_kv * d) value vectors
        if not self.prefill:  # decode steps read the scaled values from the KV cache
            return None
        self.batch, self.rows = output.shape[0], self.rows + output.shape[0]
        scaled = output.clone()
        scaled[:, 0] *= self.factor  # position 0: the first token of rows without left padding
        return scaled

    def unchanged_prefix(self, hidden, real) -> int:
        return self.layer  # layers below it are stock: the cells of a group share them

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        return prefill_depth  # decode steps differ only where the prefill did

    def take_sample_diagnostics(self) -> list[dict]:
        return [{"factor": self.factor}] * self.batch

    def running_sums(self) -> dict[str, float]:
        return {"scaled_rows": self.rows}


# ---- the tests ----------------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "Two plus two equals four, and three plus three equals"]


def node(**settings) -> dict:
    return {"_target_": f"{__name__}.ValueScale", "enabled": True, **settings}


def batch(smollm2, prompts=PROMPTS) -> dict:
    return dict(smollm2.tokenizer(prompts, return_tensors="pt", padding=True))


@torch.no_grad()
def test_the_example_edits_the_model_while_attached_and_detaches_bit_for_bit(smollm2):
    model, inputs = smollm2.model, batch(smollm2, PROMPTS[:1])  # one row: position 0 is its first token
    stock = model(**inputs).logits
    stack = InterventionStack.from_config({"value_scale": node(factor=3.0, layer=2)})
    stack.check_model(len(decoder_layers(model)))
    with stack.attach(smollm2, None) as attached:
        edited = model(**inputs).logits
        diagnostics, sums = attached.sample_diagnostics(), attached.running_sums()
    assert not torch.equal(edited, stock) and (edited - stock).abs().max().item() > 1e-3
    assert diagnostics == [{"value_scale": {"factor": 3.0}}] and sums == {"value_scale": {"scaled_rows": 1.0}}
    assert stack.summarise([diagnostics[0]], sums) == {"value_scale": {"samples": 1, "scaled_rows": 1.0}}
    assert torch.equal(model(**inputs).logits, stock)  # detached: the stock model, bit for bit
    with InterventionStack.from_config({"value_scale": node(factor=1.0, layer=2)}).attach(smollm2, None):
        assert torch.equal(model(**inputs).logits, stock)  # factor 1 is the identity
    # generation: the prefill scales, the decode steps only read the cache (self.prefill is False there)
    with InterventionStack.from_config({"value_scale": node(factor=3.0, layer=2)}).attach(smollm2, None) as attached:
        model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False, temperature=None,
                       top_p=None, top_k=None, pad_token_id=smollm2.tokenizer.pad_token_id)
        assert attached.running_sums() == {"value_scale": {"scaled_rows": 1.0}}
    assert torch.equal(model(**inputs).logits, stock)


def test_the_example_s_settings_are_checked_from_its_annotations(smollm2):
    with pytest.raises(ConfigError) as err:
        InterventionStack.from_config({"value_scale": node(factor=-1.0)})
    assert "\n" not in str(err.value) and "value_scale.factor=-1.0 is invalid" in str(err.value)
    with pytest.raises(ConfigError, match="value_scale.layer=40 is out of range: valid values are 0..29"):
        InterventionStack.from_config({"value_scale": node(layer=40)}).check_model(len(decoder_layers(smollm2.model)))


def test_the_public_helpers_find_the_layers_and_their_attention(smollm2):
    model = smollm2.model
    layers = decoder_layers(model)
    assert layers is model.model.layers and len(layers) == 30
    assert [a.layer_idx for a in attention_modules(model)] == list(range(30))
    assert all(a is layer.self_attn for a, layer in zip(attention_modules(model), layers))


class _Cache:
    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


@pytest.mark.parametrize("name", ["past_key_values", "past_key_value"])
def test_one_parser_tells_a_prefill_from_a_decode_forward_under_either_cache_name(name):
    ids = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    prefill = decoder_call((), {"input_ids": ids, "attention_mask": mask, name: _Cache(0)})
    assert prefill.prefill and prefill.past == 0 and (prefill.batch, prefill.length) == (2, 3)
    assert prefill.real().tolist() == [[False, True, True], [True, True, True]]
    decode = decoder_call((), {"input_ids": ids[:, :1], "attention_mask": torch.ones(2, 4), name: _Cache(3)})
    assert not decode.prefill and decode.past == 3 and decode.length == 1
    assert name not in decode.inputs() and set(decode.inputs()) == {"input_ids", "attention_mask"}
    assert decoder_call((ids,), {}).prefill  # no cache at all: a prefill
    with pytest.raises(RuntimeError, match="OutRo needs a 2-D padding mask"):
        decoder_call((), {"input_ids": ids, "attention_mask": torch.ones(2, 1, 3, 3)}).real("OutRo")


def test_the_replay_signature_is_every_constructor_setting(smollm2):
    from outro_sweep.interventions.outro import OutRo
    from outro_sweep.interventions.sinks.massive_activation import MassiveActivation

    model = smollm2.model
    assert ScaleFirstValue(model, 2, 3.0).settings() == {"layer": 2, "factor": 3.0}
    assert ScaleFirstValue(model, 2, 3.0).replay_signature == ScaleFirstValue(model, layer=2, factor=3).replay_signature
    assert ScaleFirstValue(model, 2, 3.0).replay_signature != ScaleFirstValue(model, 2, 0.5).replay_signature
    assert ScaleFirstValue(model, 2, 3.0).replay_signature != ScaleFirstValue(model, 3, 3.0).replay_signature
    base = OutRo(model, MassiveActivation(), alpha=3.0, layer=1).replay_signature
    # ``layer`` is described per layer (whether that layer relaxes), so it is left out ...
    assert OutRo(model, MassiveActivation(), alpha=3.0, layer=[2, 4]).replay_signature == base
    # ... and every other setting, the rule's own included, is in it without being listed
    for other in (dict(alpha=0.3), dict(temperature=0.2), dict(rotate_decode="official")):
        assert OutRo(model, MassiveActivation(), **{"alpha": 3.0, "layer": 1, **other}).replay_signature != base
    assert OutRo(model, MassiveActivation(median_ratio=100.0), alpha=3.0, layer=1).replay_signature != base
    hash(base)


@torch.no_grad()
def test_the_example_s_group_cells_share_its_stock_layers_and_verify_finds_them_alike(smollm2):
    model, inputs = smollm2.model, batch(smollm2, PROMPTS[:1])

    def cell(factor: float, store: BoundedCache | None, verify: int = 0) -> torch.Tensor:
        stack = InterventionStack.from_config({"value_scale": node(factor=factor, layer=3)})
        with stack.attach(smollm2, None) as attached:
            if store is None:
                return model(**inputs).logits
            with PrefixReplay(model, attached, store, verify=verify):
                return model(**inputs).logits

    store = BoundedCache(2 ** 30)
    cell(3.0, store)  # records layers 0..2
    before = COUNTS.copy()
    verified = cell(0.5, store, verify=1)
    assert COUNTS["verified_prefills"] - before["verified_prefills"] == 1
    assert COUNTS["prefix_layers_replayed"] == before["prefix_layers_replayed"]  # verified: nothing replayed
    replayed = cell(0.5, store)
    assert COUNTS["prefix_layers_replayed"] - before["prefix_layers_replayed"] == 3
    alone = cell(0.5, None)
    assert torch.equal(verified, alone) and torch.equal(replayed, alone)


def test_attach_must_return_an_editor(smollm2):
    class NotAnEditor(ValueScale):
        def attach(self, loaded, sink_rule):
            return object()

    stack = InterventionStack([NotAnEditor("value_scale")])
    with pytest.raises(TypeError, match="NotAnEditor.attach returned a object: it must return an "
                                        "outro_sweep.interventions.base.Editor"):
        with stack.attach(smollm2, None):
            pass


def test_the_example_is_the_one_docs_extending_md_prints():
    """The two classes above appear verbatim in docs/extending.md's example, so what the page
    shows is what these tests run."""
    import inspect
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    example = page[page.index("## Writing an intervention"):page.index("## Where things live")]
    for cls in (ValueScale, ScaleFirstValue):
        assert inspect.getsource(cls) in example, f"{cls.__name__} differs from docs/extending.md"
