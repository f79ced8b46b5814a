"""``python -m outro_sweep.fit [-m] key=value ...``: train LSG gates (conf/fit.yaml); a layer
sweep (``-m lsg.layer=3,6,10``) runs one fit per layer through the configured launcher."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from outro_sweep.config.command_line import CONF_DIR, check_group_choices
from outro_sweep.errors import ConfigError, exit_on_config_error, one_line_error
from outro_sweep.fit.train import fit_gate
from outro_sweep.sweep.slurm_launcher import register_launcher


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fit")
def _run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    # Deferred on purpose: torch and transformers load after the command line is checked.
    from outro_sweep.fit.summary import write_fit_status

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    layer = cfg.lsg.get("layer")
    try:
        gate, trained = fit_gate(cfg)
    except ConfigError as err:
        write_fit_status(job_dir, "failed", layer=layer, error=str(err))
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as err:  # the traceback still reaches the log; the sweep's summary counts it
        write_fit_status(job_dir, "failed", layer=layer, error=one_line_error(err))
        raise
    write_fit_status(job_dir, "trained" if trained else "done", layer=layer, gate=str(gate))


def main() -> None:
    register_launcher()  # hydra/launcher=slurm: a layer sweep of fits is one job array
    with exit_on_config_error():
        check_group_choices(sys.argv[1:])
    _run()


if __name__ == "__main__":
    main()
