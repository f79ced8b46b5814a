"""Benchmark: OutRo's cost on a video LLM, as a ratio to the stock model, measured side by side.

    python -m outro_sweep.perf.video_overhead model=qwen2_5_vl_7b model.path=/data/Qwen2.5-VL-7B-Instruct [sink=first_k] \
        [--videos a.mp4 b.mp4] [--batch-sizes 1 4] [--repeats 7] [--new-tokens 16] [--alpha 3] [--layer auto]

The model is any video ``model=`` config and the sink rule any ``sink=`` config (Hydra overrides
as in a sweep, e.g. model.num_frames=8).
Each batch is built exactly as a cell builds it: clips decoded by PyAV (the given files,
cycled; without ``--videos``, synthetic 8-second 320x240 noise clips), rendered through the
processor's chat template, left-padded. Prefill + ``--new-tokens`` greedy tokens (EOS
ignored) are timed for the stock model and with OutRo attached, alternating within each
repeat (order flipped every repeat); the figure is the median of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from outro_sweep.benchmarks.base import ask
from outro_sweep.interventions.outro import OutRo
from outro_sweep.media.decode import decode_with
from outro_sweep.perf.overhead import add_timing_arguments, paired_ratio, parse_layer
from outro_sweep.predict.data import Collator, Item

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
PROMPT = "Describe what happens in this video, step by step."


def _noise_clip(path: Path, seconds: float = 8.0, fps: int = 10) -> Path:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _loader(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return instantiate(cfg.model), instantiate(cfg.sink), cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: model=<video model> model.path=...")
    parser.add_argument("--videos", type=Path, nargs="*", default=None)
    add_timing_arguments(parser, batch_sizes=[1, 4])
    args = parser.parse_args(argv)
    layer = parse_layer(args.layer)
    os.environ["HF_HUB_OFFLINE"] = "1"

    loader, rule, cfg = _loader(args.overrides)
    loaded = loader.load()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = loaded.model.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        files = args.videos or [_noise_clip(Path(tmp) / f"noise{i}.mp4") for i in range(2)]
        started = time.perf_counter()
        clips = [decode_with(path, loader.sampling) for path in files]
        decode_s = (time.perf_counter() - started) / len(files)
    print(f"{cfg.model.name} ({type(model).__name__}, {loader.num_layers()} decoder layers) on {device}, "
          f"{torch.get_num_threads()} threads; {clips[0].num_frames} frames/clip, decode {decode_s:.2f} s/clip; "
          f"{args.new_tokens} new tokens, alpha={args.alpha}, layer={layer}, {args.repeats} repeats")
    print(f"sink rule {cfg.sink.get('_target_', '').rsplit('.', 1)[-1]} (sink=... to change)")
    print(f"{'batch':>5} {'tokens':>6} {'stock s':>8} {'outro s':>8} {'ratio':>6} {'rows w/ sinks':>13}"
          "  (median of paired ratios)")
    rule.configure(loader.sink_dims)
    outro = OutRo(model, rule, alpha=args.alpha, layer=layer)
    collate = Collator(loaded)
    pad = loaded.tokenizer.pad_token_id
    with torch.inference_mode():
        for batch_size in args.batch_sizes:
            items = [Item(i, ask(f"bench/{i}", PROMPT, (), "-", "open", video="clip"), clips[i % len(clips)])
                     for i in range(batch_size)]
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                      for k, v in collate(items)["inputs"].items()}

            def generate() -> float:
                begun = time.perf_counter()
                model.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=pad,
                               **loader.generate_kwargs())
                if device == "cuda":
                    torch.cuda.synchronize()
                return time.perf_counter() - begun

            def with_outro() -> float:
                with outro:
                    return generate()

            stock, edited, ratio = paired_ratio(generate, with_outro, args.repeats)
            # From OutRo's last prefill: rows where the rule found a sink (else OutRo only scanned).
            with_sinks = sum(1 for d in outro.take_sample_diagnostics() if d["first_sink_layer"] is not None)
            print(f"{batch_size:>5} {inputs['input_ids'].shape[1]:>6} {stock:>8.3f} {edited:>8.3f} {ratio:>6.2f}x "
                  f"{with_sinks:>6}/{batch_size}")


if __name__ == "__main__":
    main()
