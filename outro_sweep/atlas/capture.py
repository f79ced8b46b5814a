"""One forward per prompt with everything the analyses read, as a ``Sample``.

Prompts go one at a time (no padding, so every position is a real token and a row's numbers
never depend on the rest of a batch). The pass uses eager attention, the only path that
returns attention probabilities (Gu et al.'s metric and ``sink=attention_mass`` need them).
``FORWARDS`` counts the forwards of this process: a cached atlas runs none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FORWARDS = 0  # forward passes run by ``capture`` in this process


@dataclass
class Sample:
    """One prompt's tensors, real tokens only (n of them), L decoder layers, float32 on CPU."""

    hidden: list[torch.Tensor]  # L x (n, D): the residual stream ENTERING layer l (what sink rules read)
    probs: list[torch.Tensor]  # L x (H, n, n): attention probabilities, query x key
    head_out: list[torch.Tensor] | None  # L x (n, H, d): each head's attention output (o_proj's input)
    values: list[torch.Tensor] | None  # L x (n, H_kv, d): value vectors (v_proj's output)
    tokens: list[str] = field(default_factory=list)  # the n token strings
    modality: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n,) bool (video models)
    vsinks: torch.Tensor | None = None  # (n,) bool: V-sinks (vision-tower sink patches), video models


def attention_modules(model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module] | None:
    """The decoder's attention modules in layer order (those with ``v_proj`` and ``o_proj``
    named ``self_attn``; a vision tower's are named otherwise), or None where they cannot be
    told apart (then OutRo's value share is not measured)."""
    found = [m for name, m in model.named_modules()
             if name.endswith("self_attn") and hasattr(m, "v_proj") and hasattr(m, "o_proj")]
    return found if len(found) == num_layers else None


class _Recorder:
    """Forward hooks on every attention module: its value vectors and its per-head outputs."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.values: list[torch.Tensor | None] = [None] * len(modules)
        self.heads: list[torch.Tensor | None] = [None] * len(modules)
        self.handles = []
        for index, module in enumerate(modules):
            self.handles.append(module.v_proj.register_forward_hook(self._value(index)))
            self.handles.append(module.o_proj.register_forward_pre_hook(self._head(index)))

    def _value(self, index):
        def hook(module, args, output):
            self.values[index] = output[0].detach().float()  # (n, H_kv * d)
        return hook

    def _head(self, index):
        def hook(module, args):
            self.heads[index] = args[0][0].detach().float()  # (n, H * d)
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def capture(loaded, inputs: dict, num_layers: int) -> Sample:
    """Run one prompt (``inputs``: the loader's batch of one row, no padding) and collect its
    ``Sample``. The model must have been loaded with eager attention."""
    global FORWARDS
    modules = attention_modules(loaded.model, num_layers)
    recorder = _Recorder(modules) if modules is not None else None
    try:
        with torch.no_grad():
            out = loaded.model(**inputs, output_hidden_states=True, output_attentions=True)
    finally:
        if recorder is not None:
            recorder.remove()
    FORWARDS += 1
    if out.attentions is None or any(a is None for a in out.attentions):
        raise RuntimeError("the atlas needs attention probabilities; the model returned none (not eager attention)")
    hidden = [h[0].detach().float() for h in out.hidden_states[:num_layers]]
    probs = [a[0].detach().float() for a in out.attentions]
    head_out = values = None
    if recorder is not None and all(v is not None for v in recorder.values):
        heads, dim = probs[0].shape[0], None
        config = getattr(loaded.model.config, "get_text_config", lambda: loaded.model.config)()
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        head_out = [h.reshape(h.shape[0], heads, dim) for h in recorder.heads]
        values = [v.reshape(v.shape[0], -1, dim) for v in recorder.values]
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    return Sample(hidden=hidden, probs=probs, head_out=head_out, values=values, tokens=tokens)
