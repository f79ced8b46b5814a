"""Benchmark: a sweep run as cell groups, as a ratio to the same cells run one by one.

    python -m outro_sweep.perf.sweep [--limit 24] [--video-limit 9] [--repeats 3] [--skip-video]

The user's sweep, ``python -m outro_sweep -m outro.layer=1,2,4 outro.alpha=0.1,0.3`` (6 OutRo
cells and their shared baseline: 7 cells), is run twice per repeat, each time as a whole command
in a fresh output folder:

- grouped: as it runs by default (``group.share=true``: one model load, clips and tower outputs
  kept, and each batch's decoder layers run once for the cells that compute them alike: the
  baseline's below the first sink, and a cell that computes a batch as an earlier one replays
  all of it);
- one by one: ``group.share=false``: every cell loads its model and computes everything itself.

The two alternate within each repeat (order flipped every repeat) so machine noise hits both
alike; the figure is the median of the per-repeat ratios, for the whole command and for the
cells' own seconds (each job's ``status.json``; the command's start-up, sweep-wide checks and
report are the same work in both modes). Two models:

- SmolLM2-135M (real, offline) on the built-in questions (``--limit`` of them, generated answers);
- a small random Qwen2.5-VL behind the real Qwen2.5-VL processor (``outro_sweep.perf.tiny_video_lm``)
  on the three real Daily-Omni example clips and their 9 questions (``--video-limit``), with the
  frame cache starting empty in both runs.

It also measures the two ways a group's cells could continue from a shared prefix: K batch
slices of one forward (the K cells' rows stacked, here the stock model's ``generate()``) against
one cell after another, each computing everything (what ``outro_sweep.group.prefix`` does, before
it skips the layers that cells compute alike).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.perf.overhead import prompts, timed_generate
from outro_sweep.perf.tiny_video_lm import save_tiny_qwen2_5_vl

REPO = Path(__file__).resolve().parents[2]
USER_SWEEP = ["outro.layer=1,2,4", "outro.alpha=0.1,0.3"]
SHARED_DATA = REPO.parent / "shared" / "data"


def _sweep_seconds(overrides: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds of ``python -m outro_sweep -m <overrides>`` as a user runs it, start-up,
    checks and report included; the sum of its cells' own seconds from their ``status.json``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "outro_sweep", "-m", *USER_SWEEP, *overrides, "logger.mode=disabled",
                             f"paths.output_dir={out}", f"hydra.sweep.dir={out / 'sweep'}"],
                            cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the sweep failed ({' '.join(overrides)}): {result.stderr.strip().splitlines()[-1:]}")
    statuses = [json.loads(path.read_text()) for path in (out / "sweep").glob("*/status.json")]
    if any("seconds" not in status for status in statuses):  # skipped as done: its seconds are not this run's
        raise RuntimeError(f"a cell of {out} did not run here; the bench needs fresh output folders")
    cells = sum(status["seconds"] for status in statuses)
    return seconds, cells


def paired(overrides: list[str], repeats: int, fresh_cache: bool, scratch: Path) -> dict[str, list[float]]:
    """Per repeat: grouped and one-by-one wall seconds, and the cells' own seconds of each."""
    runs = {"grouped": [], "alone": [], "grouped cells": [], "alone cells": []}
    for repeat in range(repeats):
        modes = [("grouped", []), ("alone", ["group.share=false"])]
        for name, extra in modes if repeat % 2 == 0 else modes[::-1]:
            out = scratch / f"{name}{repeat}"
            cache = [f"paths.cache_dir={out / 'cache'}"] if fresh_cache else []
            wall, cells = _sweep_seconds([*overrides, *extra, *cache], out)
            runs[name].append(wall)
            runs[f"{name} cells"].append(cells)
    return runs


def report(title: str, runs: dict[str, list[float]]) -> None:
    """Whole commands, then the cells' own seconds (the command's start-up, sweep-wide checks and
    report are the same work in both)."""
    print(title, flush=True)
    for label, grouped, alone in (("whole command", "grouped", "alone"), ("cells only", "grouped cells", "alone cells")):
        ratios = [g / a for g, a in zip(runs[grouped], runs[alone])]
        print(f"  {label}: grouped {statistics.median(runs[grouped]):.1f} s, one by one "
              f"{statistics.median(runs[alone]):.1f} s (medians): grouped / one by one = "
              f"{statistics.median(ratios):.2f}x (per repeat: " + " ".join(f"{r:.2f}" for r in ratios) + ")",
              flush=True)


def continuation_ratio(cells: int = 6, repeats: int = 5, new_tokens: int = 8) -> float:
    """SmolLM2, 8 built-in prompts: ``generate()`` of ``new_tokens`` tokens over ``cells`` x 8 stacked
    rows in one call, as a ratio to ``cells`` calls over the 8 rows one after another (median of
    per-repeat ratios): what running K cells as K batch slices of one forward would cost against
    running them one after another."""
    import torch

    loaded = SmolLM2(cache_dir=os.environ.get("OUTRO_SWEEP_CACHE",
                                              str(Path.home() / ".cache" / "outro_sweep"))).load()
    inputs = prompts(loaded, 8)
    stacked = {key: value.repeat(cells, 1) for key, value in inputs.items()}
    pad = loaded.tokenizer.pad_token_id

    def one_call() -> float:
        return timed_generate(loaded.model, stacked, new_tokens, pad)

    def one_after_another() -> float:
        return sum(timed_generate(loaded.model, inputs, new_tokens, pad) for _ in range(cells))

    with torch.no_grad():
        one_call(), one_after_another()  # warm-up
        ratios = []
        for repeat in range(repeats):
            if repeat % 2 == 0:
                together = one_call()
                ratios.append(together / one_after_another())
            else:
                apart = one_after_another()
                ratios.append(one_call() / apart)
    return statistics.median(ratios)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=24, help="built-in questions per SmolLM2 cell")
    parser.add_argument("--video-limit", type=int, default=9, help="Daily-Omni example questions per video cell (<= 9)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--hf-config", type=Path, default=SHARED_DATA / "hf_configs" / "Qwen__Qwen2.5-VL-7B-Instruct",
                        help="the Qwen2.5-VL checkpoint's processor files (no weights needed)")
    parser.add_argument("--clips", type=Path, default=SHARED_DATA / "videos" / "dailyomni_examples",
                        help="the Daily-Omni example clips with qa_for_these_3_videos.json")
    args = parser.parse_args(argv)
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"outro_sweep.perf.sweep: the 7-cell sweep {' '.join(USER_SWEEP)} (+ baseline), {args.repeats} repeats, "
          f"torch threads {torch_threads}", flush=True)
    with tempfile.TemporaryDirectory(prefix="perf_sweep_") as scratch:
        scratch = Path(scratch)
        text = [f"benchmark.limit={args.limit}"]
        report(f"SmolLM2-135M, builtin_mc limit {args.limit}, generated answers:",
               paired(text, args.repeats, fresh_cache=False, scratch=scratch / "text"))
        if not args.skip_video:
            model = save_tiny_qwen2_5_vl(args.hf_config, scratch / "tiny_qwen2_5_vl")
            video = ["model=qwen2_5_vl_7b", f"model.path={model}", "model.dtype=float32", "model.num_frames=8",
                     "benchmark=dailyomni", f"benchmark.data_dir={args.clips}",
                     "benchmark.qa_file=qa_for_these_3_videos.json", f"benchmark.video_dir={args.clips}",
                     f"benchmark.limit={args.video_limit}", "predict.batch_size=3", "trainer.accelerator=cpu"]
            for rule in ("massive_activation", "first_k"):
                report(f"tiny Qwen2.5-VL (real processor), 3 real Daily-Omni clips, {args.video_limit} questions, "
                       f"sink={rule}:",
                       paired([*video, f"sink={rule}"], args.repeats, fresh_cache=True, scratch=scratch / rule))
    ratio = continuation_ratio()
    print(f"6 cells' generate() (SmolLM2, 8 prompts, 8 new tokens): one call over the 6 batches stacked / "
          f"6 calls one after another = {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
