"""``benchmark=lm_eval``: lm-eval tasks as benchmarks, checked against lm-eval itself.

The reference is lm-eval's own evaluation loop (``lm_eval.simple_evaluate``) run on a recording
model (an ``LM`` that keeps every request it is asked and answers from a table), so what is
compared is what lm-eval would send a real model and how lm-eval scores what comes back:

* a multiple_choice task of our own over the real ARC-Easy file (../shared/data): every
  question's prompt, continuations and answer letter equal lm-eval's request arguments and
  target, zero-shot, two-shot (seeded sampler over the same split) and in chat form; with
  made-up log-likelihoods the generic cloze scorer's acc and acc_norm equal lm-eval's;
* a generate_until task of our own (arithmetic and two colour questions, a jsonl written here):
  the scorer (the task's filters and exact_match) equals lm-eval's per-document exact_match
  for each of the task's two filters, on hand-written answers;
* every bad input is one line, before any model loads (``preflight``, as the command runs it).

Offline: the tasks read local files only; a built-in task's dataset is absent here, which is
itself one of the bad inputs.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import yaml

from outro_sweep.benchmarks.lm_eval import LmEvalTask
from outro_sweep.benchmarks.prompting import option_letters
from outro_sweep.errors import ConfigError
from outro_sweep.scoring.answers import Scorer

TARGET = "outro_sweep.benchmarks.lm_eval.LmEvalTask"
ARC = "text_mc/arc_easy/arc_easy.jsonl"
METRICS_MC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
              {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
COLOURS = [("What colour is a clear daytime sky?", "Blue"), ("What colour is fresh grass?", "Green")]


def arc_task(name: str, data: Path, **extra) -> dict:
    """Our ARC task: the query already starts with "Question: "."""
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "fewshot_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "{{query}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
            "metric_list": METRICS_MC, **extra}


def write_task(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config['task']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def arc_tasks(shared_data, tmp_path_factory) -> Path:
    """A folder of ARC task YAMLs: plain; with a description, other delimiters and the target as
    the choice's text; one fixing num_fewshot: 0; a group of the first two."""
    data = shared_data / ARC
    if not data.is_file():
        pytest.skip(f"the ARC-Easy jsonl is absent from {data.parent}")
    folder = tmp_path_factory.mktemp("arc_tasks")
    write_task(folder, arc_task("arc_local", data))
    write_task(folder, arc_task("arc_local_text", data, description="Science questions.\n\n", fewshot_delimiter="\n#\n",
                                target_delimiter="  ", doc_to_target="{{choices[gold]}}"))
    write_task(folder, arc_task("arc_local_zero", data, num_fewshot=0))
    (folder / "arc_local_pair.yaml").write_text("group: arc_local_pair\ntask: [arc_local, arc_local_text]\n",
                                                encoding="utf-8")
    return folder


def arith_docs() -> list[dict]:
    docs = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in
            ((i % 7 + 1, (3 * i) % 11) for i in range(18))]
    return docs + [{"question": q, "answer": a} for q, a in COLOURS]


@pytest.fixture(scope="module")
def arith_tasks(tmp_path_factory) -> Path:
    """A generate_until task over 20 questions, with two filters (the first number; the whole
    answer, stripped) and exact_match ignoring case."""
    import json

    folder = tmp_path_factory.mktemp("arith_tasks")
    data = folder / "arith.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in arith_docs()), encoding="utf-8")
    write_task(folder, {
        "task": "arith_local", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "fewshot_split": "test", "output_type": "generate_until",
        "doc_to_text": "Q: {{question}}\nA:", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n", "Q:"], "do_sample": False, "max_gen_toks": 16},
        "filter_list": [
            {"name": "first-number", "filter": [{"function": "regex", "regex_pattern": "(-?[0-9]+)"},
                                                {"function": "take_first"}]},
            {"name": "whole", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]},
        ],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True}],
    })
    return folder


def recording_lm(answers: dict[int, str] | None = None, chat: bool = False):
    """An lm-eval model that records its requests: a continuation's log-likelihood is a fixed
    function of its text (so acc and acc_norm can differ), a generation is ``answers[doc_id]``;
    ``chat``: its chat template is the messages as JSON."""
    import json

    from lm_eval.api.model import LM

    class Recording(LM):
        def __init__(self) -> None:
            super().__init__()
            self.requests = []

        def loglikelihood(self, requests):
            self.requests += requests
            return [(-0.7 * len(r.args[1]) + zlib.crc32(r.args[1].encode()) % 97 / 9.0, False) for r in requests]

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests):
            self.requests += requests
            return [answers[r.doc_id] for r in requests]

        def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
            return json.dumps({"messages": chat_history, "generation_prompt": add_generation_prompt})

        @property
        def tokenizer_name(self) -> str:
            return "recording"

    return Recording()


def lm_eval_samples(folder: Path, task: str, lm, limit: int | None = None, num_fewshot: int | None = None,
                    chat: bool = False) -> list[dict]:
    """lm-eval's per-document samples of ``task`` (``simple_evaluate`` with log_samples)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    result = simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                             limit=limit, num_fewshot=num_fewshot, log_samples=True, apply_chat_template=chat,
                             fewshot_as_multiturn=False, bootstrap_iters=0)
    return result["samples"][task]


def benchmark(folder: Path, task: str, **kwargs) -> LmEvalTask:
    return LmEvalTask(task=task, include_path=str(folder), **kwargs)


def mc_record(question, lls: list[float]) -> dict:
    return {"id": question.id, "kind": "mc", "output": "", "options": list(question.options),
            "references": list(question.references), "categories": dict(question.categories), "error": None,
            "option_ll": lls, "option_chars": [len(option) for option in question.options]}


# ---------------------------------------------------------------- multiple_choice


@pytest.mark.parametrize("task, num_fewshot", [("arc_local", None), ("arc_local", 2), ("arc_local_text", 3)])
def test_mc_questions_are_lm_eval_requests(arc_tasks, task, num_fewshot):
    lm = recording_lm()
    samples = lm_eval_samples(arc_tasks, task, lm, limit=12, num_fewshot=num_fewshot)
    questions = benchmark(arc_tasks, task, limit=12, num_fewshot=num_fewshot).load()
    assert [q.id for q in questions] == [f"{task}/{s['doc_id']}" for s in samples]
    scorer = Scorer.for_benchmark({"_target_": TARGET, "task": task})
    shots = 0
    for question, sample in zip(questions, samples):
        contexts = {context for context, _ in sample["arguments"]}
        assert contexts == {question.prompt}
        assert question.continuations == tuple(continuation for _, continuation in sample["arguments"])
        choices = sample["doc"]["choices"]
        assert question.options == tuple(choices) and question.kind == "mc" and not question.template
        gold = sample["target"] if isinstance(sample["target"], int) else choices.index(sample["target"])
        assert question.references == (option_letters(len(choices))[gold],)
        assert question.categories == (("task", task),)
        # The generic cloze scorer, fed lm-eval's log-likelihoods, agrees with lm-eval's metrics.
        fields = scorer.fields(mc_record(question, [resp[0][0] for resp in sample["resps"]]))
        assert (fields["correct"], fields["correct_norm"]) == (bool(sample["acc"]), bool(sample["acc_norm"]))
        shots = question.prompt.count("\nAnswer:") - 1
    assert shots == (num_fewshot or 0)
    if task == "arc_local_text":
        assert questions[0].prompt.startswith("Science questions.\n\n") and "\n#\n" in questions[0].prompt
        assert all(c.startswith("  ") for c in questions[0].continuations)


def test_mc_chat_form_is_lm_eval_single_turn_user_message(arc_tasks):
    import json

    samples = lm_eval_samples(arc_tasks, "arc_local_text", recording_lm(chat=True), limit=4, num_fewshot=1, chat=True)
    questions = benchmark(arc_tasks, "arc_local_text", limit=4, num_fewshot=1, apply_chat_template=True).load()
    for question, sample in zip(questions, samples):
        rendered = json.loads(sample["arguments"][0][0])
        assert rendered["generation_prompt"] is True
        roles = [m["role"] for m in rendered["messages"]]
        assert roles == ["system", "user"]  # the description, then few-shot example and question in one turn
        assert question.prompt == "".join(m["content"] for m in rendered["messages"])
        assert question.template is True
        assert question.continuations == tuple(c for _, c in sample["arguments"]) == question.options  # no delimiter


@pytest.mark.slow
def test_selection_keeps_lm_eval_shots(arc_tasks):
    """limit and sample select questions; each keeps the few-shot examples lm-eval gives it in
    a run over every document (the sampler draws in document order, from one seed)."""
    everything = {q.id: q for q in benchmark(arc_tasks, "arc_local", num_fewshot=2).load()}
    assert len(everything) == 2376
    first = benchmark(arc_tasks, "arc_local", num_fewshot=2, limit=30).load()
    assert first == [everything[f"arc_local/{i}"] for i in range(30)]
    sampled = benchmark(arc_tasks, "arc_local", num_fewshot=2, sample=25, sample_seed=3).load()
    assert len(sampled) == 25 and all(q == everything[q.id] for q in sampled)
    other_seed = benchmark(arc_tasks, "arc_local", num_fewshot=2, limit=30, fewshot_seed=7).load()
    assert [q.prompt for q in other_seed] != [q.prompt for q in first]
    assert [q.continuations for q in other_seed] == [q.continuations for q in first]


def test_circular_rotates_choices_and_continuations(arc_tasks):
    questions = benchmark(arc_tasks, "arc_local", limit=2, circular=True).load()
    assert len(questions) == 8
    base, turned = questions[0], questions[1]
    assert turned.prompt == base.prompt and turned.options == base.options[1:] + base.options[:1]
    assert turned.continuations == base.continuations[1:] + base.continuations[:1]


def test_identity_files(arc_tasks, shared_data):
    files = benchmark(arc_tasks, "arc_local").data_files()
    assert files["include_path/arc_local.yaml"] == arc_tasks / "arc_local.yaml"
    assert files["arc_local/data_files/test/0/0/arc_easy.jsonl"] == (shared_data / ARC).resolve()
    assert {"lm_eval/api/task.py", "lm_eval/api/samplers.py"} <= set(files)
    assert all(path.is_file() for path in files.values())
    assert LmEvalTask(task="no_such_task_anywhere").data_files() == {}  # its cell fails its checks in one line


@pytest.mark.slow
def test_group_is_its_tasks_in_turn(arc_tasks):
    group = benchmark(arc_tasks, "arc_local_pair")
    questions = group.load()
    # A choice whose text is a number ("40") reads as an index in lm-eval: no choice is the target
    # (lm-eval counts the document wrong); it is left out, with a warning.
    assert 691 in group.without_answer["arc_local_text"] and set(group.without_answer) == {"arc_local_text"}
    left_out = {f"arc_local_text/{i}" for i in group.without_answer["arc_local_text"]}
    assert [q.id for q in questions] == [f"{task}/{i}" for task in ("arc_local", "arc_local_text") for i in range(2376)
                                         if f"{task}/{i}" not in left_out]
    assert {q.categories for q in questions} == {(("task", "arc_local"),), (("task", "arc_local_text"),)}
    assert {"include_path/arc_local_pair.yaml", "include_path/arc_local.yaml",
            "include_path/arc_local_text.yaml"} <= set(group.data_files())


# ---------------------------------------------------------------- generate_until

# Hand-written answers (already cut at the task's until strings), one per document.
ANSWERS = {
    0: " 1", 1: " 6", 2: " The answer is 9.", 3: " eleven", 4: "", 5: " 12 or 13", 6: "7",
    7: " -3", 8: " 13", 9: " 10", 10: "  4 ", 11: " 8", 12: " 5", 13: " 14", 14: " 16", 15: " 2", 16: " 12",
    17: " 9", 18: " blue", 19: " GREEN grass",
}


@pytest.mark.parametrize("filter_name", [None, "first-number", "whole"])
def test_open_answers_are_scored_as_lm_eval_scores_them(arith_tasks, filter_name):
    samples = lm_eval_samples(arith_tasks, "arith_local", recording_lm(ANSWERS), num_fewshot=1)
    wanted = filter_name or "first-number"
    samples = [s for s in samples if s["filter"] == wanted]
    assert len(samples) == 20
    questions = benchmark(arith_tasks, "arith_local", scoring="generate", num_fewshot=1, filter=filter_name).load()
    node = {"_target_": TARGET, "task": "arith_local", "include_path": str(arith_tasks), "scoring": "generate",
            "num_fewshot": 1, "filter": filter_name}
    scorer = Scorer.for_benchmark(node)
    hits = 0
    for question, sample in zip(questions, samples):
        (context, generation), = sample["arguments"]
        assert question.prompt == context and question.kind == "open"
        assert question.stop == tuple(generation["until"]) == ("\n", "Q:")
        assert question.references == (sample["target"],)
        record = {"id": question.id, "kind": "open", "output": ANSWERS[sample["doc_id"]],
                  "references": list(question.references), "categories": dict(question.categories), "error": None}
        fields = scorer.fields(record)
        assert fields["score"] == sample["exact_match"], (question.id, record["output"], sample["filtered_resps"])
        assert fields["correct"] == (sample["exact_match"] == 1.0)
        hits += fields["correct"]
    assert 0 < hits < 20  # the answers are a mix of right and wrong under every filter


def test_open_questions_take_the_task_generation_settings(arith_tasks):
    task = benchmark(arith_tasks, "arith_local", scoring="generate", limit=3)
    questions = task.load()
    assert task.max_new_tokens == 16  # the task's max_gen_toks
    assert [q.prompt for q in questions] == [f"Q: {d['question']}\nA:" for d in arith_docs()[:3]]
    assert benchmark(arith_tasks, "arith_local", scoring="generate", max_new_tokens=5).max_new_tokens == 5
    fallback = Scorer.for_benchmark({"_target_": TARGET, "task": "arith_local", "include_path": str(arith_tasks),
                                     "scoring": "generate"})
    record = {"id": questions[0].id, "kind": "open", "output": " nothing", "references": ["1"], "error": None}
    assert fallback.fields(record) == {"prediction": None, "valid": False, "correct": False, "score": 0.0}


# ---------------------------------------------------------------- bad input


def bad_tasks(folder: Path, data: Path) -> Path:
    """YAMLs that lm-eval indexes but that we must refuse, and one that does not parse."""
    write_task(folder, {"task": "rolling_local", "dataset_path": "json",
                        "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
                        "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{answer}}"})
    write_task(folder, {"task": "absent_file", "dataset_path": "json",
                        "dataset_kwargs": {"data_files": {"test": str(folder / "absent.jsonl")}},
                        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{q}}",
                        "doc_to_choice": "{{c}}", "doc_to_target": "{{g}}"})
    write_task(folder, {"task": "not_cached", "dataset_path": "nobody/no_such_dataset_here", "test_split": "test",
                        "output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{c}}",
                        "doc_to_target": "{{g}}"})
    write_task(folder, {"task": "typo_key", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                        "test_split": "test", "output_type": "generate_until", "doc_to_textt": "{{question}}"})
    write_task(folder, {"task": "sampled", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{question}}",
                        "doc_to_target": "{{answer}}", "generation_kwargs": {"until": ["\n"], "do_sample": True}})
    write_task(folder, {"task": "bleu_only", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{question}}",
                        "doc_to_target": "{{answer}}", "metric_list": [{"metric": "bleu"}]})
    (folder / "broken.yaml").write_text("task: broken_local\n  dataset_path: [unclosed\n", encoding="utf-8")
    return folder


BAD = {
    # name: (overrides, needles the one line must contain)
    "unknown task": (["benchmark.task=arc_eazy"], ["benchmark.task=arc_eazy is not an lm-eval task",
                                                   "did you mean arc_easy", "lm-eval ls tasks"]),
    "YAML that does not parse": (["benchmark.task=broken_local", "benchmark.include_path={bad}"],
                                 ["benchmark.task=broken_local", "broken.yaml", "does not parse"]),
    "YAML that does not build": (["benchmark.task=typo_key", "benchmark.include_path={bad}", "benchmark.scoring=generate"],
                                 ["benchmark.task=typo_key", "does not build in lm-eval", "doc_to_textt"]),
    "unsupported output type": (["benchmark.task=rolling_local", "benchmark.include_path={bad}"],
                                ["output_type loglikelihood_rolling", "multiple_choice or generate_until"]),
    "built-in dataset not cached": (["benchmark.task=arc_easy"],
                                    ["benchmark.task=arc_easy", "allenai/ai2_arc", "not available offline",
                                     "benchmark.include_path"]),
    "dataset not cached": (["benchmark.task=not_cached", "benchmark.include_path={bad}"],
                           ["nobody/no_such_dataset_here", "not available offline"]),
    "local data file absent": (["benchmark.task=absent_file", "benchmark.include_path={bad}"],
                               ["absent.jsonl", "does not exist"]),
    "include_path not a folder": (["benchmark.task=arc_local", "benchmark.include_path={bad}/nothing"],
                                  ["benchmark.include_path=", "is not a folder"]),
    "generate on multiple_choice": (["benchmark.task=arc_local", "benchmark.include_path={arc}",
                                     "benchmark.scoring=generate"],
                                    ["benchmark.scoring=generate", "output_type multiple_choice", "scoring=cloze"]),
    "logits on multiple_choice": (["benchmark.task=arc_local", "benchmark.include_path={arc}",
                                   "benchmark.scoring=logits"], ["benchmark.scoring=logits", "scoring=cloze"]),
    "cloze on generate_until": (["benchmark.task=arith_local", "benchmark.include_path={arith}"],
                                ["benchmark.scoring=cloze", "output_type generate_until", "scoring=generate"]),
    "unknown filter": (["benchmark.task=arith_local", "benchmark.include_path={arith}", "benchmark.scoring=generate",
                        "benchmark.filter=strict"], ["benchmark.filter=strict", "first-number, whole"]),
    "sampling generation": (["benchmark.task=sampled", "benchmark.include_path={bad}", "benchmark.scoring=generate"],
                            ["task sampled", "do_sample: true"]),
    "no exact_match": (["benchmark.task=bleu_only", "benchmark.include_path={bad}", "benchmark.scoring=generate"],
                       ["task bleu_only", "bleu", "exact_match"]),
    "few-shot on a zero-shot task": (["benchmark.task=arc_local_zero", "benchmark.include_path={arc}",
                                      "benchmark.num_fewshot=2"], ["benchmark.num_fewshot=2", "num_fewshot: 0"]),
    "negative num_fewshot": (["benchmark.task=arc_local", "benchmark.include_path={arc}", "benchmark.num_fewshot=-1"],
                             ["benchmark.num_fewshot=-1", "integers >= 0, or null"]),
    "task left out": ([], ["benchmark.task is required"]),
}


@pytest.fixture(scope="module")
def bad_folders(arc_tasks, arith_tasks, tmp_path_factory) -> dict[str, str]:
    bad = bad_tasks(tmp_path_factory.mktemp("bad_tasks"), arith_tasks / "arith.jsonl")
    return {"bad": str(bad), "arc": str(arc_tasks), "arith": str(arith_tasks)}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_before_the_model(name, bad_folders, tmp_path):
    from outro_sweep.preflight.command_line import preflight

    overrides = [o.format(**bad_folders) for o in BAD[name][0]]
    out = tmp_path / "outputs"
    with pytest.raises(ConfigError) as raised:
        preflight(["benchmark=lm_eval", *overrides, f"paths.output_dir={out}"])
    message = str(raised.value)
    assert "\n" not in message and message == message.strip(), message
    for needle in BAD[name][1]:
        assert needle in message, message
    assert not out.exists()


def test_good_task_passes_the_cell_checks(arc_tasks, tmp_path):
    from omegaconf import OmegaConf

    from outro_sweep.preflight.checks import check_cell
    from outro_sweep.cell.identity import identity_inputs
    from outro_sweep.config.compose import compose_config, job_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    cfg = job_config(compose_config(["benchmark=lm_eval", "benchmark.task=arc_local",
                                     f"benchmark.include_path={arc_tasks}", "benchmark.limit=5",
                                     f"paths.output_dir={tmp_path}"], conf))
    cell = check_cell(cfg)
    assert len(cell.questions) == 5 and all(q.continuations for q in cell.questions)
    inputs = identity_inputs(OmegaConf.to_container(cfg, resolve=True))
    assert {"include_path/arc_local.yaml", "arc_local/data_files/test/0/0/arc_easy.jsonl"} <= set(
        inputs["benchmark_files"])
