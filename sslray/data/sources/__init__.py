"""The data-source registry: every module in this package registers one collection by name.

Adding a data source is adding one module here that defines a :class:`Collection` subclass
decorated with :func:`register` (its name, the ``data.*`` settings it reads, what its batches offer
beyond their images, how it opens its splits in memory or streamed); nothing else changes:
``data.name`` is checked against this registry, and nothing outside :mod:`sslray.data` asks which
source a run reads. Modules whose name starts with ``_`` are helpers, as are ``base`` and ``registry``.
"""

from __future__ import annotations

from .base import Collection
from .registry import COLLECTIONS, discover, get_collection, names, offered_by, register, streaming

__all__ = ["COLLECTIONS", "Collection", "discover", "get_collection", "names", "offered_by", "register", "streaming"]
