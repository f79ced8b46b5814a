"""What the group replay (``outro_sweep.group.prefix``) asks of an attached editor: one protocol.

The cells of a group run the same batches through the same model one after another; below the
first layer where two cells compute differently, the later one replays what the earlier one
computed. Whether two cells compute a layer alike is what each attached editor answers here.
``outro_sweep.interventions.base.Editor`` declares every question with a default that shares
nothing, so an editor answers only what it knows:

- ``layer_signatures(hidden, real, known)``: per leading decoder layer, None where the editor
  leaves the layer stock, else a hashable description such that two editors with equal
  descriptions edit that layer alike; a shorter list where it cannot say past some layer.
  Default: ``unchanged_prefix`` stock layers and nothing past them. An editor that describes
  layers it acts on builds the description from ``replay_signature`` (its whole configuration,
  derived from its typed ``__init__``) and what it does at that layer;
- ``unchanged_prefix(hidden, real)``: how many leading layers it leaves exactly stock in a
  prefill. Default 0: it may change layer 0, so nothing is replayed;
- ``prefix_signature``: what that answer depends on besides the tensors, so that cells alike in
  it measure a kept prefix once. Default None: every cell measures it;
- ``export_layer_state(layer)`` / ``import_layer_state(layer, state)``: what the edit left at a
  layer it acts on (OutRo: the sinks' value mean, the cosine sums), handed to the same editor of
  another cell when that layer is replayed there instead of run. Default: nothing to hand over;
- ``unchanged_decode_prefix(prefill_depth)``: of the leading layers a prefill computed alike,
  how many its decode steps compute alike too. Default 0: decode steps are never replayed.

A wrong answer makes a cell differ from its run alone; ``group.verify=N`` catches it by running
N batches of each cell without replay and comparing (``outro_sweep.group.prefix``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol


class Replayable(Protocol):
    """The replay's questions to one editor (``interventions.base.Editor`` answers them all)."""

    def layer_signatures(self, hidden: Sequence, real: Any, known: dict | None = None) -> list: ...

    def unchanged_prefix(self, hidden: Sequence, real: Any) -> int: ...

    @property
    def prefix_signature(self) -> Hashable | None: ...

    def export_layer_state(self, layer: int) -> Any: ...

    def import_layer_state(self, layer: int, state: Any) -> None: ...

    def unchanged_decode_prefix(self, prefill_depth: int) -> int: ...


class ReplayedStack:
    """The editors of one cell, ``[(group, editor)]`` in attach order (``Attached.editors``),
    answering the replay's questions for all of them at once."""

    def __init__(self, editors: list[tuple[str, Replayable]]) -> None:
        self.editors = editors

    def layer_signatures(self, hidden: Sequence, real: Any, known: dict | None = None) -> list[tuple]:
        """What every editor does at each leading decoder layer of this prefill, given the residual
        stream ``hidden[l]`` (B, S, D) entering layer l for l < len(hidden) and the (B, S) bool
        real tokens: one hashable tuple per layer, ``((group, signature), ...)`` of the editors
        that act there (``()``: every editor leaves the layer stock). The list stops at the first
        layer some editor cannot describe.

        Two cells whose lists agree on layers 0..d-1, on the same input, compute those layers bit
        for bit alike, edits and editor state included. ``known``: answers already measured on
        these same tensors (per kept prefix), shared by the cells that replay from it."""
        per_editor = [(group, list(editor.layer_signatures(hidden, real, known))[: len(hidden)])
                      for group, editor in self.editors]
        depth = min([len(hidden), *(len(signatures) for _, signatures in per_editor)])
        return [tuple((group, signatures[layer]) for group, signatures in per_editor if signatures[layer] is not None)
                for layer in range(depth)]

    def layer_state(self, layer: int) -> dict:
        """``{group: state}``: what each editor's edit left at ``layer`` in the forward just run."""
        states = {}
        for group, editor in self.editors:
            state = editor.export_layer_state(layer)
            if state is not None:
                states[group] = state
        return states

    def restore_layer_state(self, layer: int, states: dict) -> None:
        """Give each editor the state its counterpart left at ``layer`` (``layer_state``) when the
        layer is replayed instead of run: the editor ends as if its edit had run there."""
        for group, editor in self.editors:
            if group in states:
                editor.import_layer_state(layer, states[group])

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        """The least of the editors' ``unchanged_decode_prefix``; none attached, all of them."""
        depth = prefill_depth
        for _, editor in self.editors:
            depth = min(depth, int(editor.unchanged_decode_prefix(prefill_depth)))
        return depth
