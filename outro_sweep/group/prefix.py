"""The decoder's layers, run once per batch for all the cells of a group that compute them alike.

Cells of one group read the same batches through the same model; below the first layer where two
of them differ, they compute the same thing. While a cell predicts, ``PrefixReplay`` watches each
prefill (a forward whose KV cache starts empty):

- the attached editors describe what they do at each layer (``replayable.ReplayedStack``, the
  replay's protocol: nothing below the first sink for OutRo; its whole configuration and whether
  it relaxes where some row has a sink; only a stock prefix for an editor that declares
  ``unchanged_prefix`` alone), measured on the residual stream of each prefill kept for the same
  input tensors (bit for bit, with the same model and attention kernel);
- replay: the leading layers on which the kept prefill's recording cell and this cell agree are
  not run: each returns its kept output, writes its kept keys and values into the new cache, and
  hands its editors what the recording cell's editors left there (``layer_state``, e.g. OutRo's
  sink value mean and cosine sums). Their forward hooks and pre-hooks still fire with the same
  tensors, so sink detection, gates and probes see what they would have seen. A hook on a module
  inside a layer would not fire: the replay stops at the first layer that has one (``hook_free_depth``);
- record: where no kept prefill holds the layers this cell can describe, they are kept under
  (inputs, this cell's signatures), replayed layers included.

So a cell replays the baseline's stock layers up to its first edited layer, and a cell that
computes a batch exactly as an earlier one (OutRo relaxing only at layers without sinks, say)
replays all of it.

Decode steps continue the same way while a cell's tokens are still the recording cell's: each
step of a recorded generation is kept under a key chained from its prefill's (the step's new
tokens after every earlier step's), and a replaying cell whose step has a kept key replays the
leading layers its interventions compute alike in decode too (``unchanged_decode_prefix``: no
deeper than in the prefill, since the KV cache differs from there). The first step whose tokens
differ ends the replay for that generation; a cell that kept its own prefill records its own
steps as it goes. A step's key is its new tokens on the host, and getting them there costs no
host sync: ``generate()`` gets ``StepTokens`` among its stopping criteria (``step_criteria``),
which starts their copy right after it chooses them, and the device finishes it before generate's
own check of whether every row is done; cloze scoring builds its option tokens on the host and
says so (``announce_step``). The rest of a step's input (padding mask, positions) follows from
the forward it continues and from those tokens; that they are the step's own is checked on the
device and read once per batch (``check_steps``). A decode forward nobody announced is keyed on
all its input tensors, copied to the host.

``group.verify=N`` checks the replay: in the first N batches of a cell that would replay layers,
nothing is replayed; every layer it would replay is run and compared with what the replay would
have given (``torch.equal``): its output, its KV-cache writes, the output head after a forward
replayed whole and, in a prefill, the state each editor that acts at the layer hands over. The
first difference fails the cell (``ReplayMismatch``, naming the cell and the layer).

Replay is the cell-after-cell form of sharing. The other form, the K cells as K batch slices of
one forward, would need every intervention to act on its own rows of a shared batch;
``python -m outro_sweep.perf.sweep`` measures what it would save (stacking K cells' stock
``generate()`` into one call against K calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.fingerprint import tensor_digest
from outro_sweep.group.memory import BoundedCache
from outro_sweep.group.replayable import ReplayedStack
from outro_sweep.interventions.base import CACHE_KWARGS, DecoderCall, decoder_call
from outro_sweep.interventions.decoder import find_decoder

# id(model) -> the PrefixReplay watching it (one at a time), for the callers that key its decode
# steps (``step_criteria``, ``announce_step``) and for the check that a kept model is stock
ACTIVE: dict[int, "PrefixReplay"] = {}


class ReplayMismatch(RuntimeError):
    """``group.verify``: a layer computed differently from what the replay would have given it."""


@dataclass
class _Prefix:
    """One forward's leading layers 0..len(outputs)-1, as one cell computed them."""

    # per layer: (B, S, D) the residual stream entering it, as the layer received it (most decoders
    # pass a layer's output on as is; Qwen3-VL adds visual features to the first few)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # per layer: exactly what its forward returned
    writes: list = field(default_factory=list)  # per layer: [(key, value, cache_kwargs)] it wrote to the KV cache
    states: list = field(default_factory=list)  # per layer: ``ReplayedStack.layer_state``, what its edits left
    signatures: tuple = ()  # per layer: ``ReplayedStack.layer_signatures`` of the recording cell (prefills)
    # (input shape, output) of the output head right after this forward, for a replay of every layer
    head: tuple | None = None
    # what the interventions of the replaying cells measured on this prefix (``ReplayedStack.layer_signatures``)
    depths: dict = field(default_factory=dict)

    def residual_inputs(self) -> list[torch.Tensor]:
        """The residual stream entering layers 0..len(outputs), the last one as the last kept
        layer returned it."""
        return [*self.inputs[: len(self.outputs)], *(_hidden(output) for output in self.outputs[-1:])]


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _cache_of(kwargs: dict):
    return next((kwargs[name] for name in CACHE_KWARGS if kwargs.get(name) is not None), None)


def is_output_capture(hook) -> bool:
    """transformers' own output-capturing hook: installed for good on a model's layers and their
    attention the first time a forward asks for hidden states or attentions, and inert in every
    forward that asks for none."""
    return getattr(hook, "__module__", None) == "transformers.utils.output_capturing"


def hooked(module: torch.nn.Module, capturing: bool) -> bool:
    """Whether ``module`` has a forward hook or pre-hook that does something in this forward
    (``capturing``: the forward asks transformers for hidden states or attentions)."""
    hooks = module._forward_hooks
    return bool(module._forward_pre_hooks) or (
        bool(hooks) and (capturing or not all(is_output_capture(hook) for hook in hooks.values())))


def hook_free_depth(inner: list[list[torch.nn.Module]], capturing: bool = False) -> int:
    """How many leading layers have no forward hook or pre-hook on any module inside them
    (``inner[l]``: layer l's submodules, itself excluded: a hook on the layer itself still fires
    around a replayed layer, one inside it would not); 0 while a global forward hook is registered."""
    from torch.nn.modules import module as torch_module  # torch's registry of global hooks, read here only

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return 0
    for index, modules in enumerate(inner):
        if any(hooked(m, capturing) for m in modules):
            return index
    return len(inner)


def captures_outputs(call: DecoderCall, config) -> bool:
    """Whether this decoder forward asks transformers for hidden states or attentions (an
    ``output_*`` argument, or the config's default)."""
    flags = [value for key, value in call.kwargs.items() if key.startswith("output_")]
    defaults = [getattr(config, name, False) for name in ("output_attentions", "output_hidden_states")]
    return any(bool(flag) for flag in (*flags, *defaults))


def same(a, b) -> bool:
    """Equal bit for bit: tensors by dtype, shape and ``torch.equal``; containers element-wise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _shape_of(value) -> tuple:
    """What a step key keeps of an input that its tokens and chain already determine."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape))
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("value", value)
    return ("object", type(value).__qualname__)


class StepTokens(StoppingCriteria):
    """A stopping criterion that never stops: ``generate()`` calls it right after it chooses each
    row's next token (input_ids (B, S + t)), and it announces those tokens as the next decode
    step's to the replay watching the model (``PrefixReplay.announce``)."""

    def __init__(self, replay: "PrefixReplay") -> None:
        self.replay = replay

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.replay.announce(input_ids[:, -1:])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (B,)


def step_criteria(model: torch.nn.Module) -> list[StoppingCriteria]:
    """``[StepTokens]`` while a replay watches ``model`` (else []): put them first in generate()'s
    ``stopping_criteria``, so that its decode steps are keyed with no host sync."""
    replay = ACTIVE.get(id(model))
    return [replay.step_tokens] if replay is not None else []


def announce_step(model: torch.nn.Module, tokens: torch.Tensor, *more: torch.Tensor) -> None:
    """The next decode forward of ``model`` feeds ``tokens`` (B, T) as its input_ids; ``more``:
    host tensors that, with them and the forward it continues, determine the rest of its input
    (cloze: the option tokens' (B, T) padding mask). A no-op unless a replay watches ``model``."""
    replay = ACTIVE.get(id(model))
    if replay is not None:
        replay.announce(tokens, *more)


def check_steps(model: torch.nn.Module) -> None:
    """Read, once per batch, whether every announced decode step fed the tokens announced for it
    (a RuntimeError otherwise: the replay keyed a step on other tokens). A no-op unless a replay
    watches ``model``."""
    replay = ACTIVE.get(id(model))
    if replay is not None:
        replay.check_steps()


def _agreeing(mine: list, theirs: tuple) -> int:
    """How many leading layers two cells' ``layer_signatures`` agree on."""
    return next((layer for layer, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))


@dataclass
class _Replay:
    """The kept prefill a forward continues from: ``depth`` of its layers are not run."""

    key: tuple  # the kept prefill's key in the store
    kept: _Prefix
    depth: int
    mine: list  # the replaying cell's ``layer_signatures`` on the kept residual stream


class PrefixReplay:
    """Context manager: records and replays layer prefixes of ``model``'s prefills and decode
    steps in ``store`` for the editors ``attached`` (``InterventionStack.attach``'s value, or
    anything with its ``editors``) of one cell. ``verify``: how many of the cell's batches
    that would replay are run and compared instead (``group.verify``); ``cell``: the cell's name
    in a mismatch's message."""

    def __init__(self, model: torch.nn.Module, attached, store: BoundedCache, verify: int = 0,
                 cell: str = "this cell") -> None:
        self.model = model
        self.parts = find_decoder(model)
        self.attached = ReplayedStack(attached.editors)  # the replay's questions, to every editor at once
        self.store = store
        self.verify_left = int(verify)
        self.cell = cell
        self.handles: list = []
        # per layer: the modules inside it (whose hooks a replay of the layer would skip)
        self.inner = [[m for m in layer.modules() if m is not layer] for layer in self.parts.layers]
        # The generation in progress: {"record": (key of its last forward, layers its decode steps
        # keep) or None, "replay": (key of the kept forward it follows, layers its decode steps
        # replay) or None}, or None when its decode steps run every layer unwatched.
        self.chain: dict | None = None
        # The output head (``get_output_embeddings``): after a forward that replayed every layer, its
        # output is the kept one too (no intervention edits the final norm or the head).
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.head = head if isinstance(head, torch.nn.Module) else None
        self.head_record: tuple | None = None  # (store key, kept forward) whose head output to keep
        self.head_check: _Prefix | None = None  # the kept forward whose head output the next head call must equal
        self.evicting = True  # whether this generation's records may evict kept entries
        self.verifying = False  # this batch (a prefill and its decode forwards) is run and compared, not replayed
        self.batches = 0  # prefills seen (the batch a mismatch names)
        self.steps = 0  # decode forwards since the last prefill
        self.step_tokens = StepTokens(self)
        # the next decode forward's announced input: (tokens as given, host copies, CUDA event or None)
        self.announced: tuple | None = None
        self.step_mismatch: torch.Tensor | None = None  # () bool on the device: an announced step fed other tokens
        self._reset()

    def _reset(self) -> None:
        """Forget the forward in progress (the generation's ``chain`` outlives it)."""
        self.mode = None  # None (not watching this forward) | "record" | "replay"
        self.key = None
        self.real = None  # (B, S) bool real tokens of this prefill
        self.capturing = False  # this forward asks transformers for hidden states or attentions
        self.recording: _Prefix | None = None
        self.record_depth: int | None = None  # a decode step records this many layers; None: a prefill
        self.replay: _Replay | None = None  # what this prefill continues from
        self.source: _Prefix | None = None  # the kept forward whose layers this one replays
        self.replayed: list[int] = []  # layers whose forward is swapped for this forward
        # verify: (kept forward, layers this one must equal it at, this cell's layer_signatures or None)
        self.expected: tuple[_Prefix, int, list | None] | None = None
        self.wrapped_cache = None

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "PrefixReplay":
        if ACTIVE.get(id(self.model)) is not None:
            raise RuntimeError("a second PrefixReplay on a model that one already watches")
        ACTIVE[id(self.model)] = self
        decoder = self.parts.decoder
        self.handles.append(decoder.register_forward_pre_hook(self._on_decoder_input, with_kwargs=True))
        self.handles.append(decoder.register_forward_hook(self._on_decoder_output, always_call=True))
        for index, layer in enumerate(self.parts.layers):
            self.handles.append(layer.register_forward_pre_hook(self._layer_input(index), with_kwargs=True))
            self.handles.append(layer.register_forward_hook(self._layer_output(index)))
        if self.head is not None:
            self.handles.append(self.head.register_forward_hook(self._on_head_output))
        return self

    def __exit__(self, *exc) -> None:
        self._finish_forward(store=False)
        self._forget_head()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if ACTIVE.get(id(self.model)) is self:
            del ACTIVE[id(self.model)]
        if exc[0] is None:
            self.check_steps()

    # ---- decode step keys --------------------------------------------------------------
    def announce(self, tokens: torch.Tensor, *more: torch.Tensor) -> None:
        """The next decode forward feeds ``tokens`` (B, T) as its input_ids; ``more``: host
        tensors that determine the rest of its input with them. Device tensors are copied to the
        host without waiting (pinned memory, ordered on the current stream)."""
        hosts, event = [], None
        for tensor in (tokens, *more):
            if tensor.device.type == "cpu":
                hosts.append(tensor.detach().clone())
            else:
                host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                host.copy_(tensor.detach(), non_blocking=True)
                hosts.append(host)
        if tokens.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        self.announced = (tokens, hosts, event)

    def _step_key(self, call: DecoderCall) -> tuple | str:
        """A decode forward's key within its chain: its announced tokens (no host sync: the copy
        finished with generate's own per-step check), with the shapes of its other inputs; else
        the digest of every input tensor (one host copy of each)."""
        announced, self.announced = self.announced, None
        if announced is not None and call.tokens is not None:
            tokens, hosts, event = announced
            if tuple(hosts[0].shape) == (call.batch, call.length):
                if event is not None and not event.query():
                    event.synchronize()  # generate did not synchronise after choosing them: wait here
                fed = call.kwargs.get("input_ids")
                if isinstance(fed, torch.Tensor) and fed.device == tokens.device and fed.shape == tokens.shape:
                    differs = (fed != tokens).any()  # () bool on the device, read once per batch
                    self.step_mismatch = differs if self.step_mismatch is None else self.step_mismatch | differs
                others = [(name, _shape_of(value)) for name, value in sorted(call.inputs().items())
                          if name != "input_ids"]
                return ("tokens", tuple((str(h.dtype), tuple(h.shape), h.numpy().tobytes()) for h in hosts),
                        tuple(_shape_of(arg) for arg in call.args), tuple(others))
        return tensor_digest([list(call.args), call.inputs()])

    def check_steps(self) -> None:
        """Raise if an announced decode step fed other tokens than announced (one read)."""
        mismatch, self.step_mismatch = self.step_mismatch, None
        if mismatch is not None and bool(mismatch):
            raise RuntimeError("the group replay keyed a decode step on tokens other than the ones it fed: its "
                               "replayed layers may be wrong; rerun with group.prefix=false")

    # ---- per prefill -------------------------------------------------------------------
    def _on_decoder_input(self, module, args, kwargs):
        self._finish_forward(store=False)  # a forward that raised left its state behind
        self._forget_head()
        call = decoder_call(args, kwargs)
        if not call.prefill:
            self._on_decode_step(call)
            return None
        self.announced = None
        self.chain = None
        self.verifying = False
        self.steps = 0
        if call.tokens is None:
            return None
        self.batches += 1
        if self.step_mismatch is not None:
            self.check_steps()
        kernel = str(self.parts.config._attn_implementation).removeprefix("outro_")  # edits wrap the stock kernel
        self.key = (id(self.model), kernel, type(call.cache).__name__,
                    tensor_digest([list(call.args), call.inputs()]))
        self.real = call.real()
        self.capturing = captures_outputs(call, self.parts.config)
        self.mode = "record"  # kept at the end if this cell computed layers no kept prefill holds
        # The first cell to run these inputs may evict the least recently used entries to keep them;
        # a later one keeps its own layers only in free memory, never at the cost of kept ones.
        self.evicting = not self._kept_prefills()
        self.replay = self._best_kept_prefill()
        if self.replay is not None:
            if self.verify_left > 0:
                self.verify_left -= 1
                self.verifying = True
                self.expected = (self.replay.kept, self.replay.depth, self.replay.mine)
                COUNTS["verified_prefills"] += 1
                COUNTS["verified_layers"] += self.replay.depth
            else:
                self.source = self.replay.kept
                for index in range(self.replay.depth):
                    self._swap_forward(index, self.replay.kept)
                COUNTS["prefill_replays"] += 1
                COUNTS["prefix_layers_replayed"] += self.replay.depth
        return None

    def _kept_prefills(self) -> list[tuple]:
        """Keys of the kept prefills of this forward's inputs, one per recording cell that
        computed them differently."""
        return [key for key in self.store.keys() if key[0] == "prefill" and key[1] == self.key]

    def _best_kept_prefill(self) -> _Replay | None:
        """The kept prefill of these inputs whose recording cell agrees with this one on the most
        leading layers (``layer_signatures``, measured on that prefill's own stream: equal up to
        the first layer where the two cells differ), never past a layer with a live hook inside it,
        or None where none agrees on layer 0."""
        best = None
        kept_keys = self._kept_prefills()
        free = hook_free_depth(self.inner, self.capturing) if kept_keys else 0
        for key in kept_keys:
            kept: _Prefix = self.store.get(key)
            mine = self.attached.layer_signatures(kept.residual_inputs(), self.real, kept.depths)
            depth = min(_agreeing(mine, kept.signatures), free)
            if depth > 0 and (best is None or depth > best.depth):
                best = _Replay(key, kept, depth, mine)
        return best

    def _on_decode_step(self, call: DecoderCall) -> None:
        """A decode step of a watched generation: replay the leading layers its kept step holds
        while the token history is that step's, and record it where this cell kept its prefill."""
        self.steps += 1
        if self.chain is None:
            self.announced = None
            return
        digest = self._step_key(call)
        record, replay = self.chain.get("record"), self.chain.get("replay")
        if replay is not None:
            key = (replay[0], digest)
            kept: _Prefix | None = self.store.get(key)
            chained = min(replay[1], len(kept.outputs)) if kept is not None else 0
            if chained == 0:  # this cell's tokens left the kept ones: no later step of it is kept either
                replay = None
            else:
                depth = min(chained, hook_free_depth(self.inner, captures_outputs(call, self.parts.config)))
                if depth > 0 and self.verifying:
                    self.expected = (kept, depth, None)
                    COUNTS["verified_decode_steps"] += 1
                elif depth > 0:
                    for index in range(depth):
                        self._swap_forward(index, kept)
                    self.source = kept
                    COUNTS["decode_steps_replayed"] += 1
                    COUNTS["decode_layers_replayed"] += depth
                replay = (key, chained)
        if record is not None:
            record = ((record[0], digest), record[1])
            self.mode, self.key, self.record_depth = "record", record[0], record[1]
        elif replay is not None:
            self.mode = "replay"
        self._set_chain(record, replay)

    def _set_chain(self, record: tuple | None, replay: tuple | None) -> None:
        """The generation's next decode step: records under ``record`` = (key of this step, layers)
        and replays from ``replay`` = (key of the kept step, layers); None where neither."""
        self.chain = {"record": record, "replay": replay} if record is not None or replay is not None else None

    def _swap_forward(self, index: int, kept: _Prefix) -> None:
        layer = self.parts.layers[index]

        def replay(*args, **kwargs):
            cache = _cache_of(kwargs)
            if cache is not None:
                for key, value, cache_kwargs in kept.writes[index]:
                    cache.update(key, value, index, cache_kwargs)
            if kept.states:
                self.attached.restore_layer_state(index, kept.states[index])
            return kept.outputs[index]

        layer.forward = replay  # an instance attribute: module __call__ still runs the hooks around it
        self.replayed.append(index)

    def _layer_input(self, index: int):
        def hook(module, args, kwargs):
            if self.mode != "record" and self.expected is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            if index == 0:
                self.recording = _Prefix([hidden])
                self._watch_cache(_cache_of(kwargs))
            elif self.recording is not None and len(self.recording.inputs) == index:
                self.recording.inputs.append(hidden)
            return None

        return hook

    def _watch_cache(self, cache) -> None:
        """Keep every KV-cache write of this forward, per layer (the calls a replay repeats)."""
        if cache is None or self.recording is None:
            return
        recording, update = self.recording, cache.update

        def recorded_update(key, value, layer_idx, cache_kwargs=None):
            while len(recording.writes) <= layer_idx:
                recording.writes.append([])
            recording.writes[layer_idx].append((key, value, cache_kwargs))
            return update(key, value, layer_idx, cache_kwargs)

        cache.update = recorded_update
        self.wrapped_cache = cache

    def _layer_output(self, index: int):
        def hook(module, args, output):
            if self.recording is not None and len(self.recording.outputs) == index:
                self.recording.outputs.append(output)
                self.recording.states.append(self.attached.layer_state(index))
            return None

        return hook

    def _on_decoder_output(self, module, args, output):
        mismatch = self._compare() if output is not None and self.expected is not None else None
        self._finish_forward(store=mismatch is None)
        if mismatch is not None:
            raise ReplayMismatch(mismatch)
        return None

    # ---- group.verify ------------------------------------------------------------------
    def _compare(self) -> str | None:
        """The forward just run against the kept one its replay would have used: None where every
        layer it would have replayed is equal (its output, its KV-cache writes and, in a prefill,
        the state each editor that acts there leaves), else the one-line message naming the
        first layer that is not."""
        kept, depth, signatures = self.expected
        seen = self.recording or _Prefix()
        where = "prefill" if self.steps == 0 else f"decode forward {self.steps}"

        def at(values: list, index: int):
            return values[index] if index < len(values) else None

        for index in range(depth):
            parts = [("output", at(seen.outputs, index), kept.outputs[index])]
            if self.wrapped_cache is not None and kept.writes[index]:
                parts.append(("KV-cache writes", at(seen.writes, index), kept.writes[index]))
            # an editor's state matters where it acts: elsewhere the layer is stock for it
            for group, _ in (signatures[index] if signatures is not None else ()):
                parts.append((f"{group}'s state", (at(seen.states, index) or {}).get(group),
                              (at(kept.states, index) or {}).get(group)))
            for what, mine, theirs in parts:
                if not same(mine, theirs):
                    return (f"group.verify: cell {self.cell} computes decoder layer {index} differently from the "
                            f"replay ({what} differs, batch {self.batches}, {where}): its interventions' replay "
                            "signatures call the two cells alike there; fix layer_signatures / unchanged_prefix "
                            "(outro_sweep.group.replayable), or run with group.prefix=false")
        if depth == len(self.parts.layers) and kept.head is not None:
            self.head_check = kept
        return None

    def _finish_forward(self, store: bool) -> None:
        for index in self.replayed:
            self.parts.layers[index].__dict__.pop("forward", None)
        if self.wrapped_cache is not None:
            self.wrapped_cache.__dict__.pop("update", None)
        recording = self.recording
        if store and self.source is not None and len(self.replayed) == len(self.parts.layers):
            self._swap_head(self.source)
        if store and self.mode == "record" and recording is not None and recording.outputs:
            if self.record_depth is None:
                self._finish_prefill(recording)
            else:
                kept = self._kept(recording, min(len(recording.outputs), self.record_depth), ())
                if kept is not None and self.store.put(self.key, kept, evict=self.evicting):
                    COUNTS["decode_records"] += 1
                    self.head_record = (self.key, kept)
                elif self.chain is not None:  # a step not kept: the ones after it could never be looked up
                    self._set_chain(None, self.chain["replay"])
        self._reset()

    def _kept(self, recording: _Prefix, depth: int, signatures: tuple) -> _Prefix | None:
        """The first ``depth`` layers of ``recording`` as a kept prefix, or None (nothing to keep)."""
        if depth <= 0:
            return None
        writes = [list(w) for w in recording.writes[:depth]]
        if self.wrapped_cache is None:  # no KV cache in this forward: nothing to write on replay
            writes = [[] for _ in range(depth)]
        if len(writes) != depth:
            return None
        return _Prefix(recording.inputs[:depth], recording.outputs[:depth], writes, recording.states[:depth],
                       signatures[:depth])

    def _finish_prefill(self, recording: _Prefix) -> None:
        """Keep this prefill's describable layers unless a kept prefill already holds them, and
        set how its decode steps go: recorded after a kept prefill, replayed after a replay."""
        replay = self.replay
        num_layers = len(recording.outputs)
        # A full replay whose cell can describe no layer past the kept ones adds nothing new.
        covered = (replay is not None and replay.depth == len(replay.kept.outputs)
                   and (replay.depth >= num_layers or len(replay.mine) <= replay.depth))
        record = None
        if not covered:
            mine = self.attached.layer_signatures(recording.residual_inputs()[:num_layers], self.real)
            known = any(_agreeing(mine, self.store.get(key).signatures) == len(mine) for key in self._kept_prefills())
            kept = None if known else self._kept(recording, len(mine), tuple(mine))
            key = ("prefill", self.key, tuple(mine))
            if kept is not None and self.store.put(key, kept, evict=self.evicting):
                COUNTS["prefill_records"] += 1
                self.head_record = (key, kept)
                # a forward without a KV cache has no decode steps to follow it
                if self.wrapped_cache is not None:
                    record_depth = int(self.attached.unchanged_decode_prefix(len(kept.outputs)))
                    record = (key, record_depth) if record_depth > 0 else None
        replay_depth = int(self.attached.unchanged_decode_prefix(replay.depth)) if replay is not None else 0
        self._set_chain(record, (replay.key, replay_depth) if replay_depth > 0 else None)

    # ---- the output head ---------------------------------------------------------------------
    def _on_head_output(self, module, args, output):
        """The head right after a kept forward: keep its output with it (a copy: callers may edit
        logits in place), the store re-measured. Under ``group.verify``, after a forward whose
        every layer the replay would have given, compare the head's output with the kept one."""
        if self.head_check is not None and args and isinstance(output, torch.Tensor):
            kept, self.head_check = self.head_check, None
            shape, logits = kept.head
            if tuple(args[0].shape) == shape and not same(output, logits):
                where = "prefill" if self.steps == 0 else f"decode forward {self.steps}"
                raise ReplayMismatch(f"group.verify: cell {self.cell} computes the output head differently from the "
                                     f"replay (batch {self.batches}, {where}): its interventions' replay signatures "
                                     "call the two cells alike at every layer; fix layer_signatures / "
                                     "unchanged_prefix (outro_sweep.group.replayable), or run with group.prefix=false")
        if self.head_record is None or not args or not isinstance(output, torch.Tensor):
            return None
        key, kept = self.head_record
        self.head_record = None
        if kept.head is None and len(kept.outputs) == len(self.parts.layers):
            kept.head = (tuple(args[0].shape), output.detach().clone())
            if not self.store.put(key, kept, evict=self.evicting):  # no room for it: the forward stays kept
                kept.head = None
                self.store.put(key, kept, evict=self.evicting)
        return None

    def _swap_head(self, kept: _Prefix) -> None:
        """The next head call, after a forward that replayed every layer of ``kept``, returns
        ``kept``'s head output where its input has the kept shape (the same final hidden state
        through the same norm and slice), and runs the head otherwise."""
        if self.head is None or kept.head is None:
            return
        head, (shape, logits) = self.head, kept.head

        def replay(hidden, *args, **kwargs):
            head.__dict__.pop("forward", None)
            if tuple(hidden.shape) != shape or args or kwargs:
                return head.forward(hidden, *args, **kwargs)
            COUNTS["head_replays"] += 1
            return logits.clone()

        head.forward = replay  # an instance attribute, gone after one call

    def _forget_head(self) -> None:
        self.head_record = None
        self.head_check = None
        if self.head is not None:
            self.head.__dict__.pop("forward", None)
