"""faiss, imported quietly: its loader logs every CPU-specific build it tries and fails to find (at
INFO, which Ray workers print) before it loads the generic one."""

from __future__ import annotations

import logging

logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402

__all__ = ["faiss"]
