"""Find the text decoder and its layers in any Hugging Face causal (V)LM.

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


def _attention_of(layer: torch.nn.Module) -> torch.nn.Module | None:
    for name in ("self_attn", "attention", "attn"):
        module = getattr(layer, name, None)
        if module is not None and hasattr(module, "layer_idx"):
            return module
    return None


def _is_layer_stack(candidate: object) -> bool:
    return (
        isinstance(candidate, torch.nn.ModuleList)
        and len(candidate) > 0
        and all(_attention_of(layer) is not None for layer in candidate)
    )


def find_decoder(model: torch.nn.Module) -> DecoderParts:
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
    module = _attention_of(layer)
    if module is None:
        raise RuntimeError(f"decoder layer {type(layer).__name__} has no attention module with a layer_idx")
    return module


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
