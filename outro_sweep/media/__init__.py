"""Video input for video/omni LLM benchmarks: PyAV decoding, frame sampling, an on-disk cache.

- ``decode``: one file -> ``DecodedVideo`` (sampled RGB frames, their times, fps/duration,
  optional mono audio); the errors ``VideoMissingError`` / ``VideoDecodeError``; existence
  checks for a benchmark's clip list.
- ``audio``: an audio track -> mono float32 at a fixed rate.
- ``cache``: ``FrameCache``, decode each (file, settings) once, then load ``.npz``.
- ``bench_decode``: ``python -m outro_sweep.perf.decode``, cached vs fresh decode time.

Importing this package loads neither PyAV nor any file; FFmpeg loads on the first decode.
"""

from outro_sweep.media.cache import FrameCache
from outro_sweep.media.decode import (
    DecodedVideo,
    VideoDecodeError,
    VideoError,
    VideoMissingError,
    VideoSampling,
    check_videos_exist,
    decode_video,
    missing_videos_message,
)

__all__ = [
    "DecodedVideo",
    "FrameCache",
    "VideoDecodeError",
    "VideoError",
    "VideoMissingError",
    "VideoSampling",
    "check_videos_exist",
    "decode_video",
    "missing_videos_message",
]
