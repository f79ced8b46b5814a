"""Benchmark: SinkRouter's decode time as a ratio to the stock model, measured side by side.

    python -m outro_sweep.perf.sinkrouter [--contexts 1024 4096 max] [--threshold 0.5]
        [--new-tokens 32] [--repeats 5] [--batch-size 1]

On SmolLM2-135M-Instruct, per context length (``max``: the model's own limit,
``max_position_embeddings``, less the new tokens), a prompt of exactly that many tokens of
filler text, then ``--new-tokens`` tokens generated greedily (EOS ignored) by the stock model
and with SinkRouter attached. Only the decode steps are timed (``DecodeTimer``: first to last
generated token, device synchronised; the prefill is excluded: SinkRouter leaves it
unchanged). Stock and SinkRouter alternate within each repeat, the order flipped every repeat,
so machine noise hits both alike; the ratio is the median of the per-repeat ratios (below 1:
SinkRouter decodes faster). The skip rate is the share of (layer >= first_layer, KV group,
step) decisions that skipped, over the rows, from SinkRouter's own per-row diagnostics.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from outro_sweep.interventions.sinkrouter import SinkRouter
from outro_sweep.models.smollm2 import SmolLM2
from outro_sweep.perf.overhead import paired_ratio
from outro_sweep.predict.decode_timer import DecodeTimer, device_name

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")


def parse_context(text: str) -> int | str:
    """--contexts entries: a positive token count, or ``max``."""
    if text == "max":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a context length: valid values are positive integers "
                                         "(tokens) or max") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a context length: valid values are positive integers "
                                         "(tokens) or max")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=parse_context, nargs="+", default=[1024, 4096, "max"],
                        help="prompt lengths in tokens; max = the model's limit less --new-tokens")
    parser.add_argument("--threshold", type=float, default=0.5, help="SinkRouter's cosine threshold (mode constant)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1)
    return parser


def prompt_ids(tokenizer, length: int, rows: int) -> dict:
    """(rows, length) input ids of filler text, exactly ``length`` tokens, no padding."""
    ids = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    ids = (ids * (length // len(ids) + 1))[:length]
    input_ids = torch.tensor([ids] * rows)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def decode_seconds(model, inputs: dict, new_tokens: int, pad_token_id: int) -> float:
    """One greedy generate of exactly ``new_tokens`` tokens; its decode time (prefill excluded)."""
    from transformers import StoppingCriteriaList

    timer = DecodeTimer(inputs["input_ids"].device, inputs["input_ids"].shape[0], int(inputs["attention_mask"].sum()))
    model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, temperature=None,
                   top_p=None, top_k=None, pad_token_id=pad_token_id, stopping_criteria=StoppingCriteriaList([timer]))
    return timer.sums()["decode_seconds"]


def main(argv: list[str] | None = None) -> int:
    cli = build_parser()
    args = cli.parse_args(argv)
    if args.new_tokens < 2:
        cli.error(f"--new-tokens={args.new_tokens}: valid values are integers >= 2 (one decode step at least)")

    cache = os.environ.get("OUTRO_SWEEP_CACHE", os.path.expanduser("~/.cache/outro_sweep"))
    loaded = SmolLM2(cache_dir=cache).load()
    model, tokenizer = loaded.model, loaded.tokenizer
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    limit = int(model.config.max_position_embeddings)
    contexts = sorted({limit - args.new_tokens if c == "max" else c for c in args.contexts})
    too_long = [c for c in contexts if c + args.new_tokens > limit]
    if too_long:
        cli.error(f"--contexts={too_long}: prompt plus --new-tokens exceeds the model's limit of {limit} "
                       "tokens: valid values are up to max")
    router = SinkRouter(group="sinkrouter", threshold=args.threshold)
    print(f"SmolLM2-135M-Instruct on {device_name(device)} ({torch.get_num_threads()} threads), batch "
          f"{args.batch_size}, {args.new_tokens} new tokens, threshold={args.threshold}, {args.repeats} repeats; "
          f"decode time only (prefill excluded)")
    print(f"{'context':>7} {'stock s':>8} {'router s':>8} {'ratio':>6} {'skip rate':>9}  (median of paired ratios)")
    with torch.inference_mode():
        for context in contexts:
            inputs = {k: v.to(device) for k, v in prompt_ids(tokenizer, context, args.batch_size).items()}
            skips: list[float] = []

            def run_stock() -> float:
                return decode_seconds(model, inputs, args.new_tokens, tokenizer.pad_token_id)

            def run_router() -> float:
                with router.attach(loaded, None) as editor:
                    seconds = decode_seconds(model, inputs, args.new_tokens, tokenizer.pad_token_id)
                    rows = editor.take_sample_diagnostics()
                skips.append(statistics.mean(row["skip_rate"] for row in rows))
                return seconds

            stock, routed, ratio = paired_ratio(run_stock, run_router, args.repeats)
            print(f"{context:>7} {stock:>8.3f} {routed:>8.3f} {ratio:>6.2f}x {100 * statistics.mean(skips):>8.1f}%",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
