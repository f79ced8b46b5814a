"""The command line as Hydra will read it, checked before Hydra starts: the project's config
folder and the choices of its config groups."""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from outro_sweep.config.compose import group_repository
from outro_sweep.errors import ConfigError

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


def first_value(override: str) -> str:
    """``key=a,b`` -> ``key=a`` (a sweep's first cell, for composing); other overrides as they are."""
    try:
        parsed = OverridesParser.create().parse_override(override)
        if parsed.is_sweep_override():
            return f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"
    except Exception:  # noqa: BLE001 - malformed, or a glob: composing reports it, or the sweeper does
        pass
    return override
