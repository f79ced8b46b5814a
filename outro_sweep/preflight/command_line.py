"""A command line refused in one line before Hydra starts, so before any output folder exists."""

from __future__ import annotations

from pathlib import Path

from hydra._internal.utils import get_args_parser

from outro_sweep.config.command_line import CONF_DIR, check_group_choices, first_value
from outro_sweep.config.compose import compose_config, job_config
from outro_sweep.errors import ConfigError


def with_dry_run_launcher(argv: list[str]) -> list[str]:
    """``+dry_run=true`` lists the cells in this process, whatever the launcher: submitting
    jobs just to list them would queue a whole array. The launcher's own settings go too."""
    if not any(a.lstrip("+") == "dry_run=true" for a in argv):
        return argv
    kept = [a for a in argv if not a.startswith(("hydra/launcher=", "hydra.launcher."))]
    return [*kept, "hydra/launcher=basic"]


def preflight(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Refuse bad input in one line before Hydra starts (so before any output folder exists):
    unknown group choices, anything that does not compose (misspelt keys, an unknown launcher,
    malformed overrides), and for a single run every model-free check of its cell (the typed
    schemas and the data: ``check_cell``). A multirun composes here with the first value of
    each sweep; the sweeper checks every cell."""
    check_group_choices(argv, conf_dir)  # before torch loads: the commonest typo is refused in a blink
    # Deferred on purpose: the cell checks import torch and transformers.
    from outro_sweep.preflight.checks import check_before_launch

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_name or args.config_dir:
        return  # Hydra's own output, or another config than conf/config.yaml
    if args.cfg and args.multirun:
        raise ConfigError(f"--cfg {args.cfg} with -m is not supported (--cfg prints one composed config, a multirun "
                          "composes one per cell): valid values are --cfg with one cell's overrides, or -m with "
                          "+dry_run=true to list the cells")
    cfg = compose_config([first_value(o) for o in args.overrides] if args.multirun else args.overrides, conf_dir)
    if not (args.multirun or args.cfg):  # --cfg shows the config as composed, valid or not
        check_before_launch(job_config(cfg), choices=dict(cfg.hydra.runtime.choices))
