"""Content fingerprints of the files a cell reads (model weights and configs, benchmark
annotations), for the cell identity.

A file's fingerprint is the sha256 of its bytes. Hashing a 15 GB checkpoint takes about a
minute, so fingerprints are cached by (real path, size, mtime_ns): in this process, and in
``<paths.cache_dir>/fingerprints.json`` for every later process, so a checkpoint is read once
and not once per cell. Only the content hashes enter an identity: the cache's location and
the files' paths and times never do. A file rewritten in place gets a new mtime (or size), so
its entry is recomputed; a copy elsewhere is hashed once more under its own path.

The cache file is rewritten atomically (``outro_sweep.files.atomic``); two processes adding
entries at once may each drop the other's, which costs a re-hash later, never a wrong hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from outro_sweep.files.atomic import write_json_atomic

CACHE_FILE = "fingerprints.json"
_CHUNK = 8 << 20  # bytes read per step (8 MiB)

# (real path, size, mtime_ns) -> sha256 hex, for this process.
_memo: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes (the one place file content is read here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None:
        return {}
    try:
        entries = json.loads(cache_file.read_text())
    except (OSError, ValueError):  # absent, or unreadable: a cache, so start afresh
        return {}
    return entries if isinstance(entries, dict) else {}


def fingerprint_files(files: Mapping[str, Path], cache_dir: str | Path | None) -> dict[str, str]:
    """``{name: sha256}`` for ``{name: path}``, sorted by name. A name is environment-free
    (relative to the model or data folder); an absent file is ``"absent"``."""
    cache_file = Path(os.path.expanduser(str(cache_dir))) / CACHE_FILE if cache_dir else None
    cached = None  # the cache file's entries, read at the first miss of the in-process memo
    added = False
    out = {}
    for name in sorted(files):
        try:
            real = os.path.realpath(files[name])  # a hub snapshot's files are links to its blobs
            stat = os.stat(real)
        except OSError:
            out[name] = "absent"
            continue
        key = (real, stat.st_size, stat.st_mtime_ns)
        if key not in _memo:
            if cached is None:
                cached = _read_cache(cache_file)
            entry = cached.get(real)
            if isinstance(entry, dict) and (entry.get("size"), entry.get("mtime_ns")) == key[1:] and entry.get("sha256"):
                _memo[key] = str(entry["sha256"])
            else:
                _memo[key] = sha256_file(Path(real))
                cached[real] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _memo[key]}
                added = True
        out[name] = _memo[key]
    if added and cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache_file, {**_read_cache(cache_file), **cached})
        except OSError:  # a read-only cache folder: hash again next time, identities stay right
            pass
    return out


def folder_files(folder: Path) -> dict[str, Path]:
    """``{relative name: path}`` of every regular file under ``folder``, hidden ones (``.git``,
    ``.cache``) left out; {} when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {}
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(root) / name
                found[path.relative_to(folder).as_posix()] = path
    return found


def file_listing(folder: Path, suffix: str | None) -> dict[str, int]:
    """``{relative name: size in bytes}`` of the files under ``folder`` ending in ``suffix``
    (every file when None): a media list, cheap enough to take for every cell."""
    listing = {}
    for name, path in folder_files(folder).items():
        if suffix is None or name.lower().endswith(suffix.lower()):
            try:
                listing[name] = path.stat().st_size
            except OSError:
                continue
    return dict(sorted(listing.items()))
