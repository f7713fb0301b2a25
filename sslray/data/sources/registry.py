"""The registry itself: the registered data sources by name (see :mod:`sslray.data.sources`)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ...errors import UserError

COLLECTIONS: dict = {}  # name -> Collection
_HELPERS = {"base", "registry"}


def register(cls):
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    if cls.name in COLLECTIONS and type(COLLECTIONS[cls.name]) is not cls:
        raise TypeError(f"data source {cls.name!r} registered twice")
    COLLECTIONS[cls.name] = cls()
    return cls


def discover() -> dict:
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not mod.name.startswith("_") and mod.name not in _HELPERS:
            importlib.import_module(f"{__package__}.{mod.name}")
    return COLLECTIONS


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
