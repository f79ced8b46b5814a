"""What an intervention is: one config group (``conf/<group>/*.yaml``) whose ``_target_`` is a
subclass of ``Intervention``, plus the ``.py`` that defines it. Nothing else registers it: the
cell, the sweeper's baseline, the identity and the report find every intervention of a config by
the classes its top-level ``_target_`` nodes name (see ``stack.py``).

The lifecycle of one intervention in one cell:

1. ``__init__(**settings)`` — the YAML node's keys, typed by its annotations (the schema:
   ``config.schema.check_arguments`` checks them, one-line ``ConfigError``); checks by hand only
   what an annotation cannot say (one knob against another). Runs before the model loads.
2. ``check_model(num_layers)`` — checks that need the model's shape, not its weights (e.g. a
   layer index in range). Also before the model loads.
   ``check_before_load(loader, sink_rule)`` — checks of the model's loader settings and the
   cell's sink rule that read no weights (e.g. LSG refuses a text model, or a video family whose
   vision tower it cannot read); the default checks nothing. Also before the model loads.
3. ``attach(loaded, sink_rule)`` — a context manager over the loaded model (``loaded``: the
   ``models.base.LoadedModel``: ``loaded.model`` the module, ``loaded.loader`` its model settings,
   e.g. the vision-sink dims a video model's YAML sets): the returned editor
   is attached on ``__enter__`` and fully detached on ``__exit__`` (a model outside ``with`` is
   the stock model, bit for bit). The editor reports ``take_sample_diagnostics()`` (one JSON-ready
   dict per batch row of the last prefill) and ``running_sums()`` (additive ``{key: float}`` sums
   since attach; per-batch deltas go to the shard headers, so they add up over processes and
   resumed attempts). It also says which decoder layers it changes in a prefill, so that the
   cells of a group run each layer once where they compute it alike (``outro_sweep.group.prefix``),
   in one of two ways:
   - ``layer_signatures(hidden, real, known) -> list``: given the residual stream ``hidden[l]``
     (B, S, D) entering each layer l < len(hidden) and the (B, S) bool real tokens, one entry per
     layer: None where it leaves the layer stock, else a hashable description such that two
     editors with equal descriptions edit that layer alike (OutRo: its rule, alpha, temperature,
     decode mode and whether it relaxes there, at layers where some row has a sink); a shorter list
     where it cannot say past some layer. An editor that acts where it describes hands over what
     its edit leaves there with ``export_layer_state(layer)`` / ``import_layer_state(layer,
     state)``, so a replayed layer leaves it as if it had run. ``known`` is a dict it may memoise
     measurements of these same tensors in (OutRo: its detected sink layers, per rule);
   - or only ``unchanged_prefix(hidden, real) -> int``: how many leading layers it leaves exactly
     stock (static, like LSG's ``layer + 1``); it is taken to be indescribable from there. An
     editor whose answer depends on less than its whole config may name that part as a hashable
     ``prefix_signature``, so cells alike in it measure a kept prefix once.
   An editor with neither is taken to change layer 0.
   For decode steps it declares ``unchanged_decode_prefix(prefill_depth) -> int``: of the
   leading layers a prefill computed alike, how many its decode steps compute alike too (OutRo and
   LSG: all of them; SinkRouter: those below ``first_layer``); without it, decode steps are never
   replayed.
4. ``summarise(samples, sums)`` — the cell-level diagnostics from every record's per-sample dict
   and the summed ``running_sums``; needs no model.

For the cell identity, ``identity_settings(settings, num_layers)`` gives its settings as it
acts on them (OutRo: ``layer: auto`` as the layers it resolves to); the default is as written.

An inactive intervention (``enabled: false``) changes nothing: with every intervention inactive
the cell is the stock-model baseline, and its identity ignores the intervention's other knobs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, ClassVar

from outro_sweep.config.schema import check_arguments


class Intervention:
    #: Settings a sweep of this intervention varies, as (rows, columns) of the report's heatmap,
    #: e.g. ("layer", "alpha") for OutRo; keys of the intervention's own config node.
    sweep_axes: ClassVar[tuple[str, ...]] = ()
    #: What the intervention edits, e.g. {"attention_output"} or {"decode_kv_reads"}. Two active
    #: interventions that edit the same thing conflict (one-line error before the model loads);
    #: interventions that edit different things stack, attached in config order.
    edits: ClassVar[frozenset[str]] = frozenset()
    #: True when it reads sink positions from the ``sink`` rule; otherwise ``sink`` does not
    #: define a cell that only this intervention touches.
    needs_sink_rule: ClassVar[bool] = False
    #: True when it reads the visual tokens' V-sinks (``interventions.vision_sinks``); otherwise
    #: ``model.vsink_dims`` / ``model.vsink_tau`` do not define its cells.
    needs_vision_sinks: ClassVar[bool] = False

    def __init__(self, group: str, enabled: bool = True) -> None:
        """group: the config group it was composed from (``outro``), which prefixes its keys in
        errors and diagnostics; passed by ``InterventionStack``."""
        check_arguments(Intervention, locals(), group)
        self.group = group
        self.enabled = enabled

    @property
    def active(self) -> bool:
        return self.enabled

    @classmethod
    def identity_settings(cls, settings: dict, num_layers: int | None) -> dict:
        """The settings as this intervention acts on them, for the cell identity: two spellings
        of one behaviour (OutRo's ``layer: auto`` and the layers it resolves to) must hash
        alike. ``settings``: its config node as a plain dict (numbers already canonical, 3.0 is
        3); ``num_layers``: the model's decoder depth, None where no model is configured.
        Default: the settings as written."""
        return settings

    def check_model(self, num_layers: int) -> None:
        """Checks that need the model's shape (not its weights); raise ConfigError."""

    def layers_reading_sinks(self, num_layers: int) -> list[int]:
        """The layers at which it acts on the sinks its rule finds (OutRo: its relaxation
        layers); the cell's log names those an atlas of the model found no sink at. Default: none."""
        return []

    def check_before_load(self, loader: Any, sink_rule: Any) -> None:
        """Checks of ``loader`` (the ``models.base.ModelLoader``, its config readable, no weights)
        and ``sink_rule`` (configured for the model where ``needs_sink_rule``); raise ConfigError."""

    def check_benchmark(self, benchmark: Any) -> None:
        """Checks of the cell's benchmark (``benchmarks.base.Benchmark``) against the
        intervention's own data, e.g. a trained gate's training files; raise ConfigError."""

    def attach(self, loaded: Any, sink_rule: Any) -> AbstractContextManager:
        raise NotImplementedError

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        """Cell-level diagnostics. samples: this intervention's per-sample dicts, one per record
        (None where it recorded nothing); sums: its ``running_sums`` keys, summed over the cell."""
        return {}
