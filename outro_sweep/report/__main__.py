"""``python -m outro_sweep.report SWEEP_DIR [SWEEP_DIR ...] [--cells CELL ...] [--out DIR] [--holm]
[--wandb-mode offline|online|disabled] [--bootstrap N] [--seed S]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from outro_sweep.report.paired import DEFAULT_RESAMPLES, DEFAULT_SEED
from outro_sweep.report.wandb_report import MODES


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m outro_sweep.report",
        description="Report on finished or partial sweeps: accuracy with Wilson CIs, the paired difference from "
                    "each cell's baseline, every intervention off (bootstrap CI, exact McNemar), heatmaps, per-category and "
                    "sink figures, and a W&B report run.")
    parser.add_argument("sweeps", nargs="*", type=Path, help="sweep folders (outputs/multirun/<date>/<time>)")
    parser.add_argument("--cells", nargs="+", type=Path, default=[],
                        help="cell folders (outputs/cells/<identity>); put sweep folders before --cells")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default: <first sweep>/report, or <output_dir>/reports/cells-<hash>)")
    parser.add_argument("--holm", action="store_true",
                        help="Holm-adjust the McNemar p-values over every comparison in the report")
    parser.add_argument("--wandb-mode", choices=MODES, default="offline", help="the W&B report run (default offline)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    if not args.sweeps and not args.cells:
        parser.error("give at least one sweep folder or --cells")
    if args.bootstrap < 1:
        parser.error("--bootstrap must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from outro_sweep.report.build import ReportError, write_report
    from outro_sweep.report.headline import report_line

    try:
        out = write_report(args.sweeps, args.out, holm=args.holm, wandb_mode=args.wandb_mode, cells=args.cells,
                           n_resamples=args.bootstrap, seed=args.seed)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report_line(out, args.holm), flush=True)
    return 0


if __name__ == "__main__":
    from outro_sweep.cell import masked_output

    masked_output.install()  # the console is an output: credentials masked, as in every command
    sys.exit(main())
