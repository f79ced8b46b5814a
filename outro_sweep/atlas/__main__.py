"""``python -m outro_sweep.atlas [model=...] [benchmark=...] [benchmark.limit=N] [atlas.*=...]``:
where the model's sinks are, layer by layer (conf/atlas.yaml); prints the suggested sweep."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from outro_sweep.atlas.suggest import lines
from outro_sweep.config.command_line import CONF_DIR, check_group_choices
from outro_sweep.errors import exit_on_config_error


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="atlas")
def _run(cfg: DictConfig) -> None:
    # Deferred on purpose: it imports torch and transformers.
    from outro_sweep.atlas.run import run_atlas

    with exit_on_config_error():
        result = run_atlas(cfg)
    state = "cached" if result.cached else "computed"
    print(f"atlas ({state}): {result.directory}", flush=True)
    for line in lines(result.atlas["suggestion"]):
        print(line, flush=True)


def main() -> None:
    with exit_on_config_error():
        check_group_choices(sys.argv[1:])
    _run()


if __name__ == "__main__":
    main()
