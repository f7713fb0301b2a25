"""The data cache (``$SSLRAY_CACHE``, default ``~/.cache/sslray``): decoded and generated images,
written atomically, named by a fingerprint of what they were made from."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """The cache folder, created if missing; one that cannot be (a file, an unwritable place) is a
    one-line UserError before anything is decoded."""
    from ..paths import check_output

    env = os.environ.get("SSLRAY_CACHE")
    path = check_output(env or Path.home() / ".cache" / "sslray", "folder",
                        what=f"{'SSLRAY_CACHE' if env else 'the data cache'}: cannot use")
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_npz(path: Path, **arrays) -> None:
    # a name of this process's own: two runs caching the same data at once each write their whole file
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def cached(path: Path, make: Callable[[], Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    """The arrays of the cache file ``path``: read when it is there, else made by ``make()`` and saved.
    One process makes a file while every other that wants it waits on a lock beside it, then reads it:
    on a fresh machine a study's first runs, starting together, generate its data once, not once each
    (the lock is the kernel's, so it goes with a process that dies). The lock file is removed once
    done, also when ``make`` fails, so a refused input leaves nothing behind; a process that
    arrives just then may make the file a second time, never a broken one (writes are atomic)."""
    if not path.exists():
        lock_path = path.with_name(f".{path.name}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not path.exists():
                    arrays = make()
                    save_npz(path, **arrays)
                    return arrays
            finally:
                lock_path.unlink(missing_ok=True)
                fcntl.flock(lock, fcntl.LOCK_UN)
    return np.load(path)


def fingerprint(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]
