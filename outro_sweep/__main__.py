"""``python -m outro_sweep [-m] key=value ...``: run one cell, or a sweep of cells.

The command line is refused in one line before Hydra starts where it can be
(``preflight.command_line``); then Hydra composes each cell and runs ``run_cell`` on it, here
or through the sweeper and launchers of ``outro_sweep.sweep``.
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from outro_sweep.cell.job_names import cell_dirname
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.errors import ConfigError, RunError
from outro_sweep.files import masked_output
from outro_sweep.predict.interruption import Interrupted, interrupted, stop_line
from outro_sweep.preflight.command_line import preflight, with_dry_run_launcher
from outro_sweep.sweep.secret_overrides import move_secrets_to_environment
from outro_sweep.sweep.slurm_launcher import register_launcher
from outro_sweep.sweep.sweeper import register_plugin

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    # Deferred on purpose: torch and transformers load after the command line is checked.
    from outro_sweep.predict.distributed import check_launcher_environment
    from outro_sweep.run_cell import run_cell

    masked_output.install()  # a submitit job runs here in a fresh process
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        check_launcher_environment()
    except ConfigError as err:  # the process's environment, not the cell's: every cell here would fail alike
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        metrics = run_cell(cfg)
    except Interrupted as stop:  # SIGTERM/SIGINT outside SLURM: shards kept, no FAILED marker
        print(stop_line(stop), file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except (ConfigError, RunError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        if sweeping:  # one bad or busy cell does not stop the sweep; the summary counts it
            return None
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    except Exception:
        if interrupted():
            # Requeued, preempted or timed out: leave without a result, so that submitit does
            # not report the task as finished; the requeued task resumes the cell.
            log.warning("cell interrupted (requeue, preemption or time limit): its shards are kept for the resume")
            raise SystemExit(-1) from None
        if sweeping:  # the cell wrote its FAILED marker; the other cells go on
            log.exception("cell failed")
            return None
        raise
    return metrics.get("accuracy")




def main() -> None:
    masked_output.install()
    register_plugin()  # before the pre-flight composition: hydra/sweeper and hydra/launcher name them
    register_launcher()
    try:
        sys.argv = [sys.argv[0], *with_dry_run_launcher(move_secrets_to_environment(sys.argv[1:]))]
        preflight(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if not OmegaConf.has_resolver("cell_dirname"):
        OmegaConf.register_new_resolver("cell_dirname", cell_dirname)
    try:
        _run()
    except (Interrupted, KeyboardInterrupt) as stop:  # between cells, or before the first one starts
        stop = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
        print(f"{stop}: rerun to resume", file=sys.stderr)
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
