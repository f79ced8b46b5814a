"""The key of a cell's group, defined once.

A group is the cells of a sweep that share model, benchmark and media sampling and differ only
in intervention settings: what they have in common is exactly their stock-model baseline, so a
group's key is the identity of that baseline. The sweeper orders and the launchers pack cells by
it, and a process that runs the cells of one group one after another can share the model, the
decoded clips and everything computed below the first layer any intervention can change.
"""

from __future__ import annotations

from outro_sweep.cell.baseline import baseline_identity


def group_key(config: dict) -> str:
    """The group of the cell whose resolved plain config is ``config``: the identity of its
    baseline (every intervention off), which is the baseline's own identity for a baseline."""
    return baseline_identity(config)
