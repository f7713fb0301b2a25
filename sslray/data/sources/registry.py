"""The registry itself: the registered data sources by name (see :mod:`sslray.data.sources`)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from ...registry import Registry

_REGISTRY = Registry("data source", __package__, [str(Path(__file__).parent)], helpers={"base", "registry"},
                     make=lambda cls: cls())
COLLECTIONS: dict = _REGISTRY.parts  # name -> Collection (an instance of the registered class)
register = _REGISTRY.register


def discover() -> dict:
    return _REGISTRY.discover()


def names() -> list[str]:
    """The registered data sources' names, sorted."""
    return sorted(discover())


def get_collection(name: str):
    discover()
    if name not in COLLECTIONS:
        raise UserError(f"unknown data source {name!r}; registered: {', '.join(names())}")
    return COLLECTIONS[name]


def offered_by(keys) -> list[str]:
    """The registered sources whose batches offer every one of ``keys`` (e.g. ``clip``, ``audio``)."""
    return sorted(n for n, c in discover().items() if set(keys) <= set(c.offers))


def streaming() -> list[str]:
    """The registered sources that read image files while training and can hold them in memory too."""
    return sorted(n for n, c in discover().items() if {"memory", "stream"} <= set(c.ways))
