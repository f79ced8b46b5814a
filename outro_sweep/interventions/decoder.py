"""Find the text decoder, its layers and their attention modules in any Hugging Face causal (V)LM.

The public helpers an intervention uses:

- ``decoder_layers(model)``: the text decoder's layers, a ``ModuleList`` indexed by layer;
- ``attention_modules(model)``: each layer's attention module (the one with ``layer_idx``, whose
  ``q_proj`` / ``k_proj`` / ``v_proj`` / ``o_proj`` a hook can reach), in layer order;
- ``attention_module(layer)``: one layer's attention module;
- ``find_decoder(model)``: all of it at once (``DecoderParts``: the decoder module whose forward
  runs the layer stack, its layers, and the text config whose ``_attn_implementation`` they read).

Text-only models keep layers at ``model.model.layers``; vision-language models keep the
language model's at ``model.model.language_model.layers``. ``get_decoder()`` is the
published seam for both; a scan for a ModuleList of attention-bearing layers is the
fallback. An unresolved decoder raises: an intervention never silently does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecoderParts:
    decoder: torch.nn.Module  # the module whose forward runs the layer stack
    layers: torch.nn.ModuleList  # decoder layers, index = layer_idx
    config: object  # the text config (the one whose _attn_implementation the layers read)


def attention_of(layer: torch.nn.Module) -> torch.nn.Module | None:
    """A decoder layer's attention module (``self_attn``, ``attention`` or ``attn`` with a
    ``layer_idx``), None where it has none."""
    for name in ("self_attn", "attention", "attn"):
        module = getattr(layer, name, None)
        if module is not None and hasattr(module, "layer_idx"):
            return module
    return None


def _is_layer_stack(candidate: object) -> bool:
    return (
        isinstance(candidate, torch.nn.ModuleList)
        and len(candidate) > 0
        and all(attention_of(layer) is not None for layer in candidate)
    )


def find_decoder(model: torch.nn.Module) -> DecoderParts:
    """The text decoder of ``model`` (a causal LM, a VLM or an omni model), its layers and its
    text config; RuntimeError where none is found."""
    candidates = []
    if hasattr(model, "get_decoder"):
        try:
            candidates.append(model.get_decoder())
        except (AttributeError, NotImplementedError):
            pass
    for name in ("model.language_model", "language_model", "model"):
        module = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if module is not None:
            candidates.append(module)
    for module in candidates:
        if _is_layer_stack(getattr(module, "layers", None)):
            return DecoderParts(module, module.layers, module.config)
    for _, module in model.named_modules():
        if _is_layer_stack(getattr(module, "layers", None)) and hasattr(module, "config"):
            return DecoderParts(module, module.layers, module.config)
    raise RuntimeError(
        f"could not find the text decoder layers of {type(model).__name__}: expected get_decoder().layers "
        "or a ModuleList of layers with self_attn.layer_idx"
    )


def config_path(root: object, target: object) -> list[str] | None:
    """Sub-config keys leading from ``root`` to ``target`` (by identity), breadth first.

    ``[]`` when they are the same object, e.g. ``["thinker_config", "text_config"]`` for the
    text config of Qwen2.5-Omni's full model; None when ``target`` is not in ``root``'s tree.
    """
    queue = [(root, [])]
    while queue:
        config, path = queue.pop(0)
        if config is target:
            return path
        for key in getattr(config, "sub_configs", {}) or {}:
            child = getattr(config, key, None)
            if child is not None:
                queue.append((child, path + [key]))
    return None


def attention_module(layer: torch.nn.Module) -> torch.nn.Module:
    """A decoder layer's attention module; RuntimeError where it has none."""
    module = attention_of(layer)
    if module is None:
        raise RuntimeError(f"decoder layer {type(layer).__name__} has no attention module with a layer_idx")
    return module


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The text decoder's layers of ``model``, index = layer index (``layer_idx``)."""
    return find_decoder(model).layers


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each text decoder layer's attention module, in layer order: ``attention_modules(model)[l]``
    is layer l's (its ``v_proj``, ``k_proj``... are the projections a forward hook can edit)."""
    return [attention_module(layer) for layer in decoder_layers(model)]


def set_text_attention(model: torch.nn.Module, parts: DecoderParts, name: str) -> None:
    """Switch the text decoder's attention implementation only; vision/audio towers keep theirs.

    The request names the text config by its place in the model's sub-config tree: the
    plain name for a text-only model, {"text_config": name} for a VLM, and
    {"thinker_config": {"text_config": name}} for Qwen2.5-Omni's full model (whose top
    config has no text_config: a plain name there would switch every tower).
    """
    path = config_path(model.config, parts.config)
    if path is None:  # the decoder's config is not a registered sub-config: address the decoder itself
        parts.decoder.set_attn_implementation(name)
        return
    request: str | dict = name
    for key in reversed(path):
        request = {key: request}
    model.set_attn_implementation(request)
