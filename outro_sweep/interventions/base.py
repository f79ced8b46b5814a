"""The contract of an intervention: a config-side ``Intervention`` that builds an ``Editor``.

An intervention is one config group (``conf/<group>/*.yaml``) whose ``_target_`` is a subclass
of ``Intervention``, plus the ``.py`` that defines it. Nothing else registers it: the cell, the
sweeper's baseline, the identity and the report find every intervention of a config by the
classes its top-level ``_target_`` nodes name (see ``stack.py``). docs/extending.md shows a
complete small one.

``Intervention`` (the config side; importable without torch, built before the model loads)
=========================================================================================

Class attributes:

- ``sweep_axes: tuple[str, ...]``: the settings a sweep of it varies, as (rows, columns) of the
  report's heatmap, keys of its own config node, e.g. ``("layer", "alpha")``; ``()`` for none;
- ``edits: frozenset[str]``: what it changes in the model, one snake_case name per thing. Two
  active interventions that name the same thing conflict (one-line error before the model
  loads); others stack, attached in config order. The names in use are ``attention_output``
  (OutRo), ``attention_keys`` (LSG) and ``decode_kv_reads`` (SinkRouter); an intervention that
  changes something else names it (``value_vectors``, say);
- ``needs_sink_rule: bool`` (default False): it reads sink positions from the cell's ``sink``
  rule; otherwise ``sink`` does not define a cell that only this intervention touches;
- ``needs_vision_sinks: bool`` (default False): it reads the visual tokens' V-sinks
  (``interventions.vision_sinks``); otherwise ``model.vsink_dims`` / ``model.vsink_tau`` do not
  define its cells.

Methods, in the order a cell calls them:

1. ``__init__(self, group: str = "<group>", enabled: bool = True, **settings)``: the YAML node's
   keys as keyword arguments, each typed by its annotation (``Annotated[float, Range(ge=0)]``,
   ``Literal[...]``): the annotations are the config's schema (``config.schema``); call
   ``super().__init__(group, enabled)`` then ``check_arguments(<Class>, locals(), group)``, and
   check by hand only what an annotation cannot say (one knob against another). ``group`` is the
   config group (it prefixes its keys in messages); ``enabled: false`` is the stock model.
2. ``identity_settings(cls, settings: dict, num_layers: int | None) -> dict`` (classmethod): its
   settings as it acts on them, for the cell identity (OutRo: ``layer: auto`` as the layers it
   resolves to). Default: as written.
3. ``check_model(self, num_layers: int) -> None``: checks that need the model's depth, not its
   weights (a layer index in range); ``check_before_load(self, loader, sink_rule) -> None``:
   checks of the model's loader settings and the sink rule (LSG refuses a text model);
   ``check_benchmark(self, benchmark) -> None``. Each raises ``errors.ConfigError`` (one line
   naming the key and its valid values); the defaults check nothing.
4. ``attach(self, loaded, sink_rule) -> Editor``: the editor for the loaded model
   (``loaded.model`` the module, ``loaded.loader`` its settings), not yet attached.
5. ``summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict``: the
   cell-level diagnostics from every record's per-sample dict and the summed ``running_sums``;
   needs no model. Default ``{}``.

``Editor`` (the model side; what ``attach`` returns)
=====================================================

A context manager: attached on ``__enter__``, fully detached on ``__exit__`` (a model outside
``with`` is the stock model, bit for bit). Subclass it and:

- ``__init__(self, model, *settings)``: call ``super().__init__(model)`` first; every argument
  after ``model`` is a setting, and ``replay_signature`` (below) is derived from them all;
- ``start(self, edits: ModelEdits) -> None``: attach. Register every hook through
  ``edits.hook(module.register_forward_hook(...))``, put the editor on an attention module with
  ``edits.edit(attention, self)`` and route the decoder's attention through ``outro_sdpa`` /
  ``outro_eager`` with ``edits.route(name)``; the base undoes all of it on exit, and after a
  ``start`` that raised. ``stop(self)`` undoes anything else (default: nothing);
- ``on_prefill(self, call)`` / ``on_decode(self, call)``: called at the start of every decoder
  forward with its ``DecoderCall`` (tokens, padding mask, KV cache); ``self.prefill`` says which
  one the forward in progress is (a decode forward continues a non-empty KV cache: a generation
  step, or a cloze option's tokens);
- at an attention module it was put on (``attention_hook.py`` calls these for every editor of
  the module, in attach order): ``edit_key(module, key) -> key`` (the keys the kernel attends
  with), ``run_kernel(module, kernel, query, key, value, attention_mask, **kwargs) -> (out,
  weights)`` (only where ``replaces_kernel = True``; at most one per module) and ``edit(module,
  out, weights, query, key, value, scaling) -> out`` (the per-head output). Defaults: unchanged;
- ``take_sample_diagnostics(self) -> list[dict]``: one JSON-ready dict per batch row of the last
  prefill (default ``[]``: none); ``running_sums(self) -> dict[str, float]``: additive sums since
  attach (default ``{}``), which the shard headers store per batch, so that they add up over
  processes and resumed attempts.

For a group's cells to share work (``outro_sweep.group.prefix``), an editor says which decoder
layers it leaves stock or computes like another cell's: ``unchanged_prefix(hidden, real) -> int``
(how many leading layers are stock in a prefill), ``unchanged_decode_prefix(prefill_depth) ->
int`` (the same for decode steps), or per layer ``layer_signatures``, with the state hand-over of
a replayed layer. Those questions are the replay's protocol (``outro_sweep.group.replayable``);
their defaults here share nothing. An editor that describes the layers it acts on builds the
description from ``replay_signature``: its class and every constructor argument after the model
(``settings()``), so that a setting added later takes part without being listed; a setting whose
effect it describes per layer instead is named in ``per_layer_settings``. ``group.verify=N``
checks the answers against a run without replay; it is worth running once for a new intervention.

Helpers for finding the parts of a model: ``interventions.decoder`` (``decoder_layers``,
``attention_modules``, ``find_decoder``).
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from outro_sweep.config.schema import check_arguments
from outro_sweep.interventions.signature import canonical

if TYPE_CHECKING:
    import torch

    from outro_sweep.interventions.attention_hook import ModelEdits

#: The keyword a decoder forward gets its KV cache under (transformers' models differ).
CACHE_KWARGS = ("past_key_values", "past_key_value")


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

    def attach(self, loaded: Any, sink_rule: Any) -> Editor:
        """The editor for ``loaded`` (a ``models.base.LoadedModel``), not yet attached;
        ``sink_rule``: the cell's ``sinks.base.SinkRule``, configured for the model."""
        raise NotImplementedError

    def summarise(self, samples: list[dict | None], sums: dict[str, float]) -> dict:
        """Cell-level diagnostics. samples: this intervention's per-sample dicts, one per record
        (None where it recorded nothing); sums: its ``running_sums`` keys, summed over the cell."""
        return {}


@dataclass(frozen=True)
class DecoderCall:
    """One forward of the text decoder, as its forward pre-hook sees it (``decoder_call``)."""

    args: tuple
    kwargs: dict
    tokens: torch.Tensor | None  # inputs_embeds (B, S, D) or input_ids (B, S); None when given neither
    cache: Any  # the KV cache, None without one
    past: int  # tokens already in the cache (an int, no host sync): 0 for a prefill

    @property
    def prefill(self) -> bool:
        """A forward over an empty (or no) KV cache; otherwise a decode forward, whose every
        query token is one decode step at its own position."""
        return self.past == 0

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        """S: the tokens this forward feeds (the prompt, or the new tokens of a decode forward)."""
        return self.tokens.shape[1]

    @property
    def mask(self) -> Any:
        """``attention_mask`` as passed: the 2-D (B, past + S) padding mask, a prepared mask, or None."""
        return self.kwargs.get("attention_mask")

    def padding_mask(self) -> torch.Tensor | None:
        """The 2-D (B, past + S) padding mask (1 for real tokens), None when there is none."""
        import torch  # deferred: this module is imported by the config checks, before torch is needed

        mask = self.mask
        return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    def real(self, who: str | None = None) -> torch.Tensor:
        """(B, S) bool: this forward's real (non-pad) tokens, from the 2-D padding mask; all True
        without a mask. A prepared (4-D) mask says nothing per token: all True, or, with ``who``
        (the editor that needs to know), a RuntimeError naming it."""
        import torch  # deferred: this module is imported by the config checks, before torch is needed

        mask = self.padding_mask()
        if mask is not None:
            return mask[:, -self.length:].bool()
        if self.mask is not None and who is not None:
            raise RuntimeError(f"{who} needs a 2-D padding mask (batch, seq) or none; got a prepared mask")
        return torch.ones(self.batch, self.length, dtype=torch.bool, device=self.tokens.device)

    def inputs(self) -> dict:
        """The keyword inputs without the KV cache (what identifies the forward's input)."""
        return {key: value for key, value in self.kwargs.items() if key not in CACHE_KWARGS}


def decoder_call(args: tuple, kwargs: dict) -> DecoderCall:
    """Read a text decoder's forward (its forward pre-hook's ``args``, ``kwargs``): the tokens,
    the KV cache (under either name transformers' models give it) and how much it holds."""
    tokens = kwargs.get("inputs_embeds")
    if tokens is None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
    cache = next((kwargs[name] for name in CACHE_KWARGS if kwargs.get(name) is not None), None)
    past = cache.get_seq_length() if cache is not None else 0  # an int for transformers' dynamic caches
    return DecoderCall(args, kwargs, tokens, cache, past)


class Editor:
    """What ``Intervention.attach`` returns: attached to the model while inside ``with``. See the
    module docstring for what a subclass defines; every capability has a default here."""

    #: True for an editor whose ``run_kernel`` replaces the attention kernel call (SinkRouter
    #: computes only the KV groups it keeps); at most one per attention module.
    replaces_kernel: ClassVar[bool] = False
    #: Settings (``__init__`` argument names) whose effect ``layer_signatures`` describes per layer
    #: (OutRo's ``layer``: whether a given layer relaxes); left out of ``replay_signature``.
    per_layer_settings: ClassVar[tuple[str, ...]] = ()
    #: ``__init__``'s arguments by name as the editor was made with them (bound in ``__new__``).
    _init_arguments: dict[str, Any] = {}
    _replay_signature: Hashable | None = None

    def __new__(cls, *args, **kwargs):
        # The constructor's arguments, bound to its typed signature, are the editor's settings.
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        except TypeError:  # __init__ raises the same error with its own message
            return self
        bound.apply_defaults()
        self._init_arguments = dict(list(bound.arguments.items())[1:])  # without self
        return self

    def __init__(self, model: torch.nn.Module) -> None:
        from outro_sweep.interventions.attention_hook import ModelEdits  # deferred: torch loads with an editor
        from outro_sweep.interventions.decoder import find_decoder  # deferred: not with the config checks

        self.model = model
        self.parts = find_decoder(model)  # the text decoder, its layers and its config
        self.num_layers = len(self.parts.layers)
        self.model_edits = ModelEdits(model, self.parts)  # everything ``start`` changed, undone on exit
        self.prefill = False  # whether the decoder forward in progress (or the last one) is a prefill

    # ---- start and stop ------------------------------------------------------------------------
    def __enter__(self):
        try:
            decoder = self.parts.decoder
            self.model_edits.hook(decoder.register_forward_pre_hook(self._on_decoder_input, with_kwargs=True))
            self.start(self.model_edits)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.model_edits.undo()
        self.stop()

    def start(self, edits: ModelEdits) -> None:
        """Attach: register hooks and editors through ``edits`` (undone on exit)."""

    def stop(self) -> None:
        """Undo what ``start`` did outside ``edits`` (after ``edits`` is undone)."""

    def _on_decoder_input(self, module, args, kwargs):
        call = decoder_call(args, kwargs)
        self.prefill = call.prefill
        if call.prefill:
            self.on_prefill(call)
        else:
            self.on_decode(call)
        return None

    def on_prefill(self, call: DecoderCall) -> None:
        """A prefill begins (``call``: its tokens, padding mask and empty cache)."""

    def on_decode(self, call: DecoderCall) -> None:
        """A decode forward begins (``call.past`` tokens already in the cache)."""

    # ---- at an attention module (attention_hook.py) ----------------------------------------------
    def edit_key(self, module: torch.nn.Module, key: torch.Tensor) -> torch.Tensor:
        """key (B, H_kv, S_kv, d) after RoPE, cache included, before the kernel; return the keys
        the kernel attends with (never edit in place). Default: unchanged."""
        return key

    def run_kernel(self, module: torch.nn.Module, kernel, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs):
        """Only where ``replaces_kernel``: the kernel call, ``kernel(module, query, key, value,
        attention_mask, **kwargs)`` -> (out (B, S_q, H, d), weights or None). Default: the call."""
        return kernel(module, query, key, value, attention_mask, **kwargs)

    def edit(self, module: torch.nn.Module, out: torch.Tensor, weights: torch.Tensor | None, query: torch.Tensor,
             key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
        """out (B, S_q, H, d) per-head output before W_O; weights (B, H, S_q, S_kv) probabilities
        (eager) or None; query (B, H, S_q, d); key, value (B, H_kv, S_kv, d), cache included.
        Return the output. Default: unchanged."""
        return out

    # ---- diagnostics ----------------------------------------------------------------------------
    def take_sample_diagnostics(self) -> list[dict]:
        """One JSON-ready dict per batch row of the last prefill; [] when it records none."""
        return []

    def running_sums(self) -> dict[str, float]:
        """Additive ``{key: float}`` sums since attach."""
        return {}

    # ---- its configuration ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Every ``__init__`` argument after the first (the model), as it was given."""
        return dict(list(self._init_arguments.items())[1:])

    @property
    def replay_signature(self) -> Hashable:
        """The editor's class and its settings (``settings()`` without ``per_layer_settings``),
        canonical (``signature.canonical``): two editors with equal signatures act alike wherever
        they act."""
        if self._replay_signature is None:  # the settings never change after construction
            kept = {name: value for name, value in self.settings().items() if name not in self.per_layer_settings}
            self._replay_signature = (type(self).__module__, type(self).__qualname__, canonical(kept))
        return self._replay_signature

    def settings_signature(self, names: Sequence[str]) -> Hashable:
        """The editor's class and only the settings ``names``, canonical (a ``prefix_signature``
        made of what an answer depends on, e.g. OutRo's sink rule)."""
        settings = self.settings()
        return (type(self).__module__, type(self).__qualname__,
                canonical({name: settings[name] for name in names if name in settings}))

    # ---- the group replay's questions (outro_sweep.group.replayable) --------------------------------
    def layer_signatures(self, hidden: Sequence, real: Any, known: dict | None = None) -> list:
        """Per layer l < len(hidden), given the residual stream ``hidden[l]`` (B, S, D) entering
        it and the (B, S) bool real tokens: None where the editor leaves the layer stock, else a
        hashable description of what it does there; a shorter list where it cannot say past some
        layer. ``known``: answers already measured on these same tensors, which it may fill.
        Default: ``unchanged_prefix`` stock layers, measured once per ``prefix_signature``."""
        signature = self.prefix_signature
        if known is None or signature is None:
            return [None] * min(len(hidden), int(self.unchanged_prefix(hidden, real)))
        key = (signature, len(hidden))
        if key not in known:
            known[key] = min(len(hidden), int(self.unchanged_prefix(hidden, real)))
        return [None] * known[key]

    def unchanged_prefix(self, hidden: Sequence, real: Any) -> int:
        """How many leading decoder layers it leaves exactly stock in a prefill. Default 0."""
        return 0

    @property
    def prefix_signature(self) -> Hashable | None:
        """What ``unchanged_prefix`` depends on besides its tensors; None: measured by every cell."""
        return None

    def export_layer_state(self, layer: int) -> Any:
        """What its edit left at ``layer`` in the forward just run (None: nothing)."""
        return None

    def import_layer_state(self, layer: int, state: Any) -> None:
        """Continue as if its edit had run at ``layer``, leaving ``state`` (another cell's
        ``export_layer_state`` there, from an editor whose ``layer_signatures`` agree up to it)."""

    def unchanged_decode_prefix(self, prefill_depth: int) -> int:
        """Of the ``prefill_depth`` leading layers the prefill computed alike, how many its decode
        steps compute alike as well. Default 0: decode steps are never replayed."""
        return 0
