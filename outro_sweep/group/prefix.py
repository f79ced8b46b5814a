"""The decoder's stock layer prefix, run once per batch for a group of cells.

Cells of one group read the same batches through the same model; below the first layer any of
their interventions changes, every cell computes the same thing. While a cell predicts,
``PrefixReplay`` watches each prefill (a forward whose KV cache starts empty):

- record: the prefill runs for real; afterwards the attached interventions say how many leading
  layers they left stock (``Attached.unchanged_prefix``: static for most, from the detected sinks
  for OutRo), and those layers' outputs and KV-cache writes are kept under the batch's key;
- replay: a later prefill with the same key (the same input tensors bit for bit, the same model
  and attention kernel) asks the interventions attached now how many of the kept layers they
  leave stock, given the kept residual stream; those layers are not run: each returns its kept
  output and writes its kept keys and values into the new cache. Their forward hooks and
  pre-hooks still fire with the same tensors, so sink detection, gates and probes see what they
  would have seen; only the attention edits of layers that change nothing are skipped.

Decode steps continue the same way while a cell's tokens are still the recording cell's: each
step of a recorded generation is kept under a key chained from the prefill's (the step's input
tensors after every earlier step's), and a replaying cell whose step has a kept key replays the
leading layers its interventions leave stock in decode too (``Attached.unchanged_decode_prefix``:
no deeper than in the prefill, since the KV cache differs from there). The first step whose
tokens differ ends the replay for that generation; from then on every layer runs. Each decode
step's key costs one copy of its small input tensors to the host. Replay is the cell-after-cell
form of sharing. The other form, the K cells as K batch slices of one forward,
would need every intervention to act on its own rows of a shared batch; ``python -m
outro_sweep.bench_sweep`` measures what it would save (stacking K cells' stock ``generate()``
into one call against K calls).
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
    """One batch's stock prefix: layers 0..len(outputs)-1."""

    first_input: torch.Tensor  # (B, S, D) the residual stream entering layer 0
    outputs: list = field(default_factory=list)  # per layer: exactly what its forward returned
    writes: list = field(default_factory=list)  # per layer: [(key, value, cache_kwargs)] it wrote to the KV cache
    # what the interventions of the replaying cells answered on this prefix (``Attached.unchanged_prefix``)
    depths: dict = field(default_factory=dict)

    def residual_inputs(self) -> list[torch.Tensor]:
        """The residual stream entering layers 0..len(outputs) (a layer's output feeds the next)."""
        return [self.first_input, *(_hidden(output) for output in self.outputs)]


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _cache_of(kwargs: dict):
    return next((kwargs[name] for name in _CACHE_KWARGS if kwargs.get(name) is not None), None)


class PrefixReplay:
    """Context manager: records and replays stock prefixes of ``model``'s prefills in ``store``
    for the interventions ``attached`` (``InterventionStack.attach``'s value) of one cell."""

    def __init__(self, model: torch.nn.Module, attached, store: BoundedCache) -> None:
        self.model = model
        self.parts = find_decoder(model)
        self.attached = attached
        self.store = store
        self.handles: list = []
        # The generation in progress: (mode, key of its last forward, layers its decode steps may
        # record or replay), or None when its decode steps run every layer unwatched.
        self.chain: tuple[str, tuple, int] | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget the forward in progress (the generation's ``chain`` outlives it)."""
        self.mode = None  # None (not watching this forward) | "record" | "replay"
        self.key = None
        self.real = None  # (B, S) bool real tokens of this prefill
        self.recording: _Prefix | None = None
        self.record_depth: int | None = None  # a decode step records this many layers; None: a prefill
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
        return self

    def __exit__(self, *exc) -> None:
        self._finish_forward(store=False)
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    # ---- per prefill -------------------------------------------------------------------
    def _on_decoder_input(self, module, args, kwargs):
        self._finish_forward(store=False)  # a forward that raised left its state behind
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
        kept: _Prefix | None = self.store.get(self.key)
        if kept is None:
            self.mode = "record"
            return None
        depth = min(len(kept.outputs), int(self.attached.unchanged_prefix(kept.residual_inputs(), self.real, kept.depths)))
        if depth == 0:
            self.mode = None
            return None
        self.mode = "replay"
        for index in range(depth):
            self._swap_forward(index, kept)
        decode_depth = int(self.attached.unchanged_decode_prefix(depth))
        self.chain = ("replay", self.key, decode_depth) if decode_depth > 0 else None
        COUNTS["prefill_replays"] += 1
        COUNTS["prefix_layers_replayed"] += depth
        return None

    def _on_decode_step(self, args, inputs: dict) -> None:
        """A decode step of a recorded or replayed generation: record it, or replay its kept
        leading layers while its key (the token history) is a recorded one."""
        if self.chain is None:
            return
        mode, previous, depth = self.chain
        key = (previous, tensor_digest([list(args), inputs]))
        if mode == "record":
            self.mode, self.key, self.record_depth = "record", key, depth
            self.chain = (mode, key, depth)
            return
        kept: _Prefix | None = self.store.get(key)
        depth = min(depth, len(kept.outputs)) if kept is not None else 0
        if depth == 0:  # this cell's tokens left the recorded ones: every later step runs in full
            self.chain = None
            return
        self.mode = "replay"
        for index in range(depth):
            self._swap_forward(index, kept)
        self.chain = (mode, key, depth)
        COUNTS["decode_steps_replayed"] += 1
        COUNTS["decode_layers_replayed"] += depth

    def _swap_forward(self, index: int, kept: _Prefix) -> None:
        layer = self.parts.layers[index]

        def replay(*args, **kwargs):
            cache = _cache_of(kwargs)
            if cache is not None:
                for key, value, cache_kwargs in kept.writes[index]:
                    cache.update(key, value, index, cache_kwargs)
            return kept.outputs[index]

        layer.forward = replay  # an instance attribute: module __call__ still runs the hooks around it
        self.replayed.append(index)

    def _layer_input(self, index: int):
        def hook(module, args, kwargs):
            if self.mode != "record":
                return None
            if index == 0:
                hidden = args[0] if args else kwargs["hidden_states"]
                self.recording = _Prefix(hidden)
                self._watch_cache(_cache_of(kwargs))
            return None

        return hook

    def _watch_cache(self, cache) -> None:
        """Keep every KV-cache write of this prefill, per layer (the calls a replay repeats)."""
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
        if store and self.mode == "record" and recording is not None and recording.outputs:
            prefill = self.record_depth is None
            if prefill:
                depth = min(len(recording.outputs),
                            int(self.attached.unchanged_prefix(recording.residual_inputs()[:-1], self.real)))
            else:
                depth = min(len(recording.outputs), self.record_depth)
            kept = None
            if depth > 0:
                kept = _Prefix(recording.first_input, recording.outputs[:depth],
                               [list(w) for w in recording.writes[:depth]])
                if self.wrapped_cache is None:  # no KV cache in this forward: nothing to write on replay
                    kept.writes = [[] for _ in range(depth)]
                if len(kept.writes) != depth or not self.store.put(self.key, kept):
                    kept = None
            if kept is not None:
                COUNTS["prefill_records" if prefill else "decode_records"] += 1
            if prefill and kept is not None and self.wrapped_cache is not None:
                decode_depth = int(self.attached.unchanged_decode_prefix(depth))
                self.chain = ("record", self.key, decode_depth) if decode_depth > 0 else None
            elif kept is None:
                self.chain = None  # a step not kept: the ones after it could never be looked up
        self._reset()
