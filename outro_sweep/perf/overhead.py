"""Benchmark: OutRo's generate() time as a ratio to the stock model, measured side by side.

    python -m outro_sweep.perf.overhead [--batch-sizes 1 8] [--repeats 7] [--new-tokens 16]

Stock and OutRo runs alternate within each repeat (order flipped every repeat), so machine
noise hits both alike; the reported figure is the median of the per-repeat ratios. Both
generate exactly ``--new-tokens`` tokens (EOS is ignored) on the same prompts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from outro_sweep.benchmarks.builtin_mc import BuiltinMC
from outro_sweep.interventions.outro import OutRo
from outro_sweep.interventions.sinks.massive_activation import MassiveActivation
from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.predict.data import Collator, Item


def prompts(loaded, batch_size: int) -> dict:
    questions = BuiltinMC(num_questions=batch_size).load()
    return Collator(loaded)([Item(i, q) for i, q in enumerate(questions)])["inputs"]


def timed_generate(model, inputs: dict, new_tokens: int, pad_token_id: int) -> float:
    started = time.perf_counter()
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                   temperature=None, top_p=None, top_k=None, pad_token_id=pad_token_id)
    return time.perf_counter() - started


def paired_ratio(run_stock, run_outro, repeats: int) -> tuple[float, float, float]:
    """(median stock s, median OutRo s, median of per-repeat OutRo/stock ratios).

    One warm-up call of each, then ``repeats`` pairs, the order flipped every repeat so that
    drift in machine load hits both sides alike.
    """
    run_stock(), run_outro()  # warm-up: allocator, kernels, first-call caches
    stock, edited = [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            stock.append(run_stock()), edited.append(run_outro())
        else:
            edited.append(run_outro()), stock.append(run_stock())
    ratio = statistics.median(e / s for e, s in zip(edited, stock))
    return statistics.median(stock), statistics.median(edited), ratio


def add_timing_arguments(parser: argparse.ArgumentParser, batch_sizes: list[int]) -> None:
    """The options every OutRo-vs-stock benchmark takes."""
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=batch_sizes)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument("--layer", default="auto", help="auto, null or an int")


def parse_layer(text: str):
    """--layer: "auto", "null" (no relaxation) or one layer index."""
    return None if text == "null" else ("auto" if text == "auto" else int(text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser, batch_sizes=[1, 8])
    args = parser.parse_args(argv)
    layer = parse_layer(args.layer)

    cache = os.environ.get("OUTRO_SWEEP_CACHE", os.path.expanduser("~/.cache/outro_sweep"))
    loaded = SmolLM2(cache_dir=cache).load()
    model, tokenizer = loaded.model, loaded.tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    print(f"SmolLM2-135M-Instruct on {device} ({torch.get_num_threads()} threads), "
          f"{args.new_tokens} new tokens, alpha={args.alpha}, layer={layer}, {args.repeats} repeats")
    print(f"{'batch':>5} {'prompt':>6} {'stock s':>8} {'outro s':>8} {'ratio':>6}  (median of paired ratios)")
    outro = OutRo(model, MassiveActivation(), alpha=args.alpha, layer=layer)
    with torch.inference_mode():
        for batch_size in args.batch_sizes:
            inputs = {k: v.to(device) for k, v in prompts(loaded, batch_size).items()}
            run_stock = lambda: timed_generate(model, inputs, args.new_tokens, tokenizer.pad_token_id)  # noqa: E731

            def run_outro() -> float:
                with outro:
                    return timed_generate(model, inputs, args.new_tokens, tokenizer.pad_token_id)

            stock, edited, ratio = paired_ratio(run_stock, run_outro, args.repeats)
            print(f"{batch_size:>5} {inputs['input_ids'].shape[1]:>6} {stock:>8.3f} {edited:>8.3f} {ratio:>6.2f}x")


if __name__ == "__main__":
    main()
