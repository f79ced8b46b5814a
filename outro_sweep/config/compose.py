"""Composition before Hydra starts: its errors as one line, then the schemas, so that bad input
is refused before any output folder exists.

Hydra's own messages for a misspelt key (``outro.alhpa=3``), an unknown launcher or a bad
override span six to a dozen lines; ``composition_error`` turns each into one line naming the
key, the value and the valid keys or choices. Composing costs about a tenth of a second; the
schemas import the classes the config names, which a single run imports anyway.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from outro_sweep.errors import ConfigError

_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def compose_config(overrides: Sequence[str], conf_dir: Path) -> DictConfig:
    """conf/config.yaml with ``overrides``, hydra node included (so that hydra/launcher and
    hydra/sweeper choices are composed too); a one-line ConfigError if it does not compose."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - every composition failure becomes one line
        raise ConfigError(composition_error(err, overrides, conf_dir)) from None


def group_repository(conf_dir: Path, searchpath: Sequence[str] = ()):
    """Hydra's view of every config group: ``conf_dir`` plus the user's folders added with
    ``hydra.searchpath=[file:///abs/conf]`` (or ``pkg://package.conf``) or ``--config-dir``,
    in the order Hydra searches them. ``get_group_options(group)`` lists a group's choices."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path

    paths = create_config_search_path(str(conf_dir))
    for entry in searchpath:
        paths.append("command-line", entry if "://" in entry else f"file://{Path(entry).resolve()}")
    return ConfigRepository(config_search_path=paths)


def job_config(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` without its hydra node, as a job sees it."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return job


def composition_error(err: Exception, overrides: Sequence[str], conf_dir: Path) -> str:
    """Hydra's or OmegaConf's composition error as one line."""
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, choice = err.missing_cfg_file.rpartition("/")
        return f"{group}={choice} is not a known choice: valid values are {', '.join(err.options)}"
    match = _NOT_OVERRIDABLE.search(str(err))
    if match:
        return _unknown_key(match.group(1), overrides, conf_dir)
    if str(err).startswith("Error merging override ") and err.__cause__ is not None:
        # OmegaConf's type error of a typed node (e.g. hydra.launcher.wait=maybe): its first line
        # says what was expected; the rest (full_key, object_type) repeats the override.
        override = str(err).removeprefix("Error merging override ")
        return f"{override} is invalid: {str(err.__cause__).splitlines()[0]}"
    lines = [line.strip() for line in str(err).split("Config search path")[0].splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def _unknown_key(key: str, overrides: Sequence[str], conf_dir: Path) -> str:
    """``outro.alhpa=3``: the valid keys of ``outro`` (composed without the failing override)."""
    written = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
    value = written.split("=", 1)[1] if "=" in written else ""
    parent, _, name = key.rpartition(".")
    rest = [o for o in overrides if o is not written]
    try:
        cfg = compose_config(rest, conf_dir)
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except ConfigError:
        node = None
    if not isinstance(node, DictConfig):
        kind = "a value" if node is not None else "absent"
        return (f"{key}={value} is not a key of the config ({parent or key} is {kind}, not a group of settings): "
                f"valid values set {parent or key} itself")
    valid = sorted(str(k) for k in node.keys() if not str(k).startswith("_"))
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {parent}.{close[0]}?)" if close else ""
    return f"{key}={value} is not a setting of {parent or 'the config'}{hint}: valid keys are {', '.join(valid)}"


def build(node: DictConfig, **kwargs):
    """``instantiate`` that lets our one-line ConfigError through unwrapped."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise
