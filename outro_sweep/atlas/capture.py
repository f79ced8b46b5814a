"""One forward per prompt, handed to the analyses ONE LAYER AT A TIME (a ``LayerView``).

Prompts go one at a time (no padding, so every position is a real token and a prompt's numbers
never depend on other prompts). The model runs with eager attention, the only path that yields
attention probabilities (Gu et al.'s metric and ``sink=attention_mass`` need them). Hooks on
each decoder layer catch, as the layer runs, the residual stream entering it, its attention
probabilities (the eager attention's second output), its value vectors and its per-head
outputs; the view is consumed before the next layer runs and then dropped, so memory holds one
layer's (H, n, n) probabilities, not L of them (what ``output_attentions=True`` would keep: tens
of GB for a 7B video model at a few thousand tokens). ``FORWARDS`` counts the forwards of this
process: a cached atlas runs none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

FORWARDS = 0  # forward passes run by ``capture`` in this process


@dataclass
class LayerView:
    """One prompt at one decoder layer, real tokens only (n of them), float32 on CPU."""

    layer: int
    hidden: torch.Tensor  # (n, D): the residual stream ENTERING the layer (what sink rules read)
    probs: torch.Tensor  # (H, n, n): attention probabilities, query x key
    head_out: torch.Tensor  # (n, H, d): each head's attention output (o_proj's input)
    values: torch.Tensor  # (n, H_kv, d): value vectors (v_proj's output)
    tokens: list[str] = field(default_factory=list)  # the n token strings
    modality: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n,) bool (video models)
    vsinks: torch.Tensor | None = None  # (n,) bool: V-sinks (vision-tower sink patches), video models


def decoder_attention(model: torch.nn.Module, num_layers: int) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(decoder layer, its attention) in layer order: the modules named ``self_attn`` with
    ``v_proj`` and ``o_proj`` (a vision tower's attention is named and built otherwise)."""
    found = [(model.get_submodule(name.rsplit(".", 1)[0]), module) for name, module in model.named_modules()
             if name.endswith(".self_attn") and hasattr(module, "v_proj") and hasattr(module, "o_proj")]
    if len(found) != num_layers:
        raise RuntimeError(f"found {len(found)} decoder attention modules for {num_layers} layers")
    return found


def head_dim(model: torch.nn.Module) -> int:
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def capture(loaded, inputs: dict, num_layers: int, consume: Callable[[LayerView], None],
            describe: Callable[[], tuple[dict, torch.Tensor | None]] | None = None) -> None:
    """Run one prompt (``inputs``: the loader's batch of one row, no padding) and call
    ``consume`` with each layer's view as the layer runs. ``describe()``, called at the first
    layer (the vision tower has run by then), gives the prompt's modality masks and V-sinks."""
    global FORWARDS
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    prompt = {"tokens": tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())}
    dim = head_dim(loaded.model)
    handles = []
    for index, (layer, attention) in enumerate(decoder_attention(loaded.model, num_layers)):
        seen: dict = {}

        def entering(_module, args, kwargs, seen=seen):
            hidden = args[0] if args else kwargs["hidden_states"]
            seen["hidden"] = hidden[0].detach().float().cpu()

        def value(_module, _args, output, seen=seen):
            seen["values"] = output[0].detach().float().cpu()  # (n, H_kv * d)

        def heads(_module, args, seen=seen):
            seen["heads"] = args[0][0].detach().float().cpu()  # (n, H * d)

        def done(_module, _args, output, seen=seen, index=index):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError("the atlas needs attention probabilities; the model returned none "
                                   "(not eager attention)")
            if index == 0 and describe is not None:
                prompt["modality"], prompt["vsinks"] = describe()
            probs = weights[0].detach().float().cpu()  # (H, n, n)
            n = probs.shape[-1]
            consume(LayerView(layer=index, hidden=seen.pop("hidden"), probs=probs,
                              head_out=seen.pop("heads").reshape(n, probs.shape[0], dim),
                              values=seen.pop("values").reshape(n, -1, dim), tokens=prompt["tokens"],
                              modality=prompt.get("modality", {}), vsinks=prompt.get("vsinks")))

        handles += [layer.register_forward_pre_hook(entering, with_kwargs=True),
                    attention.v_proj.register_forward_hook(value),
                    attention.o_proj.register_forward_pre_hook(heads),
                    attention.register_forward_hook(done)]
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    FORWARDS += 1
