"""Where a command writes, checked before it does any work.

:func:`check_output` is the one check of an output path (a run folder, a sweep's folder, a
report's figures, a plot, shards, the data cache, the MLflow store): it can be created and
written, it is a folder where a folder is meant and a file where a file is meant, it has a suffix
the writer understands, and the system accepts its length. Anything else is a one-line
:class:`~sslray.errors.UserError` naming the path and what is wrong with it, before a run, a Ray
cluster or an MLflow record exists.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import UserError

#: formats Matplotlib's ``savefig`` writes without extra software (no LaTeX for .pgf)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps")


def shown(path: str | Path, width: int = 200) -> str:
    """A path as an error line shows it: a very long one cut, with its length."""
    text = str(path)
    return text if len(text) <= width else f"{text[: width - 20]}... ({len(text)} characters)"


def _too_long(path: Path) -> bool:
    """Whether the system refuses the path for its length (a name over NAME_MAX, the whole over PATH_MAX)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return True
    anchor = _nearest_existing(path)
    try:
        name_max = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX")
        path_max = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    return len(os.fsencode(str(path))) >= path_max or any(len(os.fsencode(p)) > name_max for p in path.parts)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its deepest ancestor that exists (a file is returned too: nothing can go under it)."""
    while True:
        try:
            os.stat(path)
            return path
        except OSError:
            if path.parent == path:
                return path
            path = path.parent


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (tried, with a temporary file removed at once:
    permission bits do not stop root, a read-only mount or a file system like /proc do)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def problem(path: str | Path, kind: str = "folder", suffixes: tuple[str, ...] = ()) -> str | None:
    """What stops ``path`` from being written as a ``kind`` (``"file"`` or ``"folder"``); None if nothing."""
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', not {kind!r}")
    if not str(path).strip():
        return "an empty path"
    if "\0" in str(path):
        return "a path with a NUL character"
    p = Path(path).expanduser().absolute()
    if suffixes and p.suffix.lower() not in suffixes:
        names = [s.lstrip(".") for s in suffixes]
        return f"not a {', '.join(names[:-1])} or {names[-1]} file" if len(names) > 1 else f"not a {names[0]} file"
    if _too_long(p):
        return "the path is too long for the file system"
    if p.exists():
        if kind == "file" and p.is_dir():
            return "a folder, not a file"
        if kind == "folder" and not p.is_dir():
            return "a file, not a folder"
        if kind == "file":
            return None if os.access(p, os.W_OK) else "permissions"
        return None if _can_create_in(p) else "permissions"
    anchor = _nearest_existing(p.parent)
    if not anchor.is_dir():
        return f"{shown(anchor)} is a file, not a folder"
    return None if _can_create_in(anchor) else "permissions"


def check_output(path: str | Path, kind: str = "folder", suffixes: tuple[str, ...] = (),
                 what: str = "cannot write") -> Path:
    """``path`` made absolute, if it can be written as a ``kind`` (``"file"`` or ``"folder"``) with
    one of ``suffixes`` (lower case, with the dot; any if empty); else ``UserError("<what> <path>
    (<why>)")``. Nothing is left behind: a missing folder is not created."""
    why = problem(path, kind, tuple(s.lower() for s in suffixes))
    if why:
        raise UserError(f"{what} {shown(path)} ({why})")
    return Path(path).expanduser().absolute()


class Held:
    """An exclusive lock on a file (``fcntl.flock``, not waited for), held until :meth:`release` or
    the process ends (the system releases it then, whatever the way the process ended). The file
    holds the holder's process id, for the message of the next one refused."""

    def __init__(self, path: str | Path, busy: str):
        import fcntl

        self.path = Path(path)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip()
            self._file.close()
            raise UserError(busy + (f" (process {holder})" if holder.isdigit() else "")) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    @property
    def released(self) -> bool:
        return self._file.closed

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_file(key: str | Path, kind: str) -> Path:
    """A lock file in the system's temporary folder for ``key`` (a resolved path): taking it writes
    nothing where the user's outputs go, and two processes of one machine agree on its name."""
    import hashlib

    digest = hashlib.sha1(str(key).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"sslray-{kind}-{digest}.lock"
