"""Route a decoder's attention through the attached editors via transformers' AttentionInterface.

Two names are registered, ``outro_sdpa`` and ``outro_eager``. Each hands the keys to every
editor (``base.Editor``) attached to that attention module (``edit_key``), calls the stock kernel
(sdpa from the registry; eager from the model's own modeling file), or hands that call to the
one editor that replaces it (``replaces_kernel``, ``run_kernel``: SinkRouter computes only the KV
groups it keeps), and then hands the per-head output to every editor (``edit``), in the order
they were attached; an editor's defaults leave each unchanged. Each name is registered with the
matching stock *mask* function too: without it transformers would build no causal mask for an
unknown name and causality would silently vanish.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from outro_sweep.errors import ConfigError
from outro_sweep.interventions.decoder import set_text_attention

# An editor is a ``base.Editor`` (which imports this module): typed loosely here to keep one import direction.
Editor = Any


# id(attention module) -> the editors acting on it, applied in the order they were attached
# (interventions stack). Filled and emptied by each intervention's context manager; a module
# with no entry runs the stock kernel untouched.
ACTIVE_EDITORS: dict[int, list[Editor]] = {}


def attach_editor(module: torch.nn.Module, editor: Editor) -> None:
    editors = ACTIVE_EDITORS.setdefault(id(module), [])
    if editor.replaces_kernel and any(other.replaces_kernel for other in editors):
        # two replacements of one kernel call cannot both run: the second would never see the first
        raise RuntimeError(f"two editors run the attention kernel of layer {getattr(module, 'layer_idx', '?')}")
    editors.append(editor)


def detach_editor(module: torch.nn.Module, editor: Editor) -> None:
    editors = ACTIVE_EDITORS.get(id(module), [])
    if editor in editors:
        editors.remove(editor)
    if not editors:
        ACTIVE_EDITORS.pop(id(module), None)


class ModelEdits:
    """Everything one intervention changed on a model while attached, undone by ``undo``: its
    forward hooks, its editors on attention modules and, where it was the one to switch it, the
    text decoder's attention implementation. Each intervention's ``__exit__`` (and a failed
    ``__enter__``) calls ``undo``, so a model outside ``with`` is the stock model."""

    def __init__(self, model: torch.nn.Module, parts) -> None:
        """parts: the model's ``decoder.DecoderParts``."""
        self.model, self.parts = model, parts
        self.handles: list = []  # torch.utils.hooks.RemovableHandle
        self.editors: list[tuple[torch.nn.Module, Editor]] = []
        self.saved_impl: str | None = None

    def hook(self, handle) -> None:
        self.handles.append(handle)

    def edit(self, attention: torch.nn.Module, editor: Editor) -> None:
        attach_editor(attention, editor)
        self.editors.append((attention, editor))

    def route(self, who: str, base: str | None = None) -> None:
        """Route the text decoder's attention through this module (``outro_<base>``; ``base``
        defaults to the model's own sdpa or eager), remembering the implementation to restore;
        left as it is where another intervention already routes it (they stack). ``who`` names
        the intervention in the error for an implementation that cannot be routed."""
        register_attention_functions()
        current = self.parts.config._attn_implementation
        if current.startswith("outro_"):
            return
        base = base or current
        if base not in ("sdpa", "eager"):
            raise ConfigError(f"model.attn_implementation={base!r} is not supported by {who}: valid values are "
                              "sdpa, eager")
        self.saved_impl = current
        set_text_attention(self.model, self.parts, f"outro_{base}")

    def undo(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for attention, editor in self.editors:
            detach_editor(attention, editor)
        self.editors.clear()
        if self.saved_impl is not None:
            set_text_attention(self.model, self.parts, self.saved_impl)
            self.saved_impl = None


def _eager_kernel(module: torch.nn.Module) -> Callable:
    kernel = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if kernel is None:
        raise RuntimeError(f"{type(module).__module__} has no eager_attention_forward to wrap")
    return kernel


def _make(kernel_of: Callable[[torch.nn.Module], Callable]) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        editors = ACTIVE_EDITORS.get(id(module))
        kernel = kernel_of(module)
        runner = None
        for editor in editors or ():
            key = editor.edit_key(module, key)  # the keys the kernel attends with (LSG scales some)
            if editor.replaces_kernel:
                runner = editor
        if runner is not None:  # an editor that decides what the kernel computes (SinkRouter)
            out, weights = runner.run_kernel(module, kernel, query, key, value, attention_mask, **kwargs)
        else:
            out, weights = kernel(module, query, key, value, attention_mask, **kwargs)
        if editors:
            scaling = kwargs.get("scaling") or getattr(module, "scaling", query.shape[-1] ** -0.5)
            for editor in editors:
                out = editor.edit(module, out, weights, query, key, value, scaling)
        return out, weights

    return attention


_REGISTERED = False


def register_attention_functions() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    AttentionInterface.register("outro_sdpa", _make(lambda module: sdpa_attention_forward))
    AttentionMaskInterface.register("outro_sdpa", sdpa_mask)
    AttentionInterface.register("outro_eager", _make(_eager_kernel))
    AttentionMaskInterface.register("outro_eager", eager_mask)
    _REGISTERED = True
