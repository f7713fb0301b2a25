"""The data cache (``$SSLRAY_CACHE``, default ``~/.cache/sslray``): decoded and generated images,
written atomically, named by a fingerprint of what they were made from."""

from __future__ import annotations

import hashlib
import os
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


def fingerprint(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]
