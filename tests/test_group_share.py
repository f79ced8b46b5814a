"""What a group's cells share in one process (outro_sweep/group/), in-process on real models.

- a replayed stock prefix gives the same logits and the same generated tokens, bit for bit, as
  running every layer, and the replayed layers' attention does not run; decode steps replay too
  while the cell's tokens are the recorded ones, and only where its editors declare it;
- a layer with a hook on a module inside it is never replayed;
- a cell that changes layer L continues from the replayed prefix exactly as from its own;
- a prefill with other inputs never replays a kept prefix;
- a vision tower's output is computed once per input and reused after (the tiny Qwen2.5-VL of
  tiny_vlms.py on the real processor), unless a hook inside the tower must see it run;
- the bounded store drops the least recently used entries first.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.prefix import PrefixReplay
from outro_sweep.group.towers import TowerCache
from outro_sweep.interventions.base import Editor
from outro_sweep.interventions.decoder import find_decoder
from outro_sweep.interventions.stack import Attached
from tests import tiny_vlms

PROMPTS = ["The capital of France is", "Two plus two equals four, and three plus three equals",
           "Name a colour:"]
STOCK_DEPTH = 12  # a stand-in intervention that leaves layers 0..11 of SmolLM2's 30 stock


class StockBelow(Editor):
    """An attached editor's stand-in: leaves the first ``depth`` layers stock. Only its answers to
    the replay are read (it is never attached), so it needs no model."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def unchanged_prefix(self, hidden, real) -> int:
        assert all(h.shape == hidden[0].shape for h in hidden) and real.dtype == torch.bool
        return min(self.depth, len(hidden))


class StockBelowInDecode(StockBelow):
    """A stand-in whose decode steps also leave its stock prefill prefix stock (as OutRo's do)."""

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        return prefill_depth


def attached(depth: int = STOCK_DEPTH, decode: bool = False) -> Attached:
    return Attached([("stand_in", (StockBelowInDecode if decode else StockBelow)(depth))])


def batch(smollm2, prompts=PROMPTS) -> dict:
    return dict(smollm2.tokenizer(prompts, return_tensors="pt", padding=True))


@contextmanager
def attention_calls(model):
    """Counter: decoder layer -> calls of its attention module while inside ``with``. Counted on
    the attention class, not by a hook on the module: a hook inside a layer keeps it from replay."""
    attention = type(find_decoder(model).layers[0].self_attn)
    calls, forward = Counter(), attention.forward

    def counted(module, *args, **kwargs):
        calls[module.layer_idx] += 1
        return forward(module, *args, **kwargs)

    attention.forward = counted
    try:
        yield calls
    finally:
        attention.forward = forward


@torch.no_grad()
def test_a_replayed_prefix_gives_the_stock_logits_bit_for_bit_without_running_its_layers(smollm2):
    model, inputs = smollm2.model, batch(smollm2)
    stock = model(**inputs).logits
    store = BoundedCache(2 ** 30)
    before = COUNTS.copy()
    with PrefixReplay(model, attached(), store):
        recorded = model(**inputs).logits
        with attention_calls(model) as calls:
            replayed = model(**inputs).logits
    assert torch.equal(recorded, stock) and torch.equal(replayed, stock)
    assert COUNTS["prefill_records"] - before["prefill_records"] == 1
    assert COUNTS["prefix_layers_replayed"] - before["prefix_layers_replayed"] == STOCK_DEPTH
    assert calls[0] == 0 and calls[STOCK_DEPTH] == 1  # layer 0 replayed, layer 12 computed
    assert all("forward" not in layer.__dict__ for layer in find_decoder(model).layers)  # restored


@torch.no_grad()
def test_a_layer_with_a_hook_inside_it_is_never_replayed(smollm2):
    """A forward hook on a module inside layer 5 (its attention) would not fire if the layer were
    replayed: the replay stops below it, and the hook sees the layer run."""
    model, inputs = smollm2.model, batch(smollm2)
    store = BoundedCache(2 ** 30)
    with PrefixReplay(model, attached(), store):
        model(**inputs)  # records layers 0..11
    seen = []
    handle = find_decoder(model).layers[5].self_attn.register_forward_hook(lambda *args: seen.append(1))
    before = COUNTS.copy()
    try:
        with PrefixReplay(model, attached(), store):
            replayed = model(**inputs).logits
    finally:
        handle.remove()
    assert COUNTS["prefix_layers_replayed"] - before["prefix_layers_replayed"] == 5  # layers 0..4
    assert seen == [1]
    assert torch.equal(replayed, model(**inputs).logits)


GENERATE = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, output_logits=True,
                return_dict_in_generate=True)


def generate(loaded, inputs: dict):
    out = loaded.model.generate(**inputs, **GENERATE, pad_token_id=loaded.tokenizer.pad_token_id)
    return out.sequences, torch.stack(out.logits)  # (B, S + 8), (8, B, V)


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading generated tokens two generations share in every row."""
    same = (a == b).all(dim=0).tolist()
    return next((i for i, equal in enumerate(same) if not equal), len(same))


@torch.no_grad()
def test_generation_from_a_replayed_prefix_is_token_for_token_the_stock_generation(smollm2):
    """An editor that declares nothing for decode: the prefill replays, every decode step runs."""
    inputs = batch(smollm2)
    stock = generate(smollm2, inputs)
    before = COUNTS.copy()
    with PrefixReplay(smollm2.model, attached(), BoundedCache(2 ** 30)):
        first = generate(smollm2, inputs)
        second = generate(smollm2, inputs)
    assert COUNTS["prefill_replays"] - before["prefill_replays"] == 1
    assert COUNTS["decode_steps_replayed"] == before["decode_steps_replayed"]
    for run in (first, second):
        assert torch.equal(run[0], stock[0]) and torch.equal(run[1], stock[1])


@torch.no_grad()
def test_decode_steps_with_the_recorded_tokens_replay_their_stock_layers_bit_for_bit(smollm2):
    model, inputs = smollm2.model, batch(smollm2)
    stock = generate(smollm2, inputs)
    store = BoundedCache(2 ** 30)
    with PrefixReplay(model, attached(decode=True), store):
        generate(smollm2, inputs)  # records the prefill and its 7 decode steps
    before = COUNTS.copy()
    with PrefixReplay(model, attached(decode=True), store), attention_calls(model) as calls:
        replayed = generate(smollm2, inputs)
    assert torch.equal(replayed[0], stock[0]) and torch.equal(replayed[1], stock[1])
    steps = GENERATE["max_new_tokens"] - 1
    assert COUNTS["decode_steps_replayed"] - before["decode_steps_replayed"] == steps
    assert COUNTS["decode_layers_replayed"] - before["decode_layers_replayed"] == steps * STOCK_DEPTH
    assert calls[0] == 0 and calls[STOCK_DEPTH] == steps + 1  # layer 0 never ran; layer 12 ran every forward


@pytest.mark.parametrize("shift", [1e-2, 30.0], ids=["same_tokens_for_a_while", "other_tokens"])
@torch.no_grad()
def test_a_cell_that_changes_a_layer_decodes_from_the_replayed_steps_as_alone(smollm2, shift):
    """The cell's own change at layer 12 in every forward: its generation equals its run alone,
    and exactly the decode steps whose token history is the recorded one replay."""
    model, inputs = smollm2.model, batch(smollm2)
    stock = generate(smollm2, inputs)
    store = BoundedCache(2 ** 30)
    with PrefixReplay(model, attached(decode=True), store):
        generate(smollm2, inputs)  # the stock cell records
    layer = find_decoder(model).layers[STOCK_DEPTH]

    def nudge(module, args, output):
        return (output[0] + shift, *output[1:]) if isinstance(output, tuple) else output + shift

    handle = layer.register_forward_hook(nudge)
    try:
        alone = generate(smollm2, inputs)
        before = COUNTS["decode_steps_replayed"]
        with PrefixReplay(model, attached(decode=True), store):
            continued = generate(smollm2, inputs)
    finally:
        handle.remove()
    assert torch.equal(continued[0], alone[0]) and torch.equal(continued[1], alone[1])
    length = inputs["input_ids"].shape[1]
    shared = common_prefix(alone[0][:, length:], stock[0][:, length:])
    # decode step t reads generated tokens 0..t-1: it replays while those are the recorded ones
    assert COUNTS["decode_steps_replayed"] - before == min(shared, GENERATE["max_new_tokens"] - 1)
    assert not torch.equal(alone[1], stock[1])  # the change mattered
    if shift > 1:  # measured: the first token already differs, so no decode step replays
        assert shared == 0, "the large change should alter the first token"
    else:  # measured: the same 8 tokens, so all 7 decode steps replay
        assert shared == GENERATE["max_new_tokens"], "the small change should keep the tokens"


@torch.no_grad()
def test_a_cell_that_changes_a_layer_continues_from_the_replayed_prefix_as_from_its_own(smollm2):
    model, inputs = smollm2.model, batch(smollm2)
    layer = find_decoder(model).layers[STOCK_DEPTH]

    def nudge(module, args, output):  # the cell's own change, at the first layer it may change
        return (output[0] + 1e-2, *output[1:]) if isinstance(output, tuple) else output + 1e-2

    handle = layer.register_forward_hook(nudge)
    try:
        alone = model(**inputs).logits
        store = BoundedCache(2 ** 30)
        with PrefixReplay(model, attached(), store):
            model(**inputs)  # records layers 0..11 (stock for this cell)
        before = COUNTS["prefix_layers_replayed"]
        with PrefixReplay(model, attached(), store):
            continued = model(**inputs).logits
    finally:
        handle.remove()
    assert COUNTS["prefix_layers_replayed"] - before == STOCK_DEPTH
    assert torch.equal(continued, alone)
    assert not torch.equal(alone, model(**inputs).logits)  # the nudge mattered


class MeasuredStockBelow(StockBelow):
    """A stand-in whose answer depends only on ``prefix_signature`` (as OutRo's on its sink rule)."""

    def __init__(self, depth: int, signature: str, calls: list) -> None:
        super().__init__(depth)
        self.signature, self.calls = signature, calls

    @property
    def prefix_signature(self) -> str:
        return self.signature

    def unchanged_prefix(self, hidden, real) -> int:
        self.calls.append(self.prefix_signature)
        return super().unchanged_prefix(hidden, real)


@torch.no_grad()
def test_cells_alike_in_prefix_signature_measure_a_kept_prefix_once(smollm2):
    model, inputs = smollm2.model, batch(smollm2)
    store, calls = BoundedCache(2 ** 30), []
    with PrefixReplay(model, attached(), store):
        model(**inputs)  # records
    calls.clear()
    before = COUNTS["prefill_replays"]
    for signature in ("rule a", "rule a", "rule a", "rule b"):
        with PrefixReplay(model, Attached([("cell", MeasuredStockBelow(STOCK_DEPTH, signature, calls))]), store):
            model(**inputs)
    assert COUNTS["prefill_replays"] - before == 4  # every cell replayed ...
    assert calls == ["rule a", "rule b"]  # ... and each signature was measured once


def outro_generation(smollm2, inputs: dict, store: BoundedCache | None = None, **settings) -> dict:
    """``generate()`` under OutRo (massive_activation, ``settings``), replaying from ``store`` when
    given: its tokens, logits, per-row diagnostics, cosine sums and attention calls per layer."""
    from contextlib import ExitStack

    from outro_sweep.interventions.outro import OutRo
    from outro_sweep.interventions.sinks.massive_activation import MassiveActivation

    model = smollm2.model
    layers = find_decoder(model).layers
    with ExitStack() as stack:
        calls = stack.enter_context(attention_calls(model))
        outro = stack.enter_context(OutRo(model, MassiveActivation(), **settings))
        if store is not None:
            stack.enter_context(PrefixReplay(model, Attached([("outro", outro)]), store))
        sequences, logits = generate(smollm2, inputs)
        diagnostics, sums = outro.take_sample_diagnostics(), outro.running_sums()
    return {"sequences": sequences, "logits": logits, "diagnostics": diagnostics, "sums": sums,
            "attention_calls": [calls[index] for index in range(len(layers))]}


def assert_same_generation(a: dict, b: dict) -> None:
    assert torch.equal(a["sequences"], b["sequences"]) and torch.equal(a["logits"], b["logits"])
    assert a["diagnostics"] == b["diagnostics"] and a["sums"] == b["sums"]


@torch.no_grad()
def test_outro_cells_whose_relaxation_layers_hold_no_sink_compute_alike_and_the_second_runs_no_layer(smollm2):
    """OutRo relaxing at layer 1 or at layer 2 of SmolLM2, where no row has a sink: the same edits
    everywhere. The second cell replays every layer of its prefill and of each decode step from
    the first, and ends exactly as alone: tokens, logits, diagnostics and cosine sums."""
    inputs = batch(smollm2)
    alone = outro_generation(smollm2, inputs, alpha=0.3, layer=2)
    assert all(row["relax_layers_without_sinks"] == [2] for row in alone["diagnostics"])  # the premise
    assert alone["sums"], "OutRo rotated something"
    store = BoundedCache(2 ** 31)
    outro_generation(smollm2, inputs, store, alpha=0.3, layer=1)  # the first cell records
    before = COUNTS.copy()
    replayed = outro_generation(smollm2, inputs, store, alpha=0.3, layer=2)
    assert_same_generation(replayed, alone)
    layers, steps = len(find_decoder(smollm2.model).layers), GENERATE["max_new_tokens"] - 1
    assert replayed["attention_calls"] == [0] * layers  # no layer ran, in any forward
    assert COUNTS["prefix_layers_replayed"] - before["prefix_layers_replayed"] == layers
    assert COUNTS["decode_layers_replayed"] - before["decode_layers_replayed"] == steps * layers
    # the output head too: its input would be the kept final hidden state, so its kept output is given
    assert COUNTS["head_replays"] - before["head_replays"] == steps + 1
    assert COUNTS["prefill_records"] == before["prefill_records"]  # nothing new to keep


@torch.no_grad()
def test_an_outro_cell_with_another_alpha_replays_only_the_layers_below_the_first_sink(smollm2):
    inputs = batch(smollm2)
    alone = outro_generation(smollm2, inputs, alpha=3.0, layer=1)
    first_sink = min(row["first_sink_layer"] for row in alone["diagnostics"])
    store = BoundedCache(2 ** 31)
    outro_generation(smollm2, inputs, store, alpha=0.3, layer=1)  # the first cell records
    before = COUNTS.copy()
    continued = outro_generation(smollm2, inputs, store, alpha=3.0, layer=1)
    assert_same_generation(continued, alone)
    assert COUNTS["prefix_layers_replayed"] - before["prefix_layers_replayed"] == first_sink > 0
    assert continued["attention_calls"][first_sink - 1] < continued["attention_calls"][first_sink]
    assert COUNTS["prefill_records"] - before["prefill_records"] == 1  # its own layers are kept too
    assert COUNTS["head_replays"] == before["head_replays"]  # its last layers ran: so does the head


@torch.no_grad()
def test_a_later_cell_keeps_its_own_layers_only_in_free_memory(smollm2):
    """The first cell's kept prefill is what every later cell replays from: a later cell whose own
    layers do not fit beside it is not kept, and the first one stays."""
    from outro_sweep.interventions.outro import OutRo
    from outro_sweep.interventions.sinks.massive_activation import MassiveActivation

    model, inputs = smollm2.model, batch(smollm2)
    probe = BoundedCache(2 ** 31)
    with PrefixReplay(model, Attached([]), probe):
        model(**inputs)  # the stock cell
    store = BoundedCache(probe.used * 11 // 10)  # room for the stock cell's forward, not for a second one
    with PrefixReplay(model, Attached([]), store):
        model(**inputs)
    kept = store.keys()
    before = COUNTS.copy()
    with OutRo(model, MassiveActivation(), alpha=3.0, layer=1) as outro:
        with PrefixReplay(model, Attached([("outro", outro)]), store):
            model(**inputs)
    assert COUNTS["prefix_layers_replayed"] > before["prefix_layers_replayed"]  # it replayed the stock layers
    assert COUNTS["prefill_records"] == before["prefill_records"]  # its own were not kept ...
    assert store.keys() == kept  # ... and the stock cell's stayed


@torch.no_grad()
def test_other_inputs_or_a_cell_that_changes_layer_0_never_replay(smollm2):
    model = smollm2.model
    store = BoundedCache(2 ** 30)
    with PrefixReplay(model, attached(), store):
        model(**batch(smollm2))
    before = COUNTS["prefill_replays"]
    with PrefixReplay(model, attached(), store):
        model(**batch(smollm2, PROMPTS[:2]))  # a different batch: a new key
    with PrefixReplay(model, attached(0), store):
        model(**batch(smollm2))  # the same batch, but this cell may change layer 0
    with PrefixReplay(model, Attached([("no_declaration", Editor(model))]), store):
        model(**batch(smollm2))  # an editor that declares nothing (the defaults) may change anything
    assert COUNTS["prefill_replays"] == before


@torch.no_grad()
def test_a_kept_prefill_holds_each_layer_s_input_as_the_layer_received_it():
    """Qwen3-VL adds visual features to the residual stream between its first layers (deepstack):
    the stream a later cell describes its layers on is what each layer received, not the previous
    layer's output."""
    model, processor = tiny_vlms.build("qwen3_vl")
    inputs = tiny_vlms.video_batch("qwen3_vl", processor)
    layers = find_decoder(model).layers
    received = {}

    def keep(index):
        def hook(module, args, kwargs):
            received.setdefault(index, (args[0] if args else kwargs["hidden_states"]).clone())

        return hook

    handles = [layer.register_forward_pre_hook(keep(index), with_kwargs=True) for index, layer in enumerate(layers)]
    store = BoundedCache(2 ** 30)
    try:
        with PrefixReplay(model, Attached([]), store):
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    (kept,) = [store.get(key) for key in store.keys() if key[0] == "prefill"]
    residual = kept.residual_inputs()
    assert len(residual) == len(layers) + 1
    assert all(torch.equal(residual[index], received[index]) for index in range(len(layers)))
    outputs = [output[0] if isinstance(output, tuple) else output for output in kept.outputs]
    assert any(not torch.equal(received[index + 1], outputs[index]) for index in range(len(layers) - 1)), \
        "the premise: some layer's input differs from the previous layer's output"


@torch.no_grad()
def test_a_vision_tower_runs_once_per_input_and_its_kept_output_gives_the_same_logits():
    model, processor = tiny_vlms.build("qwen2_5_vl")
    inputs = tiny_vlms.video_batch("qwen2_5_vl", processor)
    stock = model(**inputs).logits
    store = BoundedCache(2 ** 30)
    before = COUNTS.copy()
    with TowerCache(model, store) as towers:
        assert list(towers.towers) == ["model.visual"]
        first = model(**inputs).logits
        second = model(**inputs).logits
    assert COUNTS["tower_runs"] - before["tower_runs"] == 1
    assert COUNTS["tower_reuses"] - before["tower_reuses"] == 1
    assert torch.equal(first, stock) and torch.equal(second, stock)
    assert "forward" not in model.model.visual.__dict__


@pytest.mark.parametrize("family", sorted(tiny_vlms.FAMILIES))
def test_every_video_family_s_towers_are_found(family):
    from outro_sweep.group.towers import find_towers

    model, _ = tiny_vlms.build(family)
    assert {id(m) for m in find_towers(model).values()} == {id(m) for m in tiny_vlms.encoders(model).values()}


@torch.no_grad()
def test_a_tower_with_a_hook_inside_is_computed_every_time():
    model, processor = tiny_vlms.build("qwen2_5_vl")
    inputs = tiny_vlms.video_batch("qwen2_5_vl", processor)
    seen = []
    handle = model.model.visual.blocks[-1].register_forward_hook(lambda *a: seen.append(1))
    try:
        with TowerCache(model, BoundedCache(2 ** 30)):
            model(**inputs)
            model(**inputs)
    finally:
        handle.remove()
    assert seen == [1, 1]


def test_the_bounded_store_drops_the_least_recently_used_first():
    store = BoundedCache(3 * 400)  # three float32 tensors of 100 values
    for key in "abc":
        assert store.put(key, torch.zeros(100))
    store.get("a")  # a is now the most recently used
    store.put("d", torch.zeros(100))
    assert store.get("b") is None and all(store.get(k) is not None for k in "acd")
    assert store.used == 1200
    assert not store.put("huge", torch.zeros(1000))  # larger than the whole budget: not kept
    assert store.get("huge") is None and store.used == 1200
    assert not store.put("e", torch.zeros(100), evict=False)  # full, and told not to evict
    assert store.get("e") is None and all(store.get(k) is not None for k in "acd")
    assert not store.put("a", torch.zeros(200), evict=False)  # a larger value under a kept key: the old stays
    assert store.get("a").shape == (100,) and store.used == 1200


@pytest.mark.parametrize("length", [1, 7])
def test_the_content_key_tells_tensors_apart_by_value_dtype_and_shape(length):
    from outro_sweep.group.fingerprint import tensor_digest

    a = torch.arange(length, dtype=torch.float32)
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a.double())
    assert tensor_digest(a) != tensor_digest(a + 1)
    assert tensor_digest(a.bfloat16()) == tensor_digest(a.bfloat16().clone())
    assert tensor_digest({"x": a}) != tensor_digest({"y": a})


def test_a_large_tensor_s_remembered_digest_follows_its_in_place_changes():
    from outro_sweep.group.fingerprint import tensor_digest

    pixels = torch.rand(3, 256, 1024)  # 3 MiB: its digest is remembered while it lives
    first = tensor_digest(pixels)
    assert tensor_digest(pixels) == first == tensor_digest(pixels.clone())
    pixels[0, 0, 0] += 1  # an in-place write bumps the version counter
    assert tensor_digest(pixels) != first
    assert tensor_digest(pixels) == tensor_digest(pixels.clone())
