"""Open answers of an lm-eval ``generate_until`` task, scored as lm-eval scores them.

For ``benchmark=lm_eval`` (``LmEvalTask.open_metric = "lm_eval"``) the generic scorer
(``outro_sweep.scoring.answers.Scorer``) hands each open record here. The task is rebuilt from
the cell's ``benchmark`` node (lm-eval's registry and YAML, its dataset; never a model), the
record's document found by its id (``<task>/<doc_id>``), and the generated ``output`` put
through lm-eval's own code: the task's filter pipeline (``FilterEnsemble.apply``, e.g. regex
then take_first) on an ``Instance`` holding that one response, then the task's
``process_results`` on the filtered answer, whose ``exact_match`` (with the metric's own
arguments: ignore_case, regexes_to_ignore, ...) is the record's score. ``benchmark.filter``
names the pipeline (null: the task's first); the prediction is that pipeline's answer (None,
unreadable, where it is empty or a filter's fallback, e.g. the regex filter's "[invalid]").

The output is already cut at the task's ``until`` strings by the predictor, as lm-eval's
models cut theirs. Re-scoring such a cell needs the task's data, as lm-eval's scoring does.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from outro_sweep.benchmarks.lm_eval import quiet
from outro_sweep.config.compose import build


class LmEvalAnswers:
    """Built lazily: the benchmark node is read when the first record is scored."""

    def __init__(self, node: Mapping) -> None:
        self.node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        self._benchmark = None

    @property
    def benchmark(self):
        """The ``LmEvalTask`` of the node (its tasks are built once per process and shared)."""
        if self._benchmark is None:
            self._benchmark = build(OmegaConf.create(self.node))
        return self._benchmark

    def score(self, record: Mapping) -> tuple[str | None, float]:
        """The task's verdict on ``record["output"]`` (an open record of this benchmark): the
        filtered answer (None where unreadable) and its exact_match."""
        from lm_eval.api.instance import Instance


        benchmark = self.benchmark
        built = benchmark.built()
        leaf, _, doc_id = str(record["id"]).rpartition("/")
        task = built.tasks[leaf]
        doc = built.doc(leaf, int(doc_id))
        name = benchmark.filter_name(task)
        ensemble = next(f for f in task._filters if f.name == name)
        instance = Instance(request_type="generate_until", doc=doc, arguments=("", {}), idx=0,
                            metadata=(leaf, int(doc_id), 1), resps=[record["output"]])
        with quiet():
            ensemble.apply([instance])
            filtered = instance.filtered_resps[name]
            metrics = task.process_results(doc, [filtered])
        value = float(metrics["exact_match"])
        said = filtered if isinstance(filtered, str) else str(filtered)
        # A filter's fallback (the regex filter's "[invalid]") says it found no answer: unreadable.
        fallbacks = {getattr(step(), "fallback", None) for step in ensemble.filters}
        readable = said.strip() and said not in fallbacks
        return (said if readable else None), value
