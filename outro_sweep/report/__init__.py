"""Sweep report: "is the gain real?" — paired significance of every cell with an intervention on
against its baseline, heatmaps over each intervention's sweep axes (outro.layer x outro.alpha
for OutRo), per-category and sink diagnostics, the verdict lines, and a W&B report run.

    python -m outro_sweep.report outputs/multirun/<date>/<time> [more sweeps] [--holm]
    python -m outro_sweep.report --cells outputs/cells/<id> ... --out <folder>

Modules, one job each: ``collect`` (find cells and their state), ``settings`` (labels, grid
axes, baseline identity), ``baselines`` (match each cell to its baseline), ``paired``
(statistics), ``analysis`` (the numbers per cell), ``tables`` / ``categories`` (markdown and
CSV), ``plots`` (PNG figures), ``verdict`` (one line per comparison), ``wandb_report`` (the
W&B run), ``build`` (``write_report``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ReportError", "write_report"]


def write_report(sweep_dirs: list[Path], out: Path | None = None, holm: bool = False, wandb_mode: str = "offline",
                 **kwargs) -> Path:
    """See ``outro_sweep.report.build.write_report`` (imported lazily: this package is imported
    by the sweep's end-of-run callback, which should not pay for numpy/matplotlib unless used)."""
    from outro_sweep.report.build import write_report as write

    return write(sweep_dirs, out, holm, wandb_mode, **kwargs)


def __getattr__(name: str):
    if name == "ReportError":
        from outro_sweep.report.build import ReportError

        return ReportError
    raise AttributeError(name)
