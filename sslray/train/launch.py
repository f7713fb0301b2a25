"""Ray Train launching: connect to (or start) Ray, check the request fits, run ``TorchTrainer``.

Every check that can fail on user input (unreachable address, more GPUs or CPUs than the
cluster has, unwritable storage) runs before an MLflow run exists and ends in one line.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import UserError


def ray_env() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` or start a local one (dashboard on 127.0.0.1: Train V2
    needs it to clean up placement groups of stopped runs, see README)."""
    import ray

    if ray.is_initialized():
        return
    ray_env()
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise UserError(f"cannot reach Ray at --address {address}: {e}") from None
    try:
        if address and address != "local":
            ray.init(address=address, log_to_driver=True, logging_level="ERROR")
        else:  # "local": always a fresh cluster, never a stale one left by an earlier `ray start`
            ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", logging_level="ERROR")
    except (ConnectionError, RuntimeError) as e:
        raise UserError(f"cannot connect to Ray at {address or 'a new local cluster'}: {str(e).splitlines()[0]}") from None


def storage_path(cfg) -> str:
    return cfg.dist.storage_path or str((Path(cfg.output_dir) / "ray").resolve())


def check_storage(path: str) -> None:
    if "://" in path:  # s3://, gs://: checked by pyarrow when Ray first writes
        return
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".sslray-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"storage path {path} is not writable: {e.strerror or e}") from None


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


def check_cluster(cfg) -> None:
    """Fail fast, in one line, if the request cannot run on the cluster."""
    check_storage(storage_path(cfg))
    connect(cfg.dist.address)
    d = cfg.dist
    per = {"GPU": d.gpus_per_worker, "CPU": d.cpus_per_worker}
    _, short = cluster_fit(d.workers, d.cpus_per_worker, d.gpus_per_worker)
    if short:
        kind, need, have, free = short
        raise UserError(f"asked for {need:g} {kind}s ({d.workers} workers x {per[kind]:g}); the cluster has "
                        f"{have:g} {kind}s, {free:g} free")


def launch_ray(spec, built, run_dir, reporter=None) -> dict:
    """Run :func:`~sslray.train.worker.ray_train_loop` on ``cfg.dist.workers`` Ray Train workers.

    The workers take the method's state as :func:`~sslray.train.build.build_run` left it (through
    the object store), so its setup work is not repeated; ``reporter`` (a sweep trial's Tune)
    adds its Ray Train callbacks. Returns rank 0's last report and the evaluation's metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..tracking import RunDir
    from .worker import ray_train_loop

    cfg = built.cfg
    connect(cfg.dist.address)
    d = cfg.dist
    resources = {"CPU": d.cpus_per_worker, **({"GPU": d.gpus_per_worker} if d.gpus_per_worker else {})}
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"spec": spec.with_state(ray.put(built.method_state()))},
        torch_config=TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=d.workers, use_gpu=d.gpus_per_worker > 0,
                                               resources_per_worker=resources, placement_strategy=d.placement),
        run_config=ray.train.RunConfig(
            name=run_dir.name,  # stable: rerunning the same run folder restores its latest checkpoint
            storage_path=storage_path(cfg),
            failure_config=ray.train.FailureConfig(max_failures=d.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=reporter.ray_callbacks() if reporter else []),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    metrics = {k: v for k, v in (result.metrics or {}).items() if "/" in k}
    if cfg.eval.enabled and run_dir.has(RunDir.TRANSFER):
        metrics.update(run_dir.transfer())
    return metrics
