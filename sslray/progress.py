"""Progress bars for long work: on for a terminal, off in logs and with ``--quiet``."""

from __future__ import annotations

from tqdm import tqdm

_enabled = True


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = on


def bar(iterable=None, min_items: int = 0, enabled: bool = True, **kw):
    """A tqdm bar that is silent when quiet, when stderr is not a terminal, or for short work."""
    total = kw.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
    quiet = not (_enabled and enabled) or (total is not None and total < min_items)
    return tqdm(iterable, disable=True if quiet else None, leave=False, **kw)
