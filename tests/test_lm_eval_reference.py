"""Our cell against lm-eval's own evaluation of the same task, docs and model (the independent
reference): ``lm_eval.simple_evaluate`` with its HF model (``HFLM``) on SmolLM2-135M-Instruct
(the converted folder, float32), and ``python -m outro_sweep benchmark=lm_eval ... outro=off``
(every intervention off) on the same docs. Per document, the correctness must be equal:

* ARC-Easy (a multiple_choice task YAML of ours over the real test split in ../shared/data),
  acc and acc_norm, our cloze scoring against lm-eval's full forward per option;
* a generate_until task of ours (arithmetic and colour questions with two filters),
  exact_match under the task's first filter, our greedy generation with the task's stop strings
  against lm-eval's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_lm_eval_benchmark import ARC, arc_task, arith_docs, write_task

REPO = Path(__file__).resolve().parents[1]
ARC_DOCS = 60
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tasks(shared_data, tmp_path_factory) -> Path:
    data = shared_data / ARC
    if not data.is_file():
        pytest.skip(f"the ARC-Easy jsonl is absent from {data.parent}")
    folder = tmp_path_factory.mktemp("reference_tasks")
    write_task(folder, arc_task("arc_reference", data))
    docs = folder / "arith.jsonl"
    docs.write_text("".join(json.dumps(doc) + "\n" for doc in arith_docs()), encoding="utf-8")
    write_task(folder, {
        "task": "arith_reference", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test", "fewshot_split": "test", "output_type": "generate_until", "num_fewshot": 2,
        "doc_to_text": "Q: {{question}}\nA:", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n", "Q:"], "do_sample": False, "max_gen_toks": 8},
        "filter_list": [{"name": "first-number", "filter": [{"function": "regex", "regex_pattern": "(-?[0-9]+)"},
                                                            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True}],
    })
    return folder


@pytest.fixture(scope="module")
def lm(smollm2):
    from lm_eval.models.huggingface import HFLM

    # the converted folder, as a user of lm-eval's CLI would pass it (--model_args pretrained=...)
    return HFLM(pretrained=str(smollm2.loader.folder()), dtype="float32", batch_size=8, device="cpu")


def lm_eval_samples(lm, folder: Path, task: str, limit: int) -> dict[int, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    result = simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=str(folder)),
                             limit=limit, log_samples=True, bootstrap_iters=0)
    return {sample["doc_id"]: sample for sample in result["samples"][task]}


def our_records(folder: Path, task: str, limit: int, tmp_path: Path, *more: str) -> dict[int, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_SILENT": "true"}
    run = tmp_path / task
    result = subprocess.run(
        [sys.executable, "-m", "outro_sweep", "benchmark=lm_eval", f"benchmark.task={task}",
         f"benchmark.include_path={folder}", f"benchmark.limit={limit}", "outro=off", "logger.mode=disabled",
         "trainer.enable_progress_bar=false", *more, f"paths.output_dir={run}", f"hydra.run.dir={run / 'job'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (run / "job" / "cell" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {int(record["id"].rsplit("/", 1)[1]): record for record in records}


def test_cloze_cell_equals_lm_eval_per_document_on_arc_easy(lm, tasks, tmp_path):
    theirs = lm_eval_samples(lm, tasks, "arc_reference", ARC_DOCS)
    ours = our_records(tasks, "arc_reference", ARC_DOCS, tmp_path)
    assert sorted(ours) == sorted(theirs) and len(ours) == ARC_DOCS
    for doc, sample in theirs.items():
        assert ours[doc]["correct"] == bool(sample["acc"]), f"doc {doc}: acc differs"
        assert ours[doc]["correct_norm"] == bool(sample["acc_norm"]), f"doc {doc}: acc_norm differs"
    accuracy = sum(bool(s["acc"]) for s in theirs.values()) / ARC_DOCS
    assert 0.3 < accuracy < 0.9  # above chance (25%), so equal correctness is not equal guessing


def test_generate_until_cell_equals_lm_eval_per_document(lm, tasks, tmp_path):
    docs = len(arith_docs())
    theirs = lm_eval_samples(lm, tasks, "arith_reference", docs)
    ours = our_records(tasks, "arith_reference", docs, tmp_path, "benchmark.scoring=generate")
    assert sorted(ours) == sorted(theirs) and len(ours) == docs
    for doc, sample in theirs.items():
        assert ours[doc]["output"] == sample["resps"][0][0], f"doc {doc}: the generated answers differ"
        assert ours[doc]["correct"] == bool(sample["exact_match"]), f"doc {doc}: exact_match differs"
    assert 0 < sum(bool(s["exact_match"]) for s in theirs.values()) < docs  # neither all right nor all wrong
