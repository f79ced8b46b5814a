"""Hydra plugins of the project, registered before Hydra starts: the sweeper and launchers are
classes of this package, and Hydra finds plugins only under a ``hydra_plugins.`` module name."""

from __future__ import annotations

from hydra.core.plugins import Plugins

# Hydra instantiates a plugin only if its class is registered under a module name starting with
# "hydra_plugins." (normally a top-level namespace package, which the project's fixed layout has
# no room for): the class is registered under this name instead, by register_plugin_class().
PLUGIN_MODULE = "hydra_plugins.outro_sweep"


def register_plugin_class(cls: type) -> None:
    """Register launcher class ``cls`` with Hydra under ``PLUGIN_MODULE``: Hydra instantiates only
    plugins registered under a ``hydra_plugins.`` name, and names a plugin class by its
    ``__module__``; the class keeps its real module otherwise, because each task unpickles the
    launcher by that name."""
    real = cls.__module__
    cls.__module__ = PLUGIN_MODULE
    try:
        Plugins.instance().register(cls)
    finally:
        cls.__module__ = real
