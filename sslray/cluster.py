"""The Ray cluster a process works on: join one, or start a local one; what it can hold.

Used by every room that needs Ray (a run on Ray Train, a sweep, the streaming data source), so
that a local cluster is always started the same way.
"""

from __future__ import annotations

import logging
import os
import socket

from .errors import UserError


def ray_env() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` or start a local one (dashboard on 127.0.0.1: Train V2
    needs it to clean up placement groups of stopped runs, see README)."""
    import ray

    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:  # checked even when this process already runs Ray: the run asked for that cluster
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise UserError(f"cannot reach Ray at --address {address}: {e}") from None
    if ray.is_initialized():
        return
    ray_env()
    quiet = {"worker_process_setup_hook": "sslray.cluster.quiet_ray_teardown"}
    try:
        if address and address != "local":
            ray.init(address=address, log_to_driver=True, logging_level="ERROR", runtime_env=quiet)
        else:  # "local": always a fresh cluster, never a stale one left by an earlier `ray start`
            try:
                ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR",
                         runtime_env=quiet)
            except Exception as e:  # a minimal Ray (no dashboard packages): run without it, and say so
                if "dashboard" not in str(e).lower():
                    raise
                print("note: Ray's dashboard cannot start here (its packages are missing); without it, Ray Train "
                      "may leave the placement groups of stopped runs behind", flush=True)
                ray.init(address="local", include_dashboard=False, logging_level="ERROR", runtime_env=quiet)
    except (ConnectionError, RuntimeError) as e:
        raise UserError(f"cannot connect to Ray at {address or 'a new local cluster'}: {str(e).splitlines()[0]}") from None


#: Ray's own log lines at the end of a successful run that read as failures and are not
TEARDOWN_NOISE = {
    # Ray Train's controller, when its placement-group cleaner is slower to stop than its 2-s wait (a
    # busy machine): the cleaner stops anyway, the run has succeeded, and a traceback follows the line
    "ray.train.v2._internal.callbacks.placement_group_callback": "Failed to stop PlacementGroupCleaner gracefully",
}


class _Drop(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_ray_teardown() -> None:
    """Run in every Ray worker process (``runtime_env.worker_process_setup_hook``): drop the log
    records of :data:`TEARDOWN_NOISE`, which printed tracebacks after successful runs."""
    for name, start in TEARDOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(start))


def cluster_fit(workers: int, cpus: float, gpus: float) -> tuple[int, tuple | None]:
    """How many groups of ``workers`` x (``cpus``, ``gpus``) the connected cluster holds at once,
    and the first resource a single group cannot get: ``(kind, need, total, free)`` or None."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    counts, short = [], None
    for kind, per in (("GPU", gpus), ("CPU", cpus)):
        if not per:
            continue
        need, have = workers * per, total.get(kind, 0)
        if need > have + 1e-9 and short is None:
            short = (kind, need, have, free.get(kind, 0))
        counts.append(int(have // need))
    return (min(counts) if counts else 1), short
