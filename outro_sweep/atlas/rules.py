"""Every sink rule of conf/sink, per layer: where its sinks are, how often, and where the rules agree.

Each rule is built from its own YAML (``conf/sink/<name>.yaml``, its ``_target_``), so a rule
added there is in the atlas with no change here. Per layer l and rule r, over prompts:

    rate[r][l]      = share of prompts with at least one sink at l
    count[r][l]     = mean number of sinks per prompt at l
    positions[r][l] = the most frequent sink positions, with the share of prompts
    agreement[r|s][l] = |S_r & S_s| / |S_r | S_s|  over every (prompt, token) at l (Jaccard; null if neither fires)

A rule that cannot run on this model (``sink_dims`` without dims) is listed with its reason.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from outro_sweep.atlas.capture import LayerView
from outro_sweep.errors import ConfigError

TOP_POSITIONS = 5


def rule_configs(conf_dir: Path) -> dict[str, dict]:
    """name -> the rule's YAML as a plain dict, for every file of ``conf_dir/sink``."""
    paths = sorted((conf_dir / "sink").glob("*.yaml"))
    return {path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in paths}


def sinks_at(rule, view: LayerView) -> torch.Tensor:
    """(n,) bool: the rule's sinks of the prompt at the view's layer."""
    if rule.needs_attention_probs:
        return rule.from_attention(view.probs)
    return rule.from_hidden(view.hidden)


class RuleSinks:
    name = "rules"

    def __init__(self, layers: int, configs: dict[str, dict], sink_dims: list[int]) -> None:
        self.rules, self.skipped = {}, {}
        for name, node in configs.items():
            try:
                rule = instantiate(node)
                rule.configure(list(sink_dims))
            except ConfigError as err:
                self.skipped[name] = str(err)
                continue
            self.rules[name] = rule
        self.prompts = 0
        self.hits = {name: [0] * layers for name in self.rules}  # rule -> [layer] prompts with a sink
        self.counts = {name: [0] * layers for name in self.rules}  # rule -> [layer] sinks summed over prompts
        self.positions = {name: [Counter() for _ in range(layers)] for name in self.rules}
        # pair -> [layer] [intersection, union] summed over prompts
        self.overlap = {pair: [[0, 0] for _ in range(layers)] for pair in combinations(self.rules, 2)}

    def add(self, view: LayerView) -> None:
        self.prompts += view.layer == 0
        layer = view.layer
        found = {name: sinks_at(rule, view).cpu() for name, rule in self.rules.items()}
        for name, sinks in found.items():
            self.hits[name][layer] += int(bool(sinks.any()))
            self.counts[name][layer] += int(sinks.sum())
            self.positions[name][layer].update(sinks.nonzero().flatten().tolist())
        for (a, b), per_layer in self.overlap.items():
            per_layer[layer][0] += int((found[a] & found[b]).sum())
            per_layer[layer][1] += int((found[a] | found[b]).sum())

    def result(self) -> dict:
        prompts = max(self.prompts, 1)
        rules = {}
        for name in self.rules:
            rate = [hits / prompts for hits in self.hits[name]]
            rules[name] = {
                "rate": rate,
                "count": [count / prompts for count in self.counts[name]],
                "positions": [[{"position": pos, "share": n / prompts} for pos, n in counter.most_common(TOP_POSITIONS)]
                              for counter in self.positions[name]],
            }
        agreement = {f"{a}|{b}": [inter / union if union else None for inter, union in per_layer]
                     for (a, b), per_layer in self.overlap.items()}
        return {"rules": rules, "skipped": self.skipped, "agreement": agreement}
