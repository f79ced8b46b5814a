"""lm-eval tasks as benchmarks: ``benchmark=lm_eval benchmark.task=<name>``.

Every question is built by lm-eval's own machinery, never re-implemented here: the task (or
group, or tag) is found by ``lm_eval.tasks.TaskManager`` (its built-in registry, plus the task
YAMLs under ``include_path``), built from its YAML with its dataset, given ``num_fewshot`` and
the few-shot seed the way ``lm_eval.simple_evaluate`` gives them, and asked for its requests
(``Task.build_all_requests``). Each question is read off lm-eval's ``Instance`` arguments, so
its text is lm-eval's text exactly: description, few-shot examples (the task's sampler, seeded
by ``fewshot_seed``), ``doc_to_text``, ``target_delimiter`` and ``fewshot_delimiter``.

* ``output_type: multiple_choice`` -> an ``mc`` question scored by cloze
  (``benchmark.scoring=cloze``, lm-eval's acc and acc_norm): ``prompt`` is the context string,
  ``options`` the task's choices (``doc_to_choice``), ``continuations`` each choice's
  continuation string (``target_delimiter`` + choice), ``references`` the letter of the
  choice ``doc_to_target`` names (an index, or a choice's text, as lm-eval reads it). A
  document whose target names none of its choices (lm-eval warns and counts it wrong; e.g. a
  choice "40" given as text, which lm-eval reads as an index) is left out with a warning
  (``without_answer``): a question here needs its answer among its options.
* ``output_type: generate_until`` -> an ``open`` question (``benchmark.scoring=generate``):
  ``prompt`` the context, ``references`` the target, ``stop`` the task's ``until`` strings.
  Its answers are scored by the task's own filters and ``exact_match``
  (``outro_sweep.scoring.lm_eval_answers``, ``open_metric = "lm_eval"``), the filter named by
  ``benchmark.filter`` (null: the task's first, lm-eval's ``none`` for a task without filters).
  ``max_new_tokens: null`` generates up to the task's ``max_gen_toks`` (lm-eval's default 256
  where the task sets none; for a group, the largest of its tasks').

A question's id is ``<task>/<doc_id>`` (lm-eval's doc_id: the index in the task's evaluation
split) and its one category ``("task", <task>)``, so a group breaks down by task.

``apply_chat_template=false`` (lm-eval's default) marks every question ``template=False``: the
model reads the prompt as is, whatever its ``use_chat_template``. With ``true`` the questions
are lm-eval's chat-template requests in single-turn form (``fewshot_as_multiturn=false``): the
context becomes the user message of the model's chat template and, as lm-eval does there, the
continuations drop the target delimiter. lm-eval sends the task's description as a system
message; here it opens the user message, as in the plain text.

``num_fewshot: null`` is the task's own (0 where its YAML sets none); a task whose YAML fixes
``num_fewshot: 0`` refuses any other (``simple_evaluate`` would ignore it silently).

Refused in one line, before any model loads: an unknown task (with close names), a task YAML
that does not parse or load, a dataset that is not available offline (neither in the datasets
cache nor local data files), output types other than the two above, multimodal tasks and
tasks with one context per choice (winogrande's ``multiple_input``), sampling generation
(``do_sample: true``), ``repeats`` above 1, a generate_until task not scored by
``exact_match``, an unknown ``filter``, and a scoring method that does not fit the output type.

The identity of a cell (``data_files``) holds the task YAMLs (with the files they include and
the Python files their ``!function`` tags read), the local data files the YAMLs name,
and lm-eval's prompt-building code (``lm_eval/api/task.py``, ``samplers.py``), so editing any
of them makes a new cell. A dataset read from the Hub's cache is named by its YAML only.

Tasks are indexed and built once per process (``load_tasks``), shared by the benchmark, its
identity and the scorer. lm-eval and ``datasets`` log and draw progress bars as they go; while
they build, their loggers are held at ERROR and their progress bars and prints are dropped.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from outro_sweep.benchmarks.base import Benchmark, Question
from outro_sweep.benchmarks.prompting import MAX_OPTIONS, option_letters
from outro_sweep.config.schema import Range, check_arguments, show
from outro_sweep.errors import ConfigError

OUTPUT_TYPES = ("multiple_choice", "generate_until")  # the ones a question can ask
SCORING_BY_TYPE = {"multiple_choice": "cloze", "generate_until": "generate"}
DEFAULT_FEWSHOT_SEED = 1234  # lm_eval.simple_evaluate's fewshot_random_seed
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default where a task sets no max_gen_toks (HFLM.max_gen_toks)
# dataset_path values that name datasets' own builders (json, csv, ...), read over data_files
PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder")
log = logging.getLogger(__name__)

_QUIET_LOGGERS = ("lm_eval", "datasets", "fsspec", "filelock")

# Built once per process: a TaskManager indexes every YAML it can see (about 6 s for lm-eval's
# own), and a built task holds its dataset. Keys: (include_path, include_defaults) and
# (task, include_path).
_MANAGERS: dict[tuple[str | None, bool], Any] = {}
_BUILT: dict[tuple[str, str | None], BuiltTasks] = {}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's and datasets' logging below ERROR, their progress bars and prints hidden."""
    import datasets

    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    bars_were_off = datasets.are_progress_bars_disabled()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield  # lm-eval's tqdm bars (build_all_requests) write to stderr
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if not bars_were_off:
            datasets.enable_progress_bars()


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


class BuiltTasks:
    """The leaf tasks a name selects, built (datasets loaded), in name order."""

    def __init__(self, name: str, tasks: dict, group_yamls: list[Path]) -> None:
        self.name = name
        self.tasks = dict(sorted(tasks.items()))  # leaf task name -> lm_eval Task
        self.group_yamls = group_yamls  # the YAML of the group the name selects (its tasks' own come with them)
        # num_fewshot as each task's YAML sets it (None: not set); build_requests overrides it.
        self.default_fewshot = {leaf: task.get_config("num_fewshot") for leaf, task in self.tasks.items()}

    def doc(self, leaf: str, doc_id: int) -> dict:
        """lm-eval's document ``doc_id`` of a task: its evaluation split's, as its doc_iterator counts."""
        return self.tasks[leaf].task_docs[doc_id]


def task_manager(include_path: str | None, defaults: bool = True):
    key = (include_path, defaults)
    if key not in _MANAGERS:
        from lm_eval.tasks import TaskManager

        with quiet():
            _MANAGERS[key] = TaskManager(include_path=include_path, include_defaults=defaults)
    return _MANAGERS[key]


def _manager_for(name: str, include_path: str | None):
    """The TaskManager that builds ``name``: the include_path's own index where the name is a
    plain task there (it would win over a built-in of that name anyway, and indexing lm-eval's
    thousands of YAMLs is skipped); else lm-eval's index with include_path's added (a group can
    name built-in tasks). A YAML of include_path that names the task but does not parse is
    refused here: lm-eval's index skips it silently, and the task would look unknown."""
    if include_path is not None:
        from lm_eval.tasks._index import Kind

        local = task_manager(include_path, defaults=False)
        entry = local.task_index.get(name)
        if entry is not None and entry.kind in (Kind.TASK, Kind.PY_TASK):
            return local
        if entry is None:
            broken = [(path, reason) for path, reason in _broken_yamls(include_path)
                      if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", path.read_text(errors="replace"))]
            if broken:
                raise _does_not_parse(name, include_path, *broken[0])
    return task_manager(include_path, defaults=True)


def _broken_yamls(include_path: str) -> list[tuple[Path, str]]:
    """include_path's YAMLs that do not parse as lm-eval reads them."""
    from lm_eval.tasks._yaml_loader import load_yaml

    broken = []
    for path in sorted(Path(include_path).glob("**/*.yaml")):
        try:
            load_yaml(path, resolve_func=False, recursive=True)
        except Exception as err:  # noqa: BLE001 - whatever the parser says is the reason
            broken.append((path, first_line(err)))
    return broken


def _does_not_parse(name: str, include_path: str, path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"benchmark.task={show(name)} is not an lm-eval task, and {path.relative_to(include_path)} in "
        f"benchmark.include_path={include_path} does not parse ({reason}): valid values are task YAMLs lm-eval can "
        "read (fix the YAML), or a task lm-eval knows"
    )


def _unknown_task(name: str, include_path: str | None, manager) -> ConfigError:
    if include_path is not None:
        broken = _broken_yamls(include_path)
        if broken:  # none names the task, yet it may be the one meant
            return _does_not_parse(name, include_path, *broken[0])
    close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = f" or under benchmark.include_path={include_path}" if include_path else ""
    return ConfigError(
        f"benchmark.task={show(name)} is not an lm-eval task{hint}: valid values are the {len(manager.all_tasks)} "
        f"task, group and tag names lm-eval knows{where} (list them with: lm-eval ls tasks), or a task of "
        "your own YAML under benchmark.include_path"
    )


def _is_missing_dataset(err: BaseException) -> bool:
    """Whether building failed for want of the dataset: offline and not in the datasets cache,
    or a data file that does not exist."""
    missing = ("DatasetNotFoundError", "DataFilesNotFoundError", "FileNotFoundDatasetsError", "OfflineModeIsEnabled",
               "LocalEntryNotFoundError")
    for error in (err, err.__cause__, err.__context__):
        if isinstance(error, (ConnectionError, FileNotFoundError, TimeoutError)):
            return True
        if error is not None and type(error).__name__ in missing:
            return True
    return False


def _missing_local_files(cfg: dict | None) -> list[str]:
    """The local ``dataset_kwargs.data_files`` patterns (relative ones: to the working folder,
    as datasets reads them) that match no file; datasets reports these confusingly."""
    files = ((cfg or {}).get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        patterns = [p for value in files.values() for p in (value if isinstance(value, (list, tuple)) else [value])]
    else:
        patterns = list(files) if isinstance(files, (list, tuple)) else [files] if files else []
    local = [str(p) for p in patterns if "://" not in str(p)]
    return [p for p in local if not glob.glob(os.path.expanduser(p), recursive=True)]


def _dataset_words(cfg: dict | None) -> str:
    cfg = cfg or {}
    parts = [f"{key}={cfg[key]}" for key in ("dataset_path", "dataset_name") if cfg.get(key)]
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files:
        parts.append(f"data_files={files}")
    return ", ".join(parts) or "its dataset"


def load_tasks(name: str, include_path: str | None) -> BuiltTasks:
    """The leaf tasks ``name`` selects, built once per process; a one-line ConfigError for an
    unknown name, a YAML that does not load, or a dataset not available offline."""
    key = (name, include_path)
    if key in _BUILT:
        return _BUILT[key]
    manager = _manager_for(name, include_path)
    entry = manager.task_index.get(name)
    if entry is None:
        raise _unknown_task(name, include_path, manager)
    from lm_eval.tasks._index import Kind

    where = f" ({entry.yaml_path})" if entry.yaml_path else ""
    absent = _missing_local_files(entry.cfg)
    if absent:
        of = f" of {entry.yaml_path}" if entry.yaml_path else ""
        raise ConfigError(
            f"benchmark.task={show(name)}: its data file {absent[0]} (dataset_kwargs.data_files{of}) does not "
            f"exist: valid values are data files that exist (a relative one is read from {os.getcwd()})"
        )
    try:
        with quiet():
            loaded = manager.load([name])
    except Exception as err:  # noqa: BLE001 - lm-eval and datasets raise anything; each is one line here
        if _is_missing_dataset(err):
            raise ConfigError(
                f"benchmark.task={show(name)}: its dataset ({_dataset_words(entry.cfg)}) is not available offline "
                f"({first_line(err)}): valid values are a task whose dataset is in the datasets cache "
                "(HF_DATASETS_CACHE), or benchmark.include_path=<folder> holding a task YAML over local data files "
                "(dataset_path: json, dataset_kwargs: {data_files: {test: <file>.jsonl}})"
            ) from None
        raise ConfigError(
            f"benchmark.task={show(name)} does not build in lm-eval{where} ({type(err).__name__}: {first_line(err)}): "
            "valid values are tasks whose YAML and data lm-eval can build"
        ) from None
    tasks = loaded["tasks"]
    if not tasks:
        raise ConfigError(f"benchmark.task={show(name)} selects no task: valid values are a task, or a group or "
                          "tag with tasks")
    if entry.kind == Kind.GROUP:
        group_yamls = [entry.yaml_path] if entry.yaml_path else []
    else:
        group_yamls = []
    built = BuiltTasks(name, tasks, group_yamls)
    _BUILT[key] = built
    return built


def _gold_index(task, doc, choices: list[str]) -> int | None:
    """The choice ``doc_to_target`` names, read as lm-eval's process_results reads it (an
    index, or a choice's text); None where it names none, or several."""
    gold = task.doc_to_target(doc)
    if isinstance(gold, bool):
        return None
    if isinstance(gold, int):
        return gold if 0 <= gold < len(choices) else None
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else None
    return None


def _targets(task, doc) -> tuple[str, ...]:
    """A generate_until doc's accepted answers, as lm-eval's process_results makes its gold."""
    gold = task.doc_to_target(doc)
    if task.config.doc_to_choice is not None:
        gold = task.doc_to_choice(doc)[gold]
    if isinstance(gold, (list, tuple)):
        return tuple(str(g) for g in gold)
    return (str(gold),)


class LmEvalTask(Benchmark):
    name = "lm_eval"
    open_metric = "lm_eval"  # outro_sweep.scoring.lm_eval_answers: the task's filters and exact_match

    def __init__(
        self,
        task: str,
        include_path: str | None = None,
        num_fewshot: Annotated[int, Range(ge=0)] | None = None,
        fewshot_seed: int = DEFAULT_FEWSHOT_SEED,
        apply_chat_template: bool = False,
        filter: str | None = None,  # noqa: A002 - lm-eval's own word for it
        max_new_tokens: Annotated[int, Range(ge=1)] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("scoring", "cloze")
        super().__init__(max_new_tokens=max_new_tokens or DEFAULT_MAX_GEN_TOKS, **kwargs)
        check_arguments(LmEvalTask, locals(), self.config_key)
        if not str(task).strip():
            raise ConfigError("benchmark.task='' names no task: valid values are an lm-eval task name such as "
                              "arc_easy")
        if include_path is not None:
            folder = Path(os.path.expanduser(str(include_path))).resolve()
            if not folder.is_dir():
                raise ConfigError(f"benchmark.include_path={show(str(include_path))} is not a folder: valid values "
                                  "are null, or a folder of lm-eval task YAMLs")
            include_path = str(folder)
        self.task = str(task)
        self.include_path = include_path
        self.num_fewshot = num_fewshot
        self.fewshot_seed = fewshot_seed
        self.apply_chat_template = apply_chat_template
        self.filter = filter
        self.max_new_tokens_set = max_new_tokens  # None: the task's max_gen_toks, once built
        self.without_answer: dict[str, list[int]] = {}  # leaf task -> doc_ids left out by load (no valid target)

    # ---------------------------------------------------------------- the tasks

    def built(self) -> BuiltTasks:
        if (self.task, self.include_path) not in _BUILT:
            self._precheck()
        return load_tasks(self.task, self.include_path)

    def _precheck(self) -> None:
        """A plain task's output type and scoring, read off its YAML before its dataset loads
        (a task with an unsupported output type is refused for that, not for its dataset)."""
        from lm_eval.tasks._index import Kind

        entry = _manager_for(self.task, self.include_path).task_index.get(self.task)
        if entry is None or entry.kind != Kind.TASK or not isinstance(entry.cfg, dict):
            return
        from lm_eval.api.task import TaskConfig

        output_type = entry.cfg.get("output_type", TaskConfig.output_type)
        if output_type not in OUTPUT_TYPES:
            raise self._unsupported(self.task, output_type)
        self._check_scoring(output_type)

    def _unsupported(self, leaf: str, output_type: str) -> ConfigError:
        return ConfigError(f"benchmark.task={show(self.task)}: task {leaf} has output_type {output_type}: valid values "
                           f"are tasks whose output_type is {' or '.join(OUTPUT_TYPES)}")

    def _check_scoring(self, output_type: str) -> None:
        wanted = SCORING_BY_TYPE[output_type]
        if self.scoring != wanted:
            why = ("its choices are scored by their log-likelihood, and its prompt names no letter"
                   if output_type == "multiple_choice" else "its answers are generated text with no options to score")
            raise ConfigError(
                f"benchmark.scoring={self.scoring} does not fit benchmark.task={show(self.task)}, output_type "
                f"{output_type} ({why}): valid values are benchmark.scoring={wanted}"
            )

    def output_type(self) -> str:
        """The one output type of the selected tasks (a ConfigError for any other, or a mix)."""
        built = self.built()
        types = sorted({task.OUTPUT_TYPE for task in built.tasks.values()})
        unsupported = [t for t in types if t not in OUTPUT_TYPES]
        if unsupported:
            leaf = next(leaf for leaf, task in built.tasks.items() if task.OUTPUT_TYPE == unsupported[0])
            raise self._unsupported(leaf, unsupported[0])
        if len(types) > 1:
            raise ConfigError(
                f"benchmark.task={show(self.task)} mixes output types {' and '.join(types)}, scored differently: "
                "valid values are a task, group or tag whose tasks share one output type (name its tasks one by one)"
            )
        return types[0]

    def filter_name(self, task) -> str:
        """The name of the filter pipeline whose answer is scored (benchmark.filter, else the first)."""
        names = [ensemble.name for ensemble in task._filters]
        if self.filter is None:
            return names[0]
        if self.filter not in names:
            raise ConfigError(f"benchmark.filter={show(self.filter)} is not a filter of task {task.task_name}: "
                              f"valid values are null (the first), {', '.join(names)}")
        return self.filter

    def _check(self, built: BuiltTasks, output_type: str) -> None:
        """What lm-eval would run but these questions cannot ask, refused before any model loads."""
        self._check_scoring(output_type)
        for leaf, task in built.tasks.items():
            config = task.config
            prefix = f"benchmark.task={show(self.task)}: task {leaf}"
            if getattr(task, "MULTIMODAL", False):
                raise ConfigError(f"{prefix} reads images or audio: valid values are text-only tasks")
            if task.multiple_input:
                raise ConfigError(f"{prefix} puts each choice in its own context (doc_to_text gives an index, as "
                                  "winogrande does): valid values are tasks with one context per document")
            if (config.repeats or 1) != 1:
                raise ConfigError(f"{prefix} asks each document {config.repeats} times (repeats): valid values are "
                                  "tasks with repeats: 1")
            if output_type == "generate_until":
                self._check_generation(task, prefix)
            elif self.filter is not None:
                raise ConfigError(f"benchmark.filter={show(self.filter)} filters generated answers and task {leaf} is "
                                  "multiple_choice: valid values are null")
            if self.apply_chat_template and config.gen_prefix:
                raise ConfigError(
                    f"benchmark.apply_chat_template=true and {prefix} starts the answer with gen_prefix "
                    f"{config.gen_prefix!r}, an assistant turn a question cannot hold: valid values are "
                    "apply_chat_template=false"
                )
            default = built.default_fewshot[leaf]
            if self.num_fewshot not in (None, 0) and default == 0:
                raise ConfigError(
                    f"benchmark.num_fewshot={self.num_fewshot} but {prefix} fixes num_fewshot: 0 in its YAML (lm-eval "
                    "ignores any other): valid values are null or 0"
                )

    def _check_generation(self, task, prefix: str) -> None:
        from lm_eval.models.utils import normalize_gen_kwargs

        kwargs = normalize_gen_kwargs(task.config.generation_kwargs or {}, DEFAULT_MAX_GEN_TOKS)
        if kwargs.get("do_sample"):
            raise ConfigError(f"{prefix} samples its answers (generation_kwargs do_sample: true): valid values are "
                              "tasks that decode greedily, as answers here are")
        if "exact_match" not in task._metric_fn_list:
            metrics = ", ".join(task._metric_fn_list) or "none"
            raise ConfigError(f"{prefix} is scored by {metrics}: valid values are generate_until tasks scored by "
                              "exact_match (outro_sweep.scoring.lm_eval_answers)")
        self.filter_name(task)

    def _generation(self, task) -> tuple[tuple[str, ...], int]:
        """(until strings, max_gen_toks) of a generate_until task, normalised as lm-eval's HFLM does."""
        from lm_eval.models.utils import normalize_gen_kwargs

        kwargs = normalize_gen_kwargs(task.config.generation_kwargs or {}, DEFAULT_MAX_GEN_TOKS)
        until = kwargs.get("until") or []
        return tuple(str(u) for u in until if u), int(kwargs["max_gen_toks"])

    def build_requests(self, built: BuiltTasks) -> dict[str, list]:
        """Per leaf task, lm-eval's Instances for the selected documents (``limit``: the first N,
        enough for any question ``load`` keeps), built as ``simple_evaluate`` builds them."""
        if self.limit == 0:  # lm-eval reads limit=0 as no limit
            return {leaf: [] for leaf in built.tasks}
        requests = {}
        for leaf, task in built.tasks.items():
            default = built.default_fewshot[leaf]
            shots = (default or 0) if self.num_fewshot is None or default == 0 else self.num_fewshot
            task.set_config(key="num_fewshot", value=shots)
            task.set_fewshot_seed(seed=self.fewshot_seed)  # the sampler restarts: the same shots every build
            try:
                with quiet():
                    task.build_all_requests(limit=self.limit, apply_chat_template=self.apply_chat_template,
                                            fewshot_as_multiturn=False, chat_template=None)
            except Exception as err:  # noqa: BLE001 - an assertion of the sampler, an error of a YAML function
                if "did not find any docs" in str(err):
                    requests[leaf] = []
                    continue
                raise ConfigError(
                    f"benchmark.task={show(self.task)}: task {leaf} cannot build its prompts with num_fewshot={shots} "
                    f"({type(err).__name__}: {first_line(err)}): valid values are a num_fewshot its few-shot split "
                    "can give (benchmark.num_fewshot), or a YAML that builds in lm-eval"
                ) from None
            requests[leaf] = list(task.instances)
        return requests

    # ---------------------------------------------------------------- questions

    def _load(self) -> list[Question]:
        built = self.built()
        output_type = self.output_type()
        self._check(built, output_type)
        if output_type == "generate_until" and self.max_new_tokens_set is None:
            self.max_new_tokens = max(self._generation(task)[1] for task in built.tasks.values())
        questions = []
        self.without_answer = {}
        for leaf, instances in self.build_requests(built).items():
            task = built.tasks[leaf]
            by_doc: dict[int, list] = defaultdict(list)
            for instance in instances:
                by_doc[instance.doc_id].append(instance)
            for doc_id in sorted(by_doc):
                ordered = sorted(by_doc[doc_id], key=lambda instance: instance.idx)
                if output_type == "multiple_choice":
                    question = self._choice_question(leaf, task, doc_id, ordered)
                    if question is None:
                        self.without_answer.setdefault(leaf, []).append(doc_id)
                        continue
                    questions.append(question)
                else:
                    questions.append(self._open_question(leaf, task, doc_id, ordered[0]))
        for leaf, doc_ids in self.without_answer.items():
            log.warning("benchmark.task=%s: task %s has %d documents whose doc_to_target names none of their choices "
                        "(first: doc %d); they are left out (lm-eval keeps them, always wrong)", self.task, leaf,
                        len(doc_ids), doc_ids[0])
        return questions

    def _choice_question(self, leaf: str, task, doc_id: int, instances: list) -> Question | None:
        """The document's question; None where its target names none of its choices."""
        doc = instances[0].doc
        with quiet():
            choices = [str(choice) for choice in task.doc_to_choice(doc)]
            gold = _gold_index(task, doc, choices)
            text = task.doc_to_text(doc)
        where = f"benchmark.task={show(self.task)}: task {leaf} doc {doc_id}"
        if not 2 <= len(choices) <= MAX_OPTIONS:
            raise ConfigError(f"{where} has {len(choices)} choices: valid values are tasks with 2..{MAX_OPTIONS} "
                              "choices per document")
        if gold is None:
            return None
        # The first len(choices) requests are the choices' (acc_mutual_info appends unconditional ones).
        instances = instances[: len(choices)]
        return Question(
            id=f"{leaf}/{doc_id}",
            kind="mc",
            prompt=instances[0].arguments[0],
            references=(option_letters(len(choices))[gold],),
            options=tuple(choices),
            categories=(("task", leaf),),
            question=text if isinstance(text, str) else "",
            continuations=tuple(instance.arguments[1] for instance in instances),
            template=self.apply_chat_template,
        )

    def _open_question(self, leaf: str, task, doc_id: int, instance) -> Question:
        doc = instance.doc
        with quiet():
            references = _targets(task, doc)
            text = task.doc_to_text(doc)
        if not references:
            raise ConfigError(f"benchmark.task={show(self.task)}: task {leaf} doc {doc_id} has no target: valid "
                              "values are documents whose doc_to_target gives an answer")
        until, _ = self._generation(task)
        return Question(
            id=f"{leaf}/{doc_id}",
            kind="open",
            prompt=instance.arguments[0],
            references=references,
            categories=(("task", leaf),),
            question=text if isinstance(text, str) else "",
            template=self.apply_chat_template,
            stop=until,
        )

    # ---------------------------------------------------------------- identity, messages

    def data_files(self) -> dict[str, Path]:
        """Task YAMLs (their includes and the Python files of their ``!function``), the local
        data files they name, and lm-eval's prompt-building code. {} where the task cannot be
        built: such a cell fails its checks in one line and has no results."""
        try:
            built = self.built()
        except ConfigError:
            return {}
        import lm_eval

        package = Path(lm_eval.__file__).parent
        files: dict[str, Path] = {f"lm_eval/api/{name}": package / "api" / name for name in ("task.py", "samplers.py")}
        yamls = list(built.group_yamls)
        for leaf, task in built.tasks.items():
            source = (task.config.metadata or {}).get("config_source")
            if source and source != "inline":
                yamls.append(Path(source))
            files.update(_local_data_files(leaf, task.config))
        for path in _with_includes(yamls):
            files[self._yaml_name(path, package)] = path
            for script in _function_files(path):
                files[self._yaml_name(script, package)] = script
        return files

    def _yaml_name(self, path: Path, package: Path) -> str:
        """An environment-free name: relative to lm-eval's tasks or to include_path."""
        for root, label in ((package / "tasks", "lm_eval/tasks"), (self.include_path, "include_path")):
            if root is None:
                continue
            try:
                return f"{label}/{path.resolve().relative_to(Path(root).resolve()).as_posix()}"
            except ValueError:
                continue
        return f"yaml/{path.name}"

    def describe(self) -> str:
        shots = "the task's" if self.num_fewshot is None else str(self.num_fewshot)
        where = f", include_path={self.include_path}" if self.include_path else ""
        return f"task={self.task}{where}, num_fewshot={shots}"

    def _empty_hint(self) -> str:
        return "check benchmark.limit, and that the task's evaluation split (test_split, else validation_split) " \
               "holds documents"


def _with_includes(yamls: list[Path]) -> list[Path]:
    """The YAMLs and every file their ``include:`` names, recursively (each once)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    seen: list[Path] = []
    pending = [Path(p).resolve() for p in yamls]
    while pending:
        path = pending.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        try:
            raw = load_yaml(path, resolve_func=False, recursive=False)
        except Exception:  # noqa: BLE001 - it built, so this is an include it does not need
            continue
        includes = raw.get("include") or []
        for include in includes if isinstance(includes, list) else [includes]:
            target = Path(str(include))
            pending.append((target if target.is_absolute() else path.parent / target).resolve())
    return seen


def _function_files(yaml_path: Path) -> list[Path]:
    """The Python files beside a YAML that its ``!function <module>.<name>`` tags read."""
    found = []
    for spec in re.findall(r"!function\s+([\w.]+)", yaml_path.read_text(encoding="utf-8", errors="replace")):
        module = spec.rpartition(".")[0]
        path = yaml_path.parent / f"{module.replace('.', '/')}.py"
        if module and path.is_file() and path not in found:
            found.append(path)
    return found


def _local_data_files(leaf: str, config) -> dict[str, Path]:
    """The local files a task's dataset is read from: ``dataset_kwargs.data_files`` (a path, a
    list, or a split -> path(s) mapping; globs expanded), ``data_dir``, and a ``dataset_path``
    that is a local folder or file. Named by the task, the split and the file's own name."""
    kwargs = config.dataset_kwargs or {}
    found: dict[str, Path] = {}

    def add(label: str, pattern: str) -> None:
        if "://" in pattern:
            return  # a remote file: named by the YAML only
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True)) or [os.path.expanduser(pattern)]
        for number, match in enumerate(matches):
            path = Path(match).resolve()  # a relative one: to the working folder, as datasets reads it
            if path.is_dir():
                add_folder(f"{label}/{number}", path)
            else:
                found[f"{leaf}/{label}/{number}/{path.name}"] = path

    def add_folder(label: str, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                found[f"{leaf}/{label}/{relative.as_posix()}"] = path

    data_files = kwargs.get("data_files")
    if isinstance(data_files, str):
        add("data_files", data_files)
    elif isinstance(data_files, (list, tuple)):
        for index, pattern in enumerate(data_files):
            add(f"data_files/{index}", str(pattern))
    elif isinstance(data_files, dict):
        for split, patterns in data_files.items():
            for index, pattern in enumerate(patterns if isinstance(patterns, (list, tuple)) else [patterns]):
                add(f"data_files/{split}/{index}", str(pattern))
    for label, value in (("data_dir", kwargs.get("data_dir")), ("dataset_path", config.dataset_path)):
        if label == "dataset_path" and value in PACKAGED_BUILDERS:
            continue  # datasets' builder for data_files, not a folder
        if value and Path(os.path.expanduser(str(value))).exists():
            path = Path(os.path.expanduser(str(value)))
            if path.is_dir():
                add_folder(label, path)
            else:
                found[f"{leaf}/{label}/{path.name}"] = path
    return found
