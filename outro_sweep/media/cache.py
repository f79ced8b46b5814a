"""On-disk cache of decoded, sampled clips: decode each (file, settings) pair once per machine.

A sweep runs the same benchmark clips through many cells (layers x strengths x sinks); the
frames a cell sees depend only on the file and the sampling settings, so they are decoded
once and every later cell loads an ``.npz`` (uncompressed by default) instead (ratio:
see bench_decode.py).

Key = sha256 of: the file's resolved absolute path, size and mtime_ns (editing or replacing
the file, or touching it, changes the key), the output-changing sampling settings
(``VideoSampling.key_fields``), the cache format version and the PyAV/FFmpeg versions (a new
decoder may give different pixels). Stale entries are never read, only left behind; delete
the folder to reclaim the space.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so cells
running side by side never read half a file; if two decode the same clip at once both write
the same content and the last rename wins. An unreadable entry is decoded again and
overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from outro_sweep.media.decode import (
    DecodedVideo,
    VideoMissingError,
    VideoSampling,
    decode_with,
)

log = logging.getLogger(__name__)

# Bump when what decode_with returns for the same settings changes (selection rule, fields).
CACHE_FORMAT = 1


class FrameCache:
    """``get_or_decode`` returns a cached ``DecodedVideo`` or decodes, stores and returns one.

    ``decodes`` and ``hits`` count this object's misses and hits (tests assert on them; a
    hit never opens the video). Each decode is logged at DEBUG.

    ``compress`` (default False): True writes zlib-compressed ``.npz`` (``np.savez_compressed``).
    Natural video frames shrink only ~1.5-3x under zlib while writing gets ~30x and reading
    ~8x slower than plain ``np.savez`` (a compressed hit cost 18% of a fresh decode, a plain
    one 2%, in bench_decode.py); pass True only where disk space is scarce. Entries of either kind are read alike, and the
    key does not depend on it.
    """

    def __init__(self, cache_dir: str | os.PathLike, *, compress: bool = False):
        self.cache_dir = Path(cache_dir)  # created on the first write
        self.compress = compress
        self.decodes = 0
        self.hits = 0

    # -- keys -------------------------------------------------------------------------

    def key(self, path: str | os.PathLike, sampling: VideoSampling) -> str:
        """Hex sha256 of the file's identity plus the settings; raises VideoMissingError."""
        import av

        resolved = Path(path).resolve()
        try:
            stat = resolved.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise VideoMissingError(path) from None
        if not resolved.is_file():
            raise VideoMissingError(path)
        material = {
            "format": CACHE_FORMAT,
            "pyav": av.__version__,
            "ffmpeg": av.library_versions.get("libavcodec"),
            "file": str(resolved),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sampling": sampling.key_fields(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def entry_path(self, path: str | os.PathLike, sampling: VideoSampling) -> Path:
        """Where the entry for (path, sampling) lives: ``<stem>-<sha256>.npz`` (stem for humans)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)[:40]
        return self.cache_dir / f"{stem}-{self.key(path, sampling)}.npz"

    # -- get ----------------------------------------------------------------------------

    def get_or_decode(self, path: str | os.PathLike, **settings) -> DecodedVideo:
        """Same arguments and result as ``decode_video``; decodes only on a cache miss."""
        return self.get_or_decode_with(path, VideoSampling(**settings))

    def get_or_decode_with(self, path: str | os.PathLike, sampling: VideoSampling) -> DecodedVideo:
        entry = self.entry_path(path, sampling)
        cached = _load(entry)
        if cached is not None:
            self.hits += 1
            return cached
        started = time.perf_counter()
        decoded = decode_with(path, sampling)
        self.decodes += 1
        log.debug("decoded %s (%s) in %.3f s: %d frames %dx%d -> %s", path, sampling.key_fields(),
                  time.perf_counter() - started, decoded.num_frames, decoded.frames.shape[2],
                  decoded.frames.shape[1], entry.name)
        _store(entry, decoded, compress=self.compress)
        return decoded


# ------------------------------------------------------------------------------ npz I/O


def _store(entry: Path, decoded: DecodedVideo, *, compress: bool = True) -> None:
    """Write ``entry`` atomically: temp file in the same folder (same filesystem), then rename."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "frames": decoded.frames,
        "timestamps_s": decoded.timestamps_s,
        "frame_indices": decoded.frame_indices,
        "source_num_frames": np.int64(decoded.source_num_frames),
        "source_fps": np.float64(decoded.source_fps),
        "duration_s": np.float64(decoded.duration_s),
    }
    if decoded.audio is not None:
        arrays["audio"] = decoded.audio
        arrays["audio_sample_rate"] = np.int64(decoded.audio_sample_rate)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.stem[:40]}.", suffix=".tmp")
    try:
        # A file object, not a name: np.savez would append ".npz" to a name.
        with os.fdopen(fd, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **arrays)
        os.replace(tmp, entry)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _load(entry: Path) -> DecodedVideo | None:
    """The entry's DecodedVideo, or None if it is absent or unreadable (then it is rewritten)."""
    try:
        with np.load(entry, allow_pickle=False) as data:
            has_audio = "audio" in data.files
            return DecodedVideo(
                frames=data["frames"],
                timestamps_s=data["timestamps_s"],
                frame_indices=data["frame_indices"],
                source_num_frames=int(data["source_num_frames"]),
                source_fps=float(data["source_fps"]),
                duration_s=float(data["duration_s"]),
                audio=data["audio"] if has_audio else None,
                audio_sample_rate=int(data["audio_sample_rate"]) if has_audio else None,
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        log.warning("frame cache entry %s is unreadable (%s); decoding again", entry, error)
        return None
