"""The atlas by modality, for video and omni models: text, visual and audio tokens apart.

Visual positions and V-sinks come from ``interventions.vision_sinks.VisionSinkProbe`` (the
vision tower's output mapped to the LLM's video placeholders; V-sinks by ``model.vsink_dims``
and ``model.vsink_tau``); audio positions are the audio placeholders (the Omni thinker's
``audio_token_id``); text is every other token. Per layer l and modality m, over prompts:

    top[m][l]    = mean over prompts of max |h| over m's tokens (null where a prompt has none)
    carrier[l]   = share of prompts whose top-1 |h| (over all tokens) is an m token
    sinks[m][l]  = mean number of m tokens the configured rule (``sink=``) flags
    lsinks[l]    = mean number of L-sinks: visual tokens the rule flags that are not V-sinks
    vsinks       = mean number of V-sinks per prompt
"""

from __future__ import annotations

import torch

from outro_sweep.atlas.capture import LayerView
from outro_sweep.atlas.rules import sinks_at

MODALITIES = ("text", "visual", "audio")
AUDIO_TOKEN_KEYS = ("audio_token_id", "audio_token_index")


def probe_for(loaded):
    """A ``VisionSinkProbe`` over a video model, None for a text model."""
    if not hasattr(loaded.loader, "vsink_dims"):
        return None
    # Deferred on purpose: it imports torch.
    from outro_sweep.interventions.vision_sinks import VisionSinkProbe

    return VisionSinkProbe(loaded)


def describe(probe, inputs: dict, config) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(modality masks, V-sinks), each (n,) bool, from the probe during this prompt's forward
    (once the vision tower has run)."""
    n = inputs["input_ids"].shape[1]
    visual = torch.zeros(n, dtype=torch.bool)
    visual[probe.visual_positions()[0].cpu()] = True
    vsinks = torch.zeros(n, dtype=torch.bool)
    vsinks[probe.vsink_positions()[0].cpu()] = True
    audio = torch.zeros(n, dtype=torch.bool)
    config = getattr(config, "thinker_config", config)
    audio_id = next((getattr(config, key) for key in AUDIO_TOKEN_KEYS if getattr(config, key, None) is not None), None)
    if audio_id is not None:
        audio = inputs["input_ids"][0].cpu() == audio_id
    return {"text": ~(visual | audio), "visual": visual, "audio": audio}, vsinks


class ByModality:
    name = "modality"

    def __init__(self, layers: int, rule) -> None:
        self.rule = rule
        self.top = {m: [[] for _ in range(layers)] for m in MODALITIES}  # m -> [layer] per-prompt max |h|
        self.carrier = {m: [0] * layers for m in MODALITIES}  # m -> [layer] prompts whose top-1 is an m token
        self.sinks = {m: [0] * layers for m in MODALITIES}  # m -> [layer] summed counts
        self.lsinks = [0] * layers
        self.vsinks = 0
        self.tokens = {m: 0 for m in MODALITIES}
        self.prompts = 0

    def add(self, view: LayerView) -> None:
        if not view.modality:
            return
        layer = view.layer
        if layer == 0:
            self.prompts += 1
            self.vsinks += int(view.vsinks.sum())
            for m in MODALITIES:
                self.tokens[m] += int(view.modality[m].sum())
        magnitude = view.hidden.abs().amax(dim=-1)  # (n,) max |h| per token
        top_token = int(magnitude.argmax())
        flagged = sinks_at(self.rule, view).cpu()
        for m in MODALITIES:
            mask = view.modality[m]
            if mask.any():
                self.top[m][layer].append(float(magnitude[mask].max()))
            self.carrier[m][layer] += int(bool(mask[top_token]))
            self.sinks[m][layer] += int((flagged & mask).sum())
        self.lsinks[layer] += int((flagged & view.modality["visual"] & ~view.vsinks).sum())

    def result(self) -> dict:
        if not self.prompts:
            return {"measured": False}
        prompts = self.prompts
        return {
            "measured": True, "rule": self.rule.name, "prompts": prompts,
            "tokens": {m: self.tokens[m] / prompts for m in MODALITIES},
            "top": {m: [sum(v) / len(v) if v else None for v in self.top[m]] for m in MODALITIES},
            "carrier": {m: [c / prompts for c in self.carrier[m]] for m in MODALITIES},
            "sinks": {m: [c / prompts for c in self.sinks[m]] for m in MODALITIES},
            "lsinks": [c / prompts for c in self.lsinks],
            "vsinks": self.vsinks / prompts,
        }
