"""Benchmark: one cell on N processes (DDP) as a ratio to the same cell on one, side by side.

    python -m outro_sweep.perf.scale [--processes 2] [--repeats 3] [overrides ...]
    e.g. python -m outro_sweep.perf.scale --processes 4 model=qwen2_5_vl_7b model.path=... benchmark=nextqa_mc ...

Each repeat runs the cell twice from scratch, once as a single process and once under
``torchrun --nproc_per_node=N`` (the order flipped every repeat), each into a fresh output
folder so nothing is resumed or skipped; wall time includes start-up and model load, as a
user sees it. The figure is the median of the per-repeat ratios (N processes / one). Both runs'
predictions are compared: they must be identical. Processes share the machine's CPU cores
or take one GPU each (CUDA_VISIBLE_DEVICES as given).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = ["benchmark.limit=32", "benchmark.max_new_tokens=4", "predict.batch_size=4", "logger.mode=disabled"]


def _run(command: list[str], output_dir: Path) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run([*command, f"paths.output_dir={output_dir}", f"hydra.run.dir={output_dir / 'job'}"],
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(command[:4])} ... failed:\n{result.stderr[-2000:]}")
    (predictions,) = output_dir.glob("cells/*/predictions.jsonl")
    return seconds, predictions.read_text()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the cell (defaults: a small SmolLM2 cell)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    overrides = [*DEFAULTS, *args.overrides]
    single = [sys.executable, "-m", "outro_sweep", *overrides]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    many = [torchrun, "--standalone", f"--nproc_per_node={args.processes}", "-m", "outro_sweep", *overrides]
    print(f"one cell ({' '.join(overrides)}): 1 process vs {args.processes} (torchrun), {args.repeats} repeats, "
          f"{os.cpu_count()} CPU cores")
    ratios, ones, manys = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = [("one", single), ("many", many)]
            if repeat % 2:
                order.reverse()
            times, outputs = {}, {}
            for name, command in order:
                times[name], outputs[name] = _run(command, Path(tmp) / f"{repeat}-{name}")
            if outputs["one"] != outputs["many"]:
                raise SystemExit("bench_scale: the N-process predictions differ from the 1-process ones")
            ones.append(times["one"]), manys.append(times["many"])
            ratios.append(times["many"] / times["one"])
            print(f"  repeat {repeat}: 1 process {times['one']:.1f} s, {args.processes} processes "
                  f"{times['many']:.1f} s, ratio {ratios[-1]:.2f}x")
    print(json.dumps({"processes": args.processes, "median_one_s": statistics.median(ones),
                      "median_many_s": statistics.median(manys), "median_ratio": statistics.median(ratios)}))
    print(f"{args.processes} processes / 1 process: {statistics.median(ratios):.2f}x wall time "
          "(median of paired ratios; predictions identical)")


if __name__ == "__main__":
    main()
