"""OutRo never makes the device wait for the host while decoding, and only a stated constant
number of times per prefill; a prefill whose sinkless leading layers skip ``edit`` (as a replay
of a shared stock prefix does) gives the same diagnostics, sums, tokens and logits. The group
replay adds no host sync to a decode step either, recording or replaying: its step keys reach the
host with generate's own per-step check (``group.prefix.StepTokens``).

The host syncs are counted on the real SmolLM2 on the CPU: every Python-level way a tensor's
value reaches the host (``item``, ``tolist``, ``bool()``, ``int()``, ``float()``, ``nonzero``,
``cpu``) is wrapped during ``generate()``, and a call is OutRo's when a frame of
``outro_sweep/interventions`` is on its stack. ``numpy()`` is not one of them: on a GPU tensor
it raises rather than waits, and on a CPU tensor it moves nothing (the massive-activation rule
selects its median with numpy there). The CUDA-side check of the same
path (a sync the wrappers cannot see, such as boolean-mask indexing) is ``test_gpu.py``'s
``set_sync_debug_mode("error")`` test, and for the replay this file's ``gpu`` test.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from outro_sweep import group as group_package
from outro_sweep.interventions import outro as outro_module
from outro_sweep.interventions.outro import PREFILL_HOST_SYNCS, OutRo
from outro_sweep.interventions.sinks.attention_mass import AttentionMass
from outro_sweep.interventions.sinks.first_k import FirstK
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.interventions.sinks.sink_dims import SinkDims

INTERVENTIONS = str(Path(outro_module.__file__).parent)
GROUP = str(Path(group_package.__file__).parent)
SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu")
SYNC_FUNCTIONS = ("equal",)  # torch functions that answer on the host
NEW_TOKENS = 4  # one prefill and three decode forwards


def builtin_batch(loaded, size: int) -> dict:
    """A left-padded batch of the built-in questions, as a cell's collator builds it."""
    from outro_sweep.benchmarks.builtin_mc import BuiltinMC
    from outro_sweep.predict.data import Collator, Item

    questions = BuiltinMC(num_questions=size).load()
    inputs = Collator(loaded)([Item(i, q) for i, q in enumerate(questions)])["inputs"]
    assert (inputs["attention_mask"] == 0).any(), "the batch should need left padding"
    return dict(inputs)


def called_from(roots: tuple[str, ...]) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(roots):
            return True
        frame = frame.f_back
    return False


class SyncCounter:
    """Counts the host syncs made from code under ``roots`` (the interventions by default), per
    decoder forward (0 = prefill). Setting ``forward`` by hand attributes later syncs to it."""

    def __init__(self, decoder: torch.nn.Module, roots: tuple[str, ...] = (INTERVENTIONS,)) -> None:
        self.decoder = decoder
        self.roots = roots
        self.forward = -1
        self.counts: Counter = Counter()  # forward index -> syncs
        self.where: Counter = Counter()  # (forward index, method) -> syncs

    def _count(self, name: str, original):
        def wrapper(*args, **kwargs):
            if self.forward >= 0 and called_from(self.roots):
                self.counts[self.forward] += 1
                self.where[(self.forward, name)] += 1
            return original(*args, **kwargs)

        return wrapper

    def __enter__(self) -> "SyncCounter":
        def next_forward(module, args):
            self.forward += 1

        # first among the decoder's pre-hooks: what the others do at a forward's start is counted as its own
        self.handle = self.decoder.register_forward_pre_hook(next_forward, prepend=True)
        self.saved = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, self._count(name, original))
        self.saved_functions = {name: getattr(torch, name) for name in SYNC_FUNCTIONS}
        for name, original in self.saved_functions.items():
            setattr(torch, name, self._count(f"torch.{name}", original))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)
        for name, original in self.saved_functions.items():
            setattr(torch, name, original)
        self.handle.remove()


def greedy(model, inputs: dict, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                          temperature=None, top_p=None, top_k=None, pad_token_id=0, **kwargs)


RULES = {
    "massive_activation": MassiveActivation,
    "first_k": lambda: FirstK(2),
    "sink_dims": lambda: SinkDims(dims=[0, 1, 2], tau=3.0),
    "attention_mass": lambda: AttentionMass(eps=0.3),
}


@pytest.mark.parametrize("rotate_decode", [True, "official"], ids=["rotate_decode", "official_decode"])
@pytest.mark.parametrize("rule", list(RULES))
@torch.no_grad()
def test_decode_makes_no_host_sync_and_prefill_a_constant(smollm2, rule, rotate_decode):
    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    outro = OutRo(model, RULES[rule](), alpha=3.0, layer="auto", rotate_decode=rotate_decode)
    with outro, SyncCounter(outro.parts.decoder) as counter:
        greedy(model, inputs)
    assert counter.forward == NEW_TOKENS - 1, "one prefill and the decode forwards were counted"
    decode = {forward: n for forward, n in counter.counts.items() if forward > 0}
    assert decode == {}, f"host syncs in OutRo's decode path: {dict(counter.where)}"
    # The prefill's one sync reads which layers rotate decode steps (none when no row could).
    assert counter.counts[0] <= PREFILL_HOST_SYNCS, dict(counter.where)
    if rotate_decode is True and rule != "attention_mass":
        assert counter.counts[0] == PREFILL_HOST_SYNCS  # sinks were found, so the read happened
    # OutRo really rotated decode steps where it should: this case is not vacuous.
    if rotate_decode is True and rule in ("massive_activation", "first_k"):
        assert outro.decode_rows, "no decode rotation: the decode path was not exercised"


@torch.no_grad()
def test_the_counter_sees_a_sync_in_the_decode_path(smollm2, monkeypatch):
    """The detector itself: a decode edit that asks ``if tensor.any()`` is counted."""
    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    original = OutRo._edit_decode

    def asks_the_host(self, layer, out):
        if out.any():  # the kind of check the decode path must not make
            pass
        return original(self, layer, out)

    monkeypatch.setattr(OutRo, "_edit_decode", asks_the_host)
    outro = OutRo(model, MassiveActivation(), alpha=3.0)
    with outro, SyncCounter(outro.parts.decoder) as counter:
        greedy(model, inputs)
    # one per layer per decode forward
    assert counter.where[(1, "__bool__")] == outro.num_layers
    assert sum(n for forward, n in counter.counts.items() if forward > 0) == (NEW_TOKENS - 1) * outro.num_layers


@torch.no_grad()
def test_diagnostics_come_to_the_host_once_per_batch(smollm2):
    """Reading a batch's diagnostics copies to the host once per reading method, not per layer
    or per row (the per-row work then runs on host tensors)."""
    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    outro = OutRo(model, MassiveActivation(), alpha=3.0, layer="auto")
    copies = Counter()  # (method, shape) -> calls
    saved = {name: getattr(torch.Tensor, name) for name in ("cpu", "tolist")}

    def counting(name):
        def wrapper(tensor, *args, **kwargs):
            copies[(name, tuple(tensor.shape))] += 1
            return saved[name](tensor, *args, **kwargs)

        return wrapper

    with outro:
        model(**inputs)
        for name in saved:
            setattr(torch.Tensor, name, counting(name))
        try:
            samples = outro.take_sample_diagnostics()
            sums = outro.running_sums()
        finally:
            for name, original in saved.items():
                setattr(torch.Tensor, name, original)
    assert len(samples) == 3 and all(s["first_sink_layer"] is not None for s in samples)
    assert sums, "the batch rotated tokens"
    # one (1 + sink layers + relaxation layers, B, S) copy; one (layers, 3) read of the sums
    planes = 1 + outro.num_layers + len(outro.relax_layers)
    batch, seq = inputs["input_ids"].shape
    assert copies[("cpu", (planes, batch, seq))] == 1
    assert copies[("tolist", (len(outro._cos), 3))] == 1
    assert sum(n for (name, _), n in copies.items() if name == "cpu") == 1


# ---- a prefill whose sinkless leading layers skip the edit ---------------------------------------


def generate_recording(model, outro: OutRo, inputs: dict, skip_below: int):
    """Greedy generate under ``outro`` with ``edit`` not called at prefill layers < skip_below
    (the layers still run, stock, with OutRo's hooks, as a replayed stock prefix leaves them).
    Returns (tokens, per-step last-position logits, diagnostics, running sums, decode layers)."""
    seen: list[torch.Tensor] = []
    handle = model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out[:, -1].clone()))
    real_edit = outro.edit

    def edit(module, out, *args):
        if outro.prefill and module.layer_idx < skip_below:
            return out
        return real_edit(module, out, *args)

    outro.edit = edit  # the attention function looks the editor's ``edit`` up on the instance
    try:
        with outro:
            tokens = greedy(model, inputs)
            diagnostics = outro.take_sample_diagnostics()
    finally:
        del outro.edit
        handle.remove()
    return tokens, seen, diagnostics, outro.running_sums(), sorted(outro.decode_rows)


@pytest.mark.parametrize(
    "layer, rotate_decode", [("auto", True), ([4, 12, 13], "official"), (None, True)],
    ids=["auto", "layers4_12_13_official", "no_relaxation"],
)
@torch.no_grad()
def test_skipping_edit_below_the_unchanged_prefix_changes_nothing(smollm2, layer, rotate_decode):
    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    settings = dict(alpha=3.0, layer=layer, rotate_decode=rotate_decode)

    stock = model(**inputs, output_hidden_states=True)
    hidden = stock.hidden_states[:-1]  # hidden[l] enters layer l (the last entry is after the norm)
    outro = OutRo(model, MassiveActivation(), **settings)
    prefix = outro.unchanged_prefix(hidden, inputs["attention_mask"].bool())

    full = generate_recording(model, OutRo(model, MassiveActivation(), **settings), inputs, skip_below=0)
    skipped = generate_recording(model, OutRo(model, MassiveActivation(), **settings), inputs, skip_below=prefix)

    tokens, logits, diagnostics, sums, decode_layers = full
    # The prefix is the first layer where some row has a sink: 3 here (the third question's
    # token 29; the other rows' first sink layer is 12, SmolLM2's usual one).
    assert prefix == min(d["first_sink_layer"] for d in diagnostics) == 3
    if layer == "auto":  # relaxation layers below the prefix are listed, with nothing relaxed
        assert diagnostics[0]["relaxed"]["0"] == [] and diagnostics[0]["relaxed"]["12"] == [0]
    assert torch.equal(skipped[0], tokens)
    for step, (a, b) in enumerate(zip(skipped[1], logits)):
        assert torch.equal(a, b), f"step {step}: max diff {(a - b).abs().max().item():.3e}"
    assert skipped[2] == diagnostics
    assert skipped[3] == sums and sums
    assert skipped[4] == decode_layers
    # The case is not vacuous: OutRo changed the logits of the stock model.
    assert (logits[0] - stock.logits[:, -1]).abs().max().item() > 0.1


@torch.no_grad()
def test_unchanged_prefix_caps_and_attention_rules(smollm2):
    model = smollm2.model
    inputs = builtin_batch(smollm2, 3)
    hidden = model(**inputs, output_hidden_states=True).hidden_states[:-1]
    real = inputs["attention_mask"].bool()
    assert OutRo(model, MassiveActivation()).unchanged_prefix(hidden[:2], real) == 2  # no sink below 3
    assert OutRo(model, MassiveActivation()).unchanged_prefix(hidden, real) == 3
    # the first two rows alone have their first sinks at layer 12
    assert OutRo(model, MassiveActivation()).unchanged_prefix([h[:2] for h in hidden], real[:2]) == 12
    assert OutRo(model, FirstK(1)).unchanged_prefix(hidden, real) == 0
    # attention probabilities exist only once a layer runs: nothing can be skipped
    assert OutRo(model, AttentionMass()).unchanged_prefix(hidden, real) == 0


def test_prefix_signature_is_the_sink_rule_not_alpha_or_the_relaxation_layers(smollm2):
    model = smollm2.model
    signature = OutRo(model, MassiveActivation(), alpha=0.1, layer=1).prefix_signature
    assert OutRo(model, MassiveActivation(), alpha=3.0, layer=[2, 4]).prefix_signature == signature
    assert OutRo(model, MassiveActivation(median_ratio=100.0)).prefix_signature != signature
    assert OutRo(model, FirstK(1)).prefix_signature != signature
    hash(signature)  # a key of the kept prefix's answers


# ---- the group replay's decode steps -------------------------------------------------------------


def replayed_generation(smollm2, store, inputs: dict, announce: bool = True, **settings):
    """Greedy generate under OutRo (massive_activation, ``settings``) and a group replay over
    ``store``, host syncs counted from the interventions' and the group's code. ``announce``: give
    generate the replay's ``StepTokens`` as a cell's predictor does. Returns (tokens, counter)."""
    from outro_sweep.group.prefix import PrefixReplay, check_steps, step_criteria
    from outro_sweep.interventions.stack import Attached

    model = smollm2.model
    outro = OutRo(model, MassiveActivation(), **settings)
    with outro, PrefixReplay(model, Attached([("outro", outro)]), store):
        criteria = {"stopping_criteria": step_criteria(model)} if announce else {}
        with SyncCounter(outro.parts.decoder, roots=(INTERVENTIONS, GROUP)) as counter:
            tokens = greedy(model, inputs, **criteria)
            counter.forward = AFTER  # the batch's one read of the step keys' check
            check_steps(model)
    return tokens, counter


AFTER = 1000  # SyncCounter's index for what runs after the generation


@pytest.mark.parametrize("second", [dict(alpha=0.3, layer=2), dict(alpha=3.0, layer=1)],
                         ids=["replays_every_layer", "replays_below_the_first_sink"])
@torch.no_grad()
def test_the_group_replay_adds_no_host_sync_to_a_decode_step(smollm2, second):
    """One cell records its prefill and decode steps, the next replays them (every layer, or those
    below the first sink): no decode forward of either makes a host sync from the replay's code or
    OutRo's, and the step keys' check is read once after the generation."""
    from outro_sweep.group.counters import COUNTS
    from outro_sweep.group.memory import BoundedCache

    inputs = builtin_batch(smollm2, 3)
    store = BoundedCache(2 ** 31)
    before = COUNTS.copy()
    tokens, recording = replayed_generation(smollm2, store, inputs, alpha=0.3, layer=1)
    assert COUNTS["decode_records"] - before["decode_records"] == NEW_TOKENS - 1
    before = COUNTS.copy()
    again, replaying = replayed_generation(smollm2, store, inputs, **second)
    replayed = COUNTS["decode_steps_replayed"] - before["decode_steps_replayed"]
    assert replayed == NEW_TOKENS - 1 if second["alpha"] == 0.3 else replayed > 0, "no decode step was replayed"
    for counter in (recording, replaying):
        decode = {forward: n for forward, n in counter.counts.items() if 0 < forward < AFTER}
        assert decode == {}, f"host syncs in a decode step: {dict(counter.where)}"
        assert counter.counts[AFTER] <= 1, dict(counter.where)
    assert torch.equal(again, greedy_alone(smollm2, inputs, **second))  # the replay changed nothing


def greedy_alone(smollm2, inputs: dict, **settings) -> torch.Tensor:
    with OutRo(smollm2.model, MassiveActivation(), **settings):
        return greedy(smollm2.model, inputs)


@torch.no_grad()
def test_the_counter_sees_the_replay_s_sync_where_no_step_is_announced(smollm2):
    """Without ``StepTokens`` a decode step is keyed on its input tensors, copied to the host: the
    counter sees those copies in every decode forward (so the test above is not vacuous)."""
    from outro_sweep.group.memory import BoundedCache

    inputs = builtin_batch(smollm2, 3)
    store = BoundedCache(2 ** 31)
    replayed_generation(smollm2, store, inputs, announce=False, alpha=0.3, layer=1)
    _, counter = replayed_generation(smollm2, store, inputs, announce=False, alpha=0.3, layer=2)
    assert all(counter.where[(forward, "cpu")] > 0 for forward in range(1, NEW_TOKENS)), dict(counter.where)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_the_group_replay_s_decode_steps_make_no_cuda_sync(smollm2, monkeypatch):
    """On a GPU, with ``torch.cuda.set_sync_debug_mode("error")`` around the replay's own work in
    every decode forward (reading the step key, swapping and running the replayed layers): the
    recording cell and the replaying one decode with no sync, and replay steps."""
    import copy

    from outro_sweep.group import prefix
    from outro_sweep.group.counters import COUNTS
    from outro_sweep.group.memory import BoundedCache
    from outro_sweep.interventions.stack import Attached

    model = copy.deepcopy(smollm2.model).to("cuda").eval()
    inputs = {key: value.to("cuda") for key, value in builtin_batch(smollm2, 3).items()}
    watched = []

    def strict(method):
        def run(self, *args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)
                watched.append(method.__name__)

        return run

    monkeypatch.setattr(prefix.PrefixReplay, "_on_decode_step", strict(prefix.PrefixReplay._on_decode_step))
    original_swap = prefix.PrefixReplay._swap_forward

    def strict_swap(self, index, kept):
        """The replayed layer's forward (the kept writes and output) under the debug mode in decode."""
        original_swap(self, index, kept)
        layer = self.parts.layers[index]
        replay = layer.forward

        def checked(*args, **kwargs):
            if self.steps == 0:  # the prefill may sync
                return replay(*args, **kwargs)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return replay(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)

        layer.forward = checked

    monkeypatch.setattr(prefix.PrefixReplay, "_swap_forward", strict_swap)
    store = BoundedCache(2 ** 31)
    before = COUNTS.copy()
    for settings in (dict(alpha=0.3, layer=1), dict(alpha=0.3, layer=2)):
        with OutRo(model, MassiveActivation(), **settings) as outro:
            with prefix.PrefixReplay(model, Attached([("outro", outro)]), store):
                greedy(model, inputs, stopping_criteria=prefix.step_criteria(model))
                torch.cuda.synchronize()
    assert COUNTS["decode_steps_replayed"] - before["decode_steps_replayed"] == NEW_TOKENS - 1
    assert watched.count("_on_decode_step") == 2 * (NEW_TOKENS - 1)
