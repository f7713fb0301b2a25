"""The method registry: every module in this package registers its methods by name.

Adding a method is adding one module here that defines a :class:`Method` subclass decorated
with :func:`register`; nothing else changes. Modules whose name starts with ``_`` are helpers, as are
``base`` and ``catalogue`` (the registry as data, for ``sslray methods`` and the documentation).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import UserError
from .base import Afterwards, DataInfo, Method, Strict

METHODS: dict[str, type[Method]] = {}
_HELPERS = {"base", "catalogue"}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise TypeError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def discover() -> dict[str, type[Method]]:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{mod.name}")
    return METHODS


def get_method(name: str) -> type[Method]:
    discover()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "Afterwards", "DataInfo", "Method", "Strict", "discover", "get_method", "register"]
