"""Benchmark: a cloze-scored cell against lm-eval's own HF model, same task, docs and model.

    python -m outro_sweep.perf.cloze [--limit 300] [--repeats 3] [--batch-size 8] [--jsonl PATH]

The task is 4-option ARC-Easy (the test split as a local jsonl, by default the one beside the
repository in ``../shared/data/text_mc/arc_easy``) through a task YAML of lm-eval's format,
written to a temporary folder: ``doc_to_text: "{{query}}\\nAnswer:"``, the options as
continuations after a space, acc and acc_norm. Both sides score SmolLM2-135M-Instruct (the
embedded model, float32, CPU) on the first ``--limit`` docs, with the same batch size.

Two measurements, each repeated with the order of the two sides flipped every repeat (machine
noise hits both alike); the figure is the median of the per-repeat ratios:

- **whole commands**, as a user runs them: ``python -m outro_sweep benchmark=lm_eval ...
  outro=off`` (one cell, start-up, checks, scoring and metrics included) against
  ``python -m lm_eval --model hf ... --tasks <task>``;
- **compute only**, in one process on one loaded model: our ``option_loglikelihoods`` (one
  prefill per question, every option continuing its KV cache) against lm-eval's
  ``HFLM.loglikelihood`` over the task's own requests (one forward per (question, option) over
  context + continuation), from the same (context, continuation) pairs.

It also checks that both give the same choice per doc (acc and acc_norm), so the times compare
the same answers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.predict.cloze import cloze_options, option_loglikelihoods

REPO = Path(__file__).resolve().parents[2]
ARC_JSONL = REPO.parent / "shared" / "data" / "text_mc" / "arc_easy" / "arc_easy.jsonl"
TASK = "arc_easy_local"


def write_task(folder: Path, jsonl: Path) -> Path:
    """A task YAML of lm-eval's format over the ARC-Easy jsonl (fields query, choices, gold)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {jsonl}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{query}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        encoding="utf-8")
    return folder


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_SILENT": "true",
            "TOKENIZERS_PARALLELISM": "false"}


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed: {result.stderr.strip().splitlines()[-3:]}")
    return seconds


def whole_commands(tasks: Path, folder: Path, limit: int, batch_size: int, out: Path,
                   ours_first: bool) -> tuple[float, float]:
    """(seconds of our cell, seconds of lm-eval's CLI), each a fresh command in a fresh folder,
    run in the order ``ours_first`` says."""
    ours = [sys.executable, "-m", "outro_sweep", "benchmark=lm_eval", f"benchmark.task={TASK}",
            f"benchmark.include_path={tasks}", f"benchmark.limit={limit}", "outro=off", "logger.mode=disabled",
            f"predict.batch_size={batch_size}", "trainer.enable_progress_bar=false",
            f"paths.output_dir={out / 'ours'}", f"hydra.run.dir={out / 'ours' / 'job'}"]
    theirs = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={folder},dtype=float32",
              "--tasks", TASK, "--include_path", str(tasks), "--limit", str(limit), "--batch_size", str(batch_size),
              "--device", "cpu", "--output_path", str(out / "lm_eval")]
    if ours_first:
        first = _timed(ours)
        return first, _timed(theirs)
    second = _timed(theirs)
    return _timed(ours), second


def compute_only(loaded, tasks: Path, limit: int, batch_size: int) -> tuple[float, float, int, int]:
    """(our seconds, lm-eval's seconds, docs where acc's choice differs, docs where acc_norm's
    does) on the task's own requests."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict([TASK], TaskManager(include_path=str(tasks)))[TASK]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc: dict[int, list] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    docs = [sorted(by_doc[doc], key=lambda i: i.idx) for doc in sorted(by_doc)]
    tokenizer = loaded.tokenizer
    lm = HFLM(pretrained=loaded.model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    with torch.inference_mode():
        started = time.perf_counter()
        theirs = [ll for ll, _ in lm.loglikelihood([i for doc in docs for i in doc], disable_tqdm=True)]
        lm_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ours = []
        for first in range(0, len(docs), batch_size):
            batch = docs[first:first + batch_size]
            rows = [cloze_options(tokenizer, doc[0].args[0], tuple(i.args[1] for i in doc), special_tokens=True)
                    for doc in batch]
            inputs = dict(tokenizer([row.context for row in rows], return_tensors="pt", padding=True))
            ours += [ll for row in option_loglikelihoods(loaded, inputs, rows) for ll in row]
        our_seconds = time.perf_counter() - started
    acc_differs = norm_differs = at = 0
    for doc in docs:
        k = len(doc)
        mine, other = ours[at:at + k], theirs[at:at + k]
        chars = [len(i.args[1].lstrip(" ")) for i in doc]
        best = lambda values: max(range(k), key=lambda j: (values[j], -j))  # noqa: E731
        acc_differs += best(mine) != best(other)
        norm_differs += best([v / c for v, c in zip(mine, chars)]) != best([v / c for v, c in zip(other, chars)])
        at += k
    return our_seconds, lm_seconds, acc_differs, norm_differs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outro_sweep.perf.cloze", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="ARC-Easy docs (default 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--jsonl", type=Path, default=ARC_JSONL, help="the ARC-Easy test split as jsonl")
    parser.add_argument("--skip-commands", action="store_true", help="measure compute only")
    args = parser.parse_args(argv)
    if not args.jsonl.is_file():
        parser.error(f"--jsonl {args.jsonl} does not exist: valid values are a jsonl with query/choices/gold")
    os.environ.update(_env())

    loader = SmolLM2(cache_dir=os.environ.get("OUTRO_SWEEP_CACHE", os.path.expanduser("~/.cache/outro_sweep")))
    loaded = loader.load()
    with tempfile.TemporaryDirectory(prefix="bench_cloze_") as tmp:
        tasks = write_task(Path(tmp) / "tasks", args.jsonl.resolve())
        compute, commands = [], []
        for repeat in range(args.repeats):
            ours, theirs, acc_differs, norm_differs = compute_only(loaded, tasks, args.limit, args.batch_size)
            compute.append((ours, theirs))
            print(f"compute, repeat {repeat + 1}: ours {ours:.1f} s, lm-eval {theirs:.1f} s, ratio {ours / theirs:.2f}; "
                  f"choices differing: acc {acc_differs}, acc_norm {norm_differs} of {args.limit} docs", flush=True)
            if not args.skip_commands:
                ours_cmd, theirs_cmd = whole_commands(tasks, loader.converted_dir, args.limit, args.batch_size,
                                                      Path(tmp) / f"run{repeat}", ours_first=repeat % 2 == 0)
                commands.append((ours_cmd, theirs_cmd))
                print(f"whole command, repeat {repeat + 1}: ours {ours_cmd:.1f} s, lm-eval {theirs_cmd:.1f} s, "
                      f"ratio {ours_cmd / theirs_cmd:.2f}", flush=True)
    print(f"cloze on {args.limit} ARC-Easy docs, SmolLM2-135M float32, batch {args.batch_size}, "
          f"{args.repeats} repeats (median of per-repeat ratios):")
    print(f"  compute only:   ours / lm-eval HFLM = {statistics.median(o / t for o, t in compute):.2f}")
    if commands:
        print(f"  whole commands: ours / lm-eval CLI  = {statistics.median(o / t for o, t in commands):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
