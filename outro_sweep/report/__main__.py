"""``python -m outro_sweep.report SWEEP_DIR [SWEEP_DIR ...] [--cells CELL ...] [--out DIR] [--holm]
[--wandb-mode offline|online|disabled] [--saturate 0.05]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from outro_sweep.config.run_settings import MODES
from outro_sweep.report.build import ReportError, write_report
from outro_sweep.report.headline import report_line
from outro_sweep.report.plots import SATURATE


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m outro_sweep.report",
        description="Report on finished or partial sweeps: accuracy with Wilson CIs, the paired difference from "
                    "each cell's baseline, every intervention off (Newcombe CI, exact McNemar), heatmaps, per-category and "
                    "sink figures, and a W&B report run.")
    parser.add_argument("sweeps", nargs="*", type=Path, help="sweep folders (outputs/multirun/<date>/<time>)")
    parser.add_argument("--cells", nargs="+", type=Path, default=[],
                        help="cell folders (outputs/cells/<identity>); put sweep folders before --cells")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: <first sweep>/report, or <output_dir>/reports/cells-<hash>)")
    parser.add_argument("--holm", action="store_true",
                        help="Holm-adjust the McNemar p-values over every comparison in the report")
    parser.add_argument("--wandb-mode", choices=MODES, default="offline", help="the W&B report run (default offline)")
    parser.add_argument("--saturate", type=float, default=SATURATE,
                        help="accuracy difference (a fraction: 0.05 = 5 pp, the default) at which the heatmaps' "
                             "colours saturate; larger differences are clipped and marked")
    args = parser.parse_args(argv)
    if not args.sweeps and not args.cells:
        parser.error("give at least one sweep folder or --cells")
    if not 0 < args.saturate <= 1:
        parser.error(f"--saturate={args.saturate:g} is invalid: valid values are fractions of accuracy in (0, 1], "
                     "e.g. 0.05 for 5 pp")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        out = write_report(args.sweeps, args.out, holm=args.holm, wandb_mode=args.wandb_mode, cells=args.cells,
                           saturate=args.saturate)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report_line(out, args.holm), flush=True)
    return 0


if __name__ == "__main__":
    from outro_sweep.files import masked_output

    masked_output.install()  # the console is an output: credentials masked, as in every command
    sys.exit(main())
