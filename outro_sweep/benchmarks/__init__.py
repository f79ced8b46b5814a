"""Benchmarks. One benchmark is one ``.py`` here plus one ``conf/benchmark/<name>.yaml``
whose ``_target_`` names the class (a subclass of ``Benchmark``)."""

from outro_sweep.benchmarks.base import Benchmark, Question

__all__ = ["Benchmark", "Question"]
