"""Benchmark: one cell's forward time with 1 torch thread against N, measured side by side.

    python -m outro_sweep.perf.threads [--threads 2] [--load 1] [--batch-size 8] [--new-tokens 8] [--repeats 7]

On a machine whose cores are shared with other work, more threads than free cores makes every
matrix product wait for the slowest thread; this prints how much that costs here, as the median
of per-repeat time ratios (the runs alternate, order flipped every repeat). ``--load K`` runs K
busy processes (one core each) beside it for the whole measurement, as another job on the same
machine would. Set the thread count
of a run with ``OMP_NUM_THREADS=1 python -m outro_sweep ...`` (torch reads it at start-up).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os

import torch

from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.perf.overhead import prompts, timed_generate, paired_ratio


def _spin() -> None:
    """One core's worth of other work: a busy loop until terminated."""
    while True:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="N (default: every core)")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    cache = os.environ.get("OUTRO_SWEEP_CACHE", os.path.expanduser("~/.cache/outro_sweep"))
    loaded = SmolLM2(cache_dir=cache).load()
    inputs = prompts(loaded, args.batch_size)
    pad = loaded.tokenizer.pad_token_id

    def timed(threads: int):
        def run() -> float:
            torch.set_num_threads(threads)
            return timed_generate(loaded.model, inputs, args.new_tokens, pad)
        return run

    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for process in busy:
        process.start()
    try:
        with torch.inference_mode():
            many, one, ratio = paired_ratio(timed(args.threads), timed(1), args.repeats)
    finally:
        for process in busy:
            process.terminate()
    print(f"SmolLM2-135M-Instruct on CPU, batch {args.batch_size}, {args.new_tokens} new tokens, "
          f"{args.repeats} repeats, {args.load} busy processes beside it, on {os.cpu_count()} cores")
    print(f"{args.threads} threads: {many:.3f} s; 1 thread: {one:.3f} s; "
          f"1 thread / {args.threads} threads = {ratio:.2f}x (median of paired ratios; < 1: one thread is faster)")


if __name__ == "__main__":
    main()
