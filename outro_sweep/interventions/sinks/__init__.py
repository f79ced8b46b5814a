"""Sink-detection rules (config group ``sink``). One rule is one ``.py`` here plus one
``conf/sink/<name>.yaml`` whose ``_target_`` names the class."""

from outro_sweep.interventions.sinks.base import SinkRule

__all__ = ["SinkRule"]
