"""Running a sweep's cells: the sweeper (``sweeper``: checks every cell, skips done ones, adds
baselines, orders groups), the local and SLURM launchers, the group task, and the summary.

Hydra's first plugin scan executes the plugin modules anew (``hydra_plugins.*`` and its core
plugins), replacing their classes. The sweeper and launchers here subclass those classes, and
Hydra's own code refers to the classes of the scan, so the scan runs first, before any module of
this package imports a plugin class.
"""

from hydra.core.plugins import Plugins

Plugins.instance()
