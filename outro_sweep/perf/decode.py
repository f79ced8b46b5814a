"""Benchmark: loading a clip from the FrameCache as a ratio to decoding it fresh, per video.

    python -m outro_sweep.perf.decode [--video-dir ../shared/data/videos]
        [--mode uniform --num-frames 16 | --mode fps --fps 2 --max-frames 32]
        [--max-side 448] [--audio] [--compress] [--repeats 3]

For each clip the cache is filled once (that first get, decode + write, is shown
as "first get"), then each repeat times a fresh ``decode_video`` and a cache hit side by
side, order flipped every repeat so machine noise hits both alike; the reported ratio is
the median of the per-repeat ratios (cached / fresh: 0.05 means a hit costs 5 % of a
decode). The cache lives in a temporary folder unless --cache-dir is given. Without the
video folder the command says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from outro_sweep.media.cache import FrameCache
from outro_sweep.media.decode import VideoError, VideoSampling, decode_with

VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mkv", ".avi", ".mov"}
DEFAULT_VIDEO_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos"


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-dir", type=Path, default=DEFAULT_VIDEO_DIR)
    parser.add_argument("--mode", choices=["uniform", "fps"], default="uniform")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is <= this (px)")
    parser.add_argument("--audio", action="store_true", help="also decode audio (mono 16 kHz)")
    parser.add_argument("--compress", action="store_true", help="zlib-compressed entries (np.savez_compressed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)

    if not args.video_dir.is_dir():
        print(f"skipping: no video folder at {args.video_dir} (pass --video-dir)")
        return 0
    videos = sorted(p for p in args.video_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        print(f"skipping: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) under {args.video_dir}")
        return 0
    sampling = VideoSampling(mode=args.mode, num_frames=args.num_frames, fps=args.fps,
                             max_frames=args.max_frames, max_side=args.max_side, audio=args.audio)

    with tempfile.TemporaryDirectory(prefix="frame_cache_") as scratch:
        cache = FrameCache(args.cache_dir or scratch, compress=args.compress)
        print(f"{len(videos)} videos under {args.video_dir}; sampling {sampling.key_fields()}; "
              f"{args.repeats} repeats; {'compressed' if cache.compress else 'uncompressed'} "
              f"cache in {cache.cache_dir}")
        print(f"{'video':<24} {'frames':>14} {'audio s':>7} {'first get s':>11} {'fresh s':>8} "
              f"{'cached s':>8} {'ratio':>6} {'speedup':>8} {'entry MB':>8}")
        totals = {"fresh": 0.0, "cached": 0.0}
        for path in videos:
            try:
                first_s, video = _timed(partial(cache.get_or_decode_with, path, sampling))
            except VideoError as error:
                print(f"{path.name:<24} skipped: {error}")
                continue
            fresh_times, cached_times, ratios = [], [], []
            for repeat in range(args.repeats):
                pair = {}
                order = ("fresh", "cached") if repeat % 2 == 0 else ("cached", "fresh")
                for which in order:
                    if which == "fresh":
                        pair[which], _ = _timed(partial(decode_with, path, sampling))
                    else:
                        pair[which], _ = _timed(partial(cache.get_or_decode_with, path, sampling))
                fresh_times.append(pair["fresh"])
                cached_times.append(pair["cached"])
                ratios.append(pair["cached"] / pair["fresh"])
            fresh, cached, ratio = (statistics.median(x) for x in (fresh_times, cached_times, ratios))
            totals["fresh"] += fresh
            totals["cached"] += cached
            shape = "x".join(str(d) for d in video.frames.shape[:3])
            audio_s = f"{len(video.audio) / video.audio_sample_rate:7.1f}" if video.audio is not None else f"{'-':>7}"
            entry_mb = cache.entry_path(path, sampling).stat().st_size / 2**20
            print(f"{path.name[:24]:<24} {shape:>14} {audio_s} {first_s:11.3f} {fresh:8.3f} "
                  f"{cached:8.4f} {ratio:6.3f} {1 / ratio:7.1f}x {entry_mb:8.2f}")
        if totals["fresh"]:
            print(f"{'total (medians)':<24} {'':>14} {'':>7} {'':>11} {totals['fresh']:8.3f} "
                  f"{totals['cached']:8.4f} {totals['cached'] / totals['fresh']:6.3f}")
        print(f"cache: {cache.decodes} decodes, {cache.hits} hits (one decode per video expected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
