"""Entry point: one-line errors for bad input, then Hydra composes and launches cells."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from outro_sweep.cell import masked_output
from outro_sweep.errors import ConfigError, RunError
from outro_sweep.sweep.job_names import cell_dirname
from outro_sweep.sweep.secret_overrides import move_secrets_to_environment

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Hydra flags that take a value (the value is not an override).
_FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-i", "--info",
                     "--experimental-rerun"}


def check_group_choices(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Reject an unknown choice of a config group (e.g. sink=foo) in one line.

    Hydra's own message for this spans a dozen lines and comes after start-up; this check
    reads the same override grammar with Hydra's parser and the same config folders: conf/
    and the user's own, added with ``hydra.searchpath=[...]`` or ``--config-dir``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from outro_sweep.config.compose import group_repository

    overrides, config_dirs, flag = [], [], None
    for arg in argv:
        if flag is not None:
            if flag in ("-cd", "--config-dir"):
                config_dirs.append(arg)
            flag = None
        elif arg in _FLAGS_WITH_VALUE:
            flag = arg
        elif not arg.startswith("-"):
            overrides.append(arg)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        searchpath = next((list(o.value()) for o in parsed if o.get_key_element() == "hydra.searchpath"), [])
        repository = group_repository(conf_dir, [*config_dirs, *searchpath])
    except Exception:  # malformed grammar or search path: Hydra reports it itself
        return
    for override in parsed:
        group = override.key_or_group
        if group.startswith("hydra") or not repository.group_exists(group) or override.is_delete():
            continue
        valid = sorted(repository.get_group_options(group))
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if value not in valid:
                raise ConfigError(f"{group}={value} is not a known choice: valid values are {', '.join(valid)}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _run(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from outro_sweep.cell.recipe import run_cell  # imported here: torch/transformers load after arg checks
    from outro_sweep.cell.interruption import Interrupted, interrupted, stop_line
    from outro_sweep.predict.distributed import check_launcher_environment

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


def _with_dry_run_launcher(argv: list[str]) -> list[str]:
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
    from hydra._internal.utils import get_args_parser

    from outro_sweep.cell.checks import check_before_launch
    from outro_sweep.config.compose import compose_config, job_config

    check_group_choices(argv, conf_dir)
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


def first_value(override: str) -> str:
    """``key=a,b`` -> ``key=a`` (a sweep's first cell, for composing); other overrides as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(override)
        if parsed.is_sweep_override():
            return f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"
    except Exception:  # noqa: BLE001 - malformed, or a glob: composing reports it, or the sweeper does
        pass
    return override


def main() -> None:
    from outro_sweep.sweep.slurm_launcher import register_launcher
    from outro_sweep.sweep.sweeper import register_plugin

    masked_output.install()
    register_plugin()  # before the pre-flight composition: hydra/sweeper and hydra/launcher name them
    register_launcher()
    try:
        sys.argv = [sys.argv[0], *_with_dry_run_launcher(move_secrets_to_environment(sys.argv[1:]))]
        preflight(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if not OmegaConf.has_resolver("cell_dirname"):
        OmegaConf.register_new_resolver("cell_dirname", cell_dirname)
    from outro_sweep.cell.interruption import Interrupted

    try:
        _run()
    except (Interrupted, KeyboardInterrupt) as stop:  # between cells, or before the first one starts
        stop = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
        print(f"{stop}: rerun to resume", file=sys.stderr)
        sys.exit(stop.exit_code)
