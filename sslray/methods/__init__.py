"""The method registry: every module in this package registers its methods by name.

Adding a method is adding one module here that defines a :class:`Method` subclass decorated
with :func:`register`; nothing else changes. Modules whose name starts with ``_`` are helpers, as are
``base`` and ``catalogue`` (the registry as data, for ``sslray methods`` and the documentation).
"""

from __future__ import annotations

from ..errors import UserError
from ..registry import Registry
from .base import Afterwards, DataInfo, Method, Strict

_REGISTRY = Registry("method", __name__, __path__, helpers={"base", "catalogue"})
METHODS: dict[str, type[Method]] = _REGISTRY.parts
register = _REGISTRY.register


def discover() -> dict[str, type[Method]]:
    return _REGISTRY.discover()


def get_method(name: str) -> type[Method]:
    discover()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "Afterwards", "DataInfo", "Method", "Strict", "discover", "get_method", "register"]
