"""Decode one video file (mp4, webm, GIF, ...) with PyAV into sampled RGB frames (+ audio).

    decode_video(path, mode="uniform", num_frames=8)       -> DecodedVideo
    decode_video(path, mode="fps", fps=2, max_frames=32)   -> DecodedVideo

How a file is read (two passes, the second one decodes):

1. Probe: demux the video packets without decoding them (about 1-2 % of the decode time)
   to get every frame's presentation timestamp. That gives the frame count and the times
   even where the container header has none (GIFs, some webm) and handles variable frame
   rates (GIF frame delays differ frame to frame).
2. Decode every frame in order (inter-frame codecs need their predecessors anyway) but
   convert to RGB, and scale, only the selected ones, in swscale via
   ``frame.to_ndarray(width=, height=, format="rgb24")``: far cheaper than converting
   every frame at full size and resizing in numpy. The audio track, if asked for, is decoded
   in the same demux pass.

If the decoder yields a different number of frames than the probe counted (an edit list that
drops frames, a packet holding two frames), the decoded frames' own timestamps win: the
selection is redone on them and the video decoded once more. A warning is logged.

Errors name the file: ``VideoMissingError`` (no such file), ``VideoDecodeError`` (PyAV cannot
open or decode it, no video stream, no frames, or truncated: the container's index lists more
frames than the file holds, as after a cut-off download). Raw PyAV errors never escape; a
corrupt file fails in the probe or the decode, it does not hang.

PyAV is imported inside the functions that decode, so the settings checks and
``check_videos_exist`` run before (and without) loading FFmpeg.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from outro_sweep.errors import ConfigError
from outro_sweep.media.audio import DEFAULT_SAMPLE_RATE, MonoAudioCollector

log = logging.getLogger(__name__)

SAMPLING_MODES = ("uniform", "fps")

# A target time t selects the frame on screen at t; frame times are rationals turned into
# floats, so t is compared with this much slack (1 us, far below any frame interval).
_TIME_EPS_S = 1e-6


# --------------------------------------------------------------------------- errors


class VideoError(Exception):
    """A video could not be used; ``path`` is the file, the message names it."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = str(path)
        super().__init__(message)


class VideoMissingError(VideoError):
    """The video file does not exist (or is not a regular file)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, f"video file not found: {path}")


class VideoDecodeError(VideoError):
    """PyAV could not open or decode the file, or it holds no video frames."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.reason = reason
        super().__init__(path, f"cannot decode video {path}: {reason}")


def check_videos_exist(names: list[str], video_dir: str | os.PathLike) -> list[str]:
    """The names (relative to ``video_dir``) with no regular file behind them, in input order.

    Only stats the files (no decoding), so a benchmark can check hundreds of clips before a
    model loads. Each missing name is listed once.
    """
    root = Path(video_dir)
    missing = [name for name in dict.fromkeys(names) if not (root / name).is_file()]
    return missing


def missing_videos_message(
    missing: list[str],
    total: int,
    video_dir: str | os.PathLike,
    *,
    show: int = 3,
    dir_key: str = "benchmark.video_dir",
    skip_key: str = "benchmark.skip_missing",
) -> str:
    """One line for a ConfigError: how many of ``total`` are missing and the first ``show`` names.

    e.g. ``benchmark.video_dir=/x: 12 of 300 videos are missing (first: a.mp4, b.mp4, c.mp4);
    set benchmark.skip_missing=true to skip them``.
    """
    # File names may hold anything; escape line breaks so the message stays one line.
    names = [n.replace("\n", "\\n").replace("\r", "\\r") for n in missing[:show]]
    listed = ", ".join(names)
    if len(missing) > show:
        listed = f"first: {listed}"
    verb = "video is" if len(missing) == 1 else "videos are"
    return (f"{dir_key}={video_dir}: {len(missing)} of {total} {verb} missing ({listed}); "
            f"set {skip_key}=true to skip them")


# --------------------------------------------------------------------------- settings


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class VideoSampling:
    """What to take from a clip; also the part of the cache key that is not the file.

    mode="uniform": ``num_frames`` frames evenly spread over the whole clip (fps/max_frames
    ignored). mode="fps": one frame every 1/``fps`` seconds, at most ``max_frames`` of them
    (num_frames ignored). ``max_side`` (pixels) downscales so the longer side is at most
    that, keeping the aspect ratio (never upscales). ``audio`` decodes the audio track to
    mono float32 at ``audio_sample_rate`` Hz.
    """

    mode: str = "uniform"
    num_frames: int = 8
    fps: float | None = None
    max_frames: int | None = None
    max_side: int | None = None
    audio: bool = False
    audio_sample_rate: int = DEFAULT_SAMPLE_RATE
    # Only [start_s, end_s) of the clip, in seconds (a benchmark's annotated segment, e.g.
    # MVBench's start/end); None = from the first frame / to the end. Audio is not cut.
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self):
        if self.mode not in SAMPLING_MODES:
            raise ConfigError(f"video sampling mode={self.mode!r} is not valid; choose one of {', '.join(SAMPLING_MODES)}")
        if self.mode == "uniform" and not (_is_int(self.num_frames) and self.num_frames >= 1):
            raise ConfigError(f"video num_frames={self.num_frames!r} is not valid; use an int >= 1")
        if self.mode == "fps":
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not (0 < self.fps < math.inf):
                raise ConfigError(f"video fps={self.fps!r} is not valid; mode=fps needs a number > 0")
            if self.max_frames is not None and not (_is_int(self.max_frames) and self.max_frames >= 1):
                raise ConfigError(f"video max_frames={self.max_frames!r} is not valid; use an int >= 1 or null")
        if self.max_side is not None and not (_is_int(self.max_side) and self.max_side >= 1):
            raise ConfigError(f"video max_side={self.max_side!r} is not valid; use an int >= 1 or null")
        for name in ("start_s", "end_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < math.inf):
                raise ConfigError(f"video {name}={value!r} is not valid; use a number of seconds >= 0 or null")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ConfigError(f"video segment [{self.start_s}, {self.end_s}) is empty; end_s must exceed start_s")
        if self.audio and not (_is_int(self.audio_sample_rate) and self.audio_sample_rate >= 1):
            raise ConfigError(f"video audio_sample_rate={self.audio_sample_rate!r} is not valid; use an int > 0 (Hz)")

    def key_fields(self) -> dict:
        """The settings that change the output, normalised (ignored ones left out)."""
        key: dict = {"mode": self.mode, "max_side": None if self.max_side is None else int(self.max_side)}
        if self.mode == "uniform":
            key["num_frames"] = int(self.num_frames)
        else:
            key["fps"] = float(self.fps)
            key["max_frames"] = None if self.max_frames is None else int(self.max_frames)
        key["audio_sample_rate"] = int(self.audio_sample_rate) if self.audio else None
        if self.start_s is not None or self.end_s is not None:  # absent otherwise: old cache keys stay valid
            key["segment"] = [None if self.start_s is None else float(self.start_s),
                              None if self.end_s is None else float(self.end_s)]
        return key


# --------------------------------------------------------------------------- result


@dataclass(eq=False)
class DecodedVideo:
    """Sampled frames of one clip plus its timing metadata (and optionally its audio)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB; H, W after any max_side downscale
    timestamps_s: np.ndarray  # (T,) float64, seconds from the first video frame, increasing
    frame_indices: np.ndarray  # (T,) int64, which decoded frames (0-based, presentation order)
    source_num_frames: int  # frames in the whole video stream
    source_fps: float  # the stream's average frame rate (frames / s)
    duration_s: float  # video stream length: last frame time + its display duration
    audio: np.ndarray | None = None  # (N,) float32 mono in [-1, 1]; None: not asked or no track
    audio_sample_rate: int | None = None  # Hz of ``audio``; None when audio is None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def same_as(self, other: DecodedVideo) -> bool:
        """Exact equality of every field (arrays bit for bit)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                        and a.dtype == b.dtype and np.array_equal(a, b)):
                    return False
            elif a != b:
                return False
        return True


# --------------------------------------------------------------------------- frame selection


def uniform_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """Centre-of-segment indices: split [0, n) into ``num_frames`` equal segments, take each middle.

    index_k = floor((k + 1/2) * n / T), k = 0..T-1 (integer arithmetic, no float rounding);
    e.g. n=16, T=4 -> [2, 6, 10, 14]. With fewer source frames than asked (n < T) every frame
    is returned once (T' = n): repeating frames would feed a model duplicates and fake
    timestamps; a caller that needs exactly T can pad itself.
    """
    n, t = int(num_source_frames), int(num_frames)
    if n <= t:
        return np.arange(n, dtype=np.int64)
    k = np.arange(t, dtype=np.int64)
    return ((2 * k + 1) * n) // (2 * t)


def fps_indices(times_s: np.ndarray, duration_s: float, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Frames on screen at t = 0, 1/fps, 2/fps, ... < duration_s, duplicates dropped.

    ``times_s`` (n,) are the frames' start times in seconds, increasing, first one 0. Works
    for variable frame rates (GIF delays): the frame shown at t is the last one starting at
    or before t. A target fps above the source's cannot show more than every frame, so
    duplicates are dropped (T <= n). If more than ``max_frames`` remain, ``max_frames`` of
    them are taken centre-of-segment (so the cap lowers the rate and keeps the whole clip
    covered instead of cutting the end off).
    """
    times = np.asarray(times_s, dtype=np.float64)
    count = max(1, math.ceil(duration_s * fps - 1e-9))
    targets = np.arange(count, dtype=np.float64) / fps
    idx = np.searchsorted(times, targets + _TIME_EPS_S, side="right") - 1
    idx = np.unique(np.clip(idx, 0, len(times) - 1)).astype(np.int64)
    if max_frames is not None and len(idx) > max_frames:
        idx = idx[uniform_indices(len(idx), max_frames)]
    return idx


def segment_frames(times_s: np.ndarray, duration_s: float, start_s: float | None, end_s: float | None) -> np.ndarray:
    """Indices (W,) of the frames on screen during [start_s, end_s): those starting inside it,
    plus the one already showing at start_s. A segment past the clip's end keeps its last frame."""
    times = np.asarray(times_s, dtype=np.float64)
    start = 0.0 if start_s is None else float(start_s)
    end = duration_s if end_s is None else min(float(end_s), duration_s)
    first = max(0, int(np.searchsorted(times, start + _TIME_EPS_S, side="right")) - 1)
    last = int(np.searchsorted(times, end - _TIME_EPS_S, side="left"))  # exclusive
    return np.arange(min(first, len(times) - 1), max(last, first + 1), dtype=np.int64)[: len(times)]


def select_indices(sampling: VideoSampling, times_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Sorted unique frame indices to keep, (T,) int64 (within the segment, where one is set)."""
    times = np.asarray(times_s, dtype=np.float64)
    window = np.arange(len(times), dtype=np.int64)
    if sampling.start_s is not None or sampling.end_s is not None:
        window = segment_frames(times, duration_s, sampling.start_s, sampling.end_s)
        start = max(float(sampling.start_s or 0.0), float(times[window[0]]))
        end = duration_s if sampling.end_s is None else min(float(sampling.end_s), duration_s)
        times, duration_s = times[window] - start, max(end - start, 1e-6)
        times[0] = 0.0  # the frame showing at start_s counts from the segment's start
    if sampling.mode == "uniform":
        return window[uniform_indices(len(times), sampling.num_frames)]
    return window[fps_indices(times, duration_s, float(sampling.fps), sampling.max_frames)]


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so max(width, height) <= max_side, aspect ratio kept."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# --------------------------------------------------------------------------- decoding


@dataclass
class _Probe:
    times_s: np.ndarray  # (n,) float64 frame start times, first = 0
    duration_s: float
    source_fps: float


def _probe(path: Path) -> _Probe:
    """Demux (no decoding) the video packets: every frame's presentation time."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(path, "the file has no video stream")
        stream = container.streams.video[0]
        time_base = stream.time_base
        stamps: list[tuple[int | None, int]] = []  # (pts or dts, duration) in time_base units
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream flush packet
                continue
            stamps.append((packet.pts if packet.pts is not None else packet.dts, packet.duration or 0))
        rate = stream.average_rate or stream.guessed_rate
        header_frames = stream.frames  # from the container's index; 0 where it has none
    n = len(stamps)
    if n == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    if header_frames and n < header_frames:
        # An index listing more frames than the file holds: a cut-off download or copy.
        raise VideoDecodeError(path, f"truncated: the container lists {header_frames} video frames "
                                     f"but only {n} are in the file")
    if time_base is None or any(pts is None for pts, _ in stamps):
        # No timestamps at all (rare raw streams): assume a constant rate.
        step = 1.0 / float(rate) if rate else 0.0
        times = np.arange(n, dtype=np.float64) * step
        last_duration_s = step
    else:
        stamps.sort()  # decode order -> presentation order (B-frames)
        pts = np.array([p for p, _ in stamps], dtype=np.int64)
        times = (pts - pts[0]) * float(time_base)
        last_duration_s = stamps[-1][1] * float(time_base)
        if last_duration_s <= 0:
            last_duration_s = 1.0 / float(rate) if rate else (times[-1] / (n - 1) if n > 1 else 0.0)
    duration_s = float(times[-1] + last_duration_s)
    source_fps = float(rate) if rate else (n / duration_s if duration_s > 0 else 0.0)
    return _Probe(times_s=times, duration_s=duration_s, source_fps=source_fps)


def _frame_time_s(frame, index: int, fallback_fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return index / fallback_fps if fallback_fps > 0 else 0.0


def _decode_pass(path: Path, wanted: np.ndarray, max_side: int | None, source_fps: float,
                 audio: MonoAudioCollector | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the whole video stream once; convert the ``wanted`` frames to RGB.

    Returns (frames (len(wanted), H, W, 3) uint8, times (n_decoded,) float64 seconds of every
    decoded frame, absolute stream time). Frames past the end of the decoded stream stay
    unfilled; the caller checks the count first.
    """
    import av

    position = {int(i): k for k, i in enumerate(wanted)}  # frame index -> row in the output
    frames: np.ndarray | None = None
    target: tuple[int, int] | None = None
    interpolation = None
    times: list[float] = []
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        # Frame/slice threads: same pixels, faster on several cores.
        video.thread_type = "AUTO"
        streams = [video]
        if audio is not None and container.streams.audio:
            streams.append(container.streams.audio[0])
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                for aframe in packet.decode():
                    audio.add(aframe)
                continue
            for frame in packet.decode():
                index = len(times)
                times.append(_frame_time_s(frame, index, source_fps))
                row = position.get(index)
                if row is None:
                    continue
                if target is None:
                    # All frames get the first selected frame's (scaled) size, so a stream
                    # whose resolution changes mid-way still stacks into one array.
                    target = scaled_size(frame.width, frame.height, max_side)
                    if target != (frame.width, frame.height):
                        interpolation = "AREA"  # area averaging: no aliasing when shrinking
                    frames = np.empty((len(wanted), target[1], target[0], 3), dtype=np.uint8)
                frames[row] = frame.to_ndarray(width=target[0], height=target[1], format="rgb24",
                                               interpolation=interpolation)
    if frames is None:
        frames = np.empty((0, 0, 0, 3), dtype=np.uint8)
    return frames, np.asarray(times, dtype=np.float64)


def decode_video(path: str | os.PathLike, **settings) -> DecodedVideo:
    """Decode ``path`` and sample its frames; ``settings`` are ``VideoSampling``'s fields
    (its defaults are the only ones), e.g. ``decode_video(p, num_frames=16, audio=True)``.

    Raises ConfigError for bad settings, VideoMissingError if the file is absent and
    VideoDecodeError if PyAV cannot read it.
    """
    return decode_with(path, VideoSampling(**settings))


def decode_with(path: str | os.PathLike, sampling: VideoSampling) -> DecodedVideo:
    """``decode_video`` with the settings already in a ``VideoSampling``."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoMissingError(path)
    try:
        probe = _probe(path)
        wanted = select_indices(sampling, probe.times_s, probe.duration_s)
        collector = MonoAudioCollector(sampling.audio_sample_rate) if sampling.audio else None
        frames, decoded_times = _decode_pass(path, wanted, sampling.max_side, probe.source_fps, collector)
        if len(decoded_times) == 0:
            raise VideoDecodeError(path, "the decoder produced no frames")
        times_s = decoded_times - decoded_times[0]
        duration_s, num_source = probe.duration_s, len(decoded_times)
        if num_source != len(probe.times_s):
            log.warning("%s: the container lists %d video frames but %d decoded; sampling the decoded ones",
                        path, len(probe.times_s), num_source)
            frame_step = probe.duration_s - probe.times_s[-1]
            duration_s = float(times_s[-1] + frame_step)
            new_wanted = select_indices(sampling, times_s, duration_s)
            if not np.array_equal(new_wanted, wanted):
                wanted = new_wanted
                frames, _ = _decode_pass(path, wanted, sampling.max_side, probe.source_fps, None)
        waveform = collector.finish() if collector is not None else None
    except av.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise VideoDecodeError(path, f"{reason} ({type(error).__name__})") from error
    return DecodedVideo(
        frames=frames,
        timestamps_s=times_s[wanted],
        frame_indices=wanted.astype(np.int64),
        source_num_frames=int(num_source),
        source_fps=float(probe.source_fps),
        duration_s=float(duration_s),
        audio=waveform,
        audio_sample_rate=int(sampling.audio_sample_rate) if waveform is not None else None,
    )
