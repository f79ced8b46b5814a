"""``python -m outro_sweep.fit [-m] key=value ...``: train LSG gates (conf/fit.yaml); a layer
sweep (``-m lsg.layer=3,6,10``) runs one fit per layer through the configured launcher."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from outro_sweep.errors import ConfigError
from outro_sweep.sweep.cli import CONF_DIR, check_group_choices


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fit")
def _run(cfg: DictConfig) -> None:
    from outro_sweep.fit.train import fit_gate

    try:
        fit_gate(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    _run()


if __name__ == "__main__":
    main()
