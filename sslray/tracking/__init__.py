"""What a run leaves behind: its MLflow records (:class:`Store`, :class:`Tracker`, the tag names in
:mod:`.tags`), its folder (:class:`RunDir`), and the MLflow UI's addresses for them (:mod:`.ui`)."""

from .rundir import RunDir, load_torch, save_torch, writable
from .store import DEFAULT_URI, Store, Tracker, check_store_path, store_exists, tracking_uri

__all__ = ["DEFAULT_URI", "check_store_path", "RunDir", "Store", "Tracker", "load_torch", "save_torch", "store_exists", "tracking_uri", "writable"]
