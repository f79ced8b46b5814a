"""The atlas's figures (PNG, matplotlib's Agg canvas), one per analysis, layers on the x axis.
Every title names the model, the prompts and the identity.

- ``massive.png``: top-1/2/3 and median |h| per layer, log scale (Sun et al.'s figure);
- ``sink_dims.png``: the share of prompts in which each found dimension is a sink dim, per layer;
- ``first_token_attention.png``: first-token attention mass per head (heat map) and Gu et
  al.'s sink rate per layer;
- ``rules.png``: each rule's sink rate per layer, and the rules' agreement (Jaccard) per layer;
- ``value_share.png``: OutRo's (ii), the mean cosine of non-sink head outputs to the sink value
  and the sink value's share of the head output, per layer;
- ``modality.png`` (video and omni models): the max |h| of text, visual and audio tokens and
  the configured rule's sinks among them, with the L-sinks, per layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from outro_sweep.report.plots import DPI, new_figure  # the report's canvas and resolution


def _title(atlas: dict, what: str) -> str:
    return f"{what}\nmodel={atlas['model']}, {atlas['prompts']} prompts, atlas {atlas['identity']}"


def _layers_axis(axes, layers: int) -> None:
    axes.set_xlabel("layer (residual stream entering it)", fontsize=11)
    axes.set_xticks(range(0, layers, max(1, layers // 15)))
    axes.tick_params(labelsize=10)
    axes.grid(alpha=0.3)


def massive(atlas: dict, path: Path) -> Path:
    result = atlas["massive"]
    top = np.array(result["top3"])
    layers = np.arange(len(top))
    figure = new_figure(9, 4.8)
    axes = figure.add_subplot()
    for rank, marker in zip(range(top.shape[1]), "o^s"):
        axes.plot(layers, top[:, rank], marker=marker, label=f"top-{rank + 1} |h|")
    axes.plot(layers, result["median"], marker="x", color="black", label="median |h|")
    axes.set_yscale("log")
    axes.set_ylabel("|h| (mean over prompts)", fontsize=11)
    _layers_axis(axes, len(top))
    axes.legend(fontsize=9)
    axes.set_title(_title(atlas, "Massive activations (Sun et al.)"), fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def sink_dims(atlas: dict, path: Path) -> Path:
    result = atlas["dims"]
    dims = sorted({int(d) for layer in result["per_layer"] for d in layer}, key=int)[:20]
    layers = len(result["per_layer"])
    figure = new_figure(9, max(3.2, 1.6 + 0.3 * len(dims)))
    axes = figure.add_subplot()
    if dims:
        grid = np.array([[result["per_layer"][layer].get(str(d), 0.0) for layer in range(layers)] for d in dims])
        image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        axes.set_yticks(range(len(dims)), [str(d) for d in dims])
        figure.colorbar(image, ax=axes, label="share of prompts")
    else:
        axes.text(0.5, 0.5, "no sink dimension found at any layer", ha="center", va="center", transform=axes.transAxes)
    axes.set_ylabel("hidden dimension", fontsize=11)
    _layers_axis(axes, layers)
    axes.grid(False)
    axes.set_title(_title(atlas, f"Sink dimensions (Kang et al.): |h/RMS(h)| > {result['tau']:g} on few tokens; "
                                 f"model dims {result['dims']}"), fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def first_token_attention(atlas: dict, path: Path) -> Path:
    result = atlas["attention"]
    mass = result["mass_per_head"]
    heads = max(len(m) for m in mass)
    grid = np.full((heads, len(mass)), np.nan)
    for layer, per_head in enumerate(mass):
        grid[: len(per_head), layer] = per_head
    figure = new_figure(9, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    image = top.imshow(grid, aspect="auto", cmap="magma", vmin=0, vmax=1)
    top.set_ylabel("head", fontsize=11)
    figure.colorbar(image, ax=top, label="mean attention to token 0")
    top.set_title(_title(atlas, "First-token attention mass per head; Gu et al.'s sink rate"), fontsize=11)
    bottom.plot(range(len(mass)), result["sink_rate"], marker="o",
                label=f"sink rate (heads with mass > {result['eps']:g})")
    bottom.plot(range(len(mass)), result["mass"], marker="x", label="mean mass over heads")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("share", fontsize=11)
    bottom.legend(fontsize=9)
    _layers_axis(bottom, len(mass))
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def rules(atlas: dict, path: Path) -> Path:
    result = atlas["rules"]
    figure = new_figure(9, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    layers = len(atlas["massive"]["median"])
    for name, rule in result["rules"].items():
        top.plot(range(layers), rule["rate"], marker="o", label=name)
    top.set_ylabel("share of prompts with a sink", fontsize=11)
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=9, loc="center right")
    top.grid(alpha=0.3)
    skipped = "; ".join(f"{name} not run" for name in result["skipped"])
    top.set_title(_title(atlas, "Sinks per rule (conf/sink)" + (f" — {skipped}" if skipped else "")), fontsize=11)
    for pair, values in result["agreement"].items():
        bottom.plot(range(layers), [np.nan if v is None else v for v in values], marker=".",
                    label=pair.replace("|", " & "))
    bottom.set_ylabel("agreement (Jaccard)", fontsize=11)
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=8, ncol=2)
    _layers_axis(bottom, layers)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def value_share(atlas: dict, path: Path) -> Path:
    result = atlas["value_share"]
    layers = len(atlas["massive"]["median"])
    figure = new_figure(9, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    values = {key: [np.nan if v is None else v for v in result[key]] for key in ("cosine", "share")}
    top.plot(range(layers), values["cosine"], marker="o")
    bottom.plot(range(layers), values["share"], marker="o", color="tab:orange")
    top.set_ylabel("cos(head output,\nsink value)", fontsize=11)
    top.grid(alpha=0.3)
    bottom.set_ylabel("|sink value| share\nof head output", fontsize=11)
    _layers_axis(bottom, layers)
    top.set_title(_title(atlas, f"OutRo (ii): non-sink head outputs vs the sink value (sinks: {result['rule']}; "
                                "gaps: no sink)"), fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def modality(atlas: dict, path: Path) -> Path | None:
    """Video and omni models only: per modality, the max |h| and the rule's sinks per layer."""
    result = atlas["modality"]
    if not result["measured"]:
        return None
    layers = len(atlas["massive"]["median"])
    figure = new_figure(9, 6.5)
    top, bottom = figure.subplots(2, 1, sharex=True)
    present = [m for m, count in result["tokens"].items() if count > 0]
    for name in present:
        top.plot(range(layers), [np.nan if v is None else v for v in result["top"][name]], marker="o", label=name)
        bottom.plot(range(layers), result["sinks"][name], marker="o", label=f"{name} sinks")
    bottom.plot(range(layers), result["lsinks"], marker="x", linestyle="--", color="black",
                label="L-sinks (visual, not V-sinks)")
    top.set_yscale("log")
    top.set_ylabel("max |h| (mean over prompts)", fontsize=11)
    top.legend(fontsize=9)
    top.grid(alpha=0.3)
    bottom.set_ylabel(f"sinks per prompt ({result['rule']})", fontsize=11)
    bottom.legend(fontsize=9)
    _layers_axis(bottom, layers)
    tokens = ", ".join(f"{m} {result['tokens'][m]:.0f}" for m in present)
    top.set_title(_title(atlas, f"By modality (tokens per prompt: {tokens}; V-sinks per prompt "
                                f"{result['vsinks']:.1f})"), fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


DRAWERS = {"massive.png": massive, "sink_dims.png": sink_dims, "first_token_attention.png": first_token_attention,
           "rules.png": rules, "value_share.png": value_share, "modality.png": modality}


def draw_all(atlas: dict, directory: Path) -> list[Path]:
    """Every figure that applies (``modality.png`` for video and omni models only)."""
    drawn = [draw(atlas, directory / name) for name, draw in DRAWERS.items()]
    return [path for path in drawn if path is not None]
