"""The decoder's layers, run once per batch for all the cells of a group that compute them alike.

Cells of one group read the same batches through the same model; below the first layer where two
of them differ, they compute the same thing. While a cell predicts, ``PrefixReplay`` watches each
prefill (a forward whose KV cache starts empty):

- the attached interventions describe what they do at each layer (``Attached.layer_signatures``:
  nothing below the first sink for OutRo; OutRo's rule, alpha, temperature, decode mode and
  whether it relaxes where some row has a sink; only a stock prefix for an editor that declares
  ``unchanged_prefix`` alone), measured on the residual stream of each prefill kept for the same
  input tensors (bit for bit, with the same model and attention kernel);
- replay: the leading layers on which the kept prefill's recording cell and this cell agree are
  not run: each returns its kept output, writes its kept keys and values into the new cache, and
  hands its editors what the recording cell's editors left there (``Attached.layer_state``, e.g.
  OutRo's sink value mean and cosine sums). Their forward hooks and pre-hooks still fire with the
  same tensors, so sink detection, gates and probes see what they would have seen;
- record: where no kept prefill holds the layers this cell can describe, they are kept under
  (inputs, this cell's signatures), replayed layers included.

So a cell replays the baseline's stock layers up to its first edited layer, and a cell that
computes a batch exactly as an earlier one (OutRo relaxing only at layers without sinks, say)
replays all of it.

Decode steps continue the same way while a cell's tokens are still the recording cell's: each
step of a recorded generation is kept under a key chained from its prefill's (the step's input
tensors after every earlier step's), and a replaying cell whose step has a kept key replays the
leading layers its interventions compute alike in decode too (``Attached.unchanged_decode_prefix``:
no deeper than in the prefill, since the KV cache differs from there). The first step whose
tokens differ ends the replay for that generation; a cell that kept its own prefill records its
own steps as it goes. Each decode step's key costs one copy of its small input tensors to the
host. Replay is the cell-after-cell form of sharing. The other form, the K cells as K batch
slices of one forward, would need every intervention to act on its own rows of a shared batch;
``python -m outro_sweep.perf.sweep`` measures what it would save (stacking K cells' stock
``generate()`` into one call against K calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from outro_sweep.group.counters import COUNTS
from outro_sweep.group.fingerprint import tensor_digest
from outro_sweep.group.memory import BoundedCache
from outro_sweep.interventions.decoder import find_decoder

_CACHE_KWARGS = ("past_key_values", "past_key_value")  # the name differs across transformers' models


@dataclass
class _Prefix:
    """One forward's leading layers 0..len(outputs)-1, as one cell computed them."""

    # per layer: (B, S, D) the residual stream entering it, as the layer received it (most decoders
    # pass a layer's output on as is; Qwen3-VL adds visual features to the first few)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)  # per layer: exactly what its forward returned
    writes: list = field(default_factory=list)  # per layer: [(key, value, cache_kwargs)] it wrote to the KV cache
    states: list = field(default_factory=list)  # per layer: ``Attached.layer_state``, what its edits left
    signatures: tuple = ()  # per layer: ``Attached.layer_signatures`` of the recording cell (prefills)
    # (input shape, output) of the output head right after this forward, for a replay of every layer
    head: tuple | None = None
    # what the interventions of the replaying cells measured on this prefix (``Attached.layer_signatures``)
    depths: dict = field(default_factory=dict)

    def residual_inputs(self) -> list[torch.Tensor]:
        """The residual stream entering layers 0..len(outputs), the last one as the last kept
        layer returned it."""
        return [*self.inputs[: len(self.outputs)], *(_hidden(output) for output in self.outputs[-1:])]


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _cache_of(kwargs: dict):
    return next((kwargs[name] for name in _CACHE_KWARGS if kwargs.get(name) is not None), None)


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
    steps in ``store`` for the interventions ``attached`` (``InterventionStack.attach``'s value)
    of one cell."""

    def __init__(self, model: torch.nn.Module, attached, store: BoundedCache) -> None:
        self.model = model
        self.parts = find_decoder(model)
        self.attached = attached
        self.store = store
        self.handles: list = []
        # The generation in progress: {"record": (key of its last forward, layers its decode steps
        # keep) or None, "replay": (key of the kept forward it follows, layers its decode steps
        # replay) or None}, or None when its decode steps run every layer unwatched.
        self.chain: dict | None = None
        # The output head (``get_output_embeddings``): after a forward that replayed every layer, its
        # output is the kept one too (no intervention edits the final norm or the head).
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.head = head if isinstance(head, torch.nn.Module) else None
        self.head_record: tuple | None = None  # (store key, kept forward) whose head output to keep
        self.evicting = True  # whether this generation's records may evict kept entries
        self._reset()

    def _reset(self) -> None:
        """Forget the forward in progress (the generation's ``chain`` outlives it)."""
        self.mode = None  # None (not watching this forward) | "record" | "replay"
        self.key = None
        self.real = None  # (B, S) bool real tokens of this prefill
        self.recording: _Prefix | None = None
        self.record_depth: int | None = None  # a decode step records this many layers; None: a prefill
        self.replay: _Replay | None = None  # what this prefill continues from
        self.source: _Prefix | None = None  # the kept forward whose layers this one replays
        self.replayed: list[int] = []  # layers whose forward is swapped for this forward
        self.wrapped_cache = None

    # ---- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "PrefixReplay":
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

    # ---- per prefill -------------------------------------------------------------------
    def _on_decoder_input(self, module, args, kwargs):
        self._finish_forward(store=False)  # a forward that raised left its state behind
        self._forget_head()
        cache = _cache_of(kwargs)
        inputs = {k: v for k, v in kwargs.items() if k not in _CACHE_KWARGS}
        if cache is not None and cache.get_seq_length() > 0:
            self._on_decode_step(args, inputs)
            return None
        self.chain = None
        tokens = inputs.get("inputs_embeds")
        if tokens is None:
            tokens = inputs.get("input_ids", args[0] if args else None)
        if tokens is None:
            return None
        kernel = str(self.parts.config._attn_implementation).removeprefix("outro_")  # edits wrap the stock kernel
        self.key = (id(self.model), kernel, type(cache).__name__, tensor_digest([list(args), inputs]))
        mask = kwargs.get("attention_mask")
        batch, length = tokens.shape[:2]
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            self.real = mask[:, -length:].bool()
        else:
            self.real = torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
        self.mode = "record"  # kept at the end if this cell computed layers no kept prefill holds
        # The first cell to run these inputs may evict the least recently used entries to keep them;
        # a later one keeps its own layers only in free memory, never at the cost of kept ones.
        self.evicting = not self._kept_prefills()
        self.replay = self._best_kept_prefill()
        if self.replay is not None:
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
        leading layers (``Attached.layer_signatures``, measured on that prefill's own stream: equal
        up to the first layer where the two cells differ), or None where none agrees on layer 0."""
        best = None
        for key in self._kept_prefills():
            kept: _Prefix = self.store.get(key)
            mine = self.attached.layer_signatures(kept.residual_inputs(), self.real, kept.depths)
            depth = _agreeing(mine, kept.signatures)
            if depth > 0 and (best is None or depth > best.depth):
                best = _Replay(key, kept, depth, mine)
        return best

    def _on_decode_step(self, args, inputs: dict) -> None:
        """A decode step of a watched generation: replay the leading layers its kept step holds
        while the token history is that step's, and record it where this cell kept its prefill."""
        if self.chain is None:
            return
        digest = tensor_digest([list(args), inputs])
        record, replay = self.chain.get("record"), self.chain.get("replay")
        if replay is not None:
            key = (replay[0], digest)
            kept: _Prefix | None = self.store.get(key)
            depth = min(replay[1], len(kept.outputs)) if kept is not None else 0
            if depth == 0:  # this cell's tokens left the kept ones: no later step of it is kept either
                replay = None
            else:
                for index in range(depth):
                    self._swap_forward(index, kept)
                self.source = kept
                replay = (key, depth)
                COUNTS["decode_steps_replayed"] += 1
                COUNTS["decode_layers_replayed"] += depth
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
            if self.mode != "record":
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
            if self.mode == "record" and self.recording is not None and len(self.recording.outputs) == index:
                self.recording.outputs.append(output)
                self.recording.states.append(self.attached.layer_state(index))
            return None

        return hook

    def _on_decoder_output(self, module, args, output):
        self._finish_forward(store=True)
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
        logits in place), the store re-measured."""
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
        if self.head is not None:
            self.head.__dict__.pop("forward", None)
