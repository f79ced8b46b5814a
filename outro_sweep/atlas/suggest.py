"""The atlas as a suggested sweep.

A rule "has sinks" at a layer when at least ``atlas.min_rate`` of the prompts have one there.
OutRo relaxes sinks only at layers 0..L-3 (its scan range), so relaxation layers are chosen
there: the first ``atlas.suggest_layers`` layers with sinks under the configured rule
(``sink=...``), every ``atlas.suggest_step``-th from its first.
"""

from __future__ import annotations

SCAN_MARGIN = 2  # OutRo scans layers 0..L-3: the last two layers are never relaxation layers


def sink_layers(rate: list[float], min_rate: float) -> list[int]:
    return [layer for layer, value in enumerate(rate) if value >= min_rate]


def suggest(atlas: dict, rule: str, model: str, min_rate: float, count: int, step: int) -> dict:
    """``atlas``: the JSON's analyses; ``rule``: the configured sink rule's name. ``lines()``
    of the result is what is printed and saved."""
    rules = atlas["rules"]["rules"]
    layers = len(atlas["massive"]["median"])
    first = {name: next(iter(sink_layers(r["rate"], min_rate)), None) for name, r in rules.items()}
    scannable = [layer for layer in sink_layers(rules[rule]["rate"], min_rate) if layer < layers - SCAN_MARGIN] \
        if rule in rules else []
    relax: list[int] = []
    for layer in scannable:
        if len(relax) == count:
            break
        if not relax or layer - relax[-1] >= step:
            relax.append(layer)
    dims = atlas["dims"]["dims"]
    if relax:
        command = (f"python -m outro_sweep -m model={model} sink={rule} outro.layer={','.join(map(str, relax))}")
        line = f"sinks from layer {relax[0]}: try outro.layer={','.join(map(str, relax))} ({rule}); sink dims {dims}"
    else:
        command = ""
        line = f"no layer has sinks under {rule} in {min_rate:.0%} of the prompts; sink dims {dims}"
    rules_line = "first layer with sinks: " + ", ".join(
        f"{name} {'none' if layer is None else layer}" for name, layer in first.items())
    return {"rule": rule, "first_layer": first, "rules_line": rules_line, "relax_layers": relax, "sink_dims": dims, "command": command,
            "line": line, "min_rate": min_rate}


def lines(suggestion: dict) -> list[str]:
    """What the CLI prints and suggestion.txt holds: the suggestion, every rule's first layer
    with sinks, and the command (where there is one)."""
    return [suggestion["line"], suggestion["rules_line"]] + ([suggestion["command"]] if suggestion["command"] else [])
