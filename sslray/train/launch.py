"""Ray Train launching: connect to (or start) Ray, check the request fits, run ``TorchTrainer``.

Every check that can fail on user input (unreachable address, more GPUs or CPUs than the
cluster has, unwritable storage) runs before an MLflow run exists and ends in one line.
"""

from __future__ import annotations

from pathlib import Path

from ..cluster import cluster_fit, connect
from ..config import RunConfig
from ..errors import UserError
from ..tracking.rundir import writable


def storage_path(cfg: RunConfig) -> str:
    return cfg.dist.storage_path or str((Path(cfg.output_dir) / "ray").resolve())


def check_storage(path: str) -> None:
    if "://" in path:  # s3://, gs://: checked by pyarrow when Ray first writes
        return
    if not writable(Path(path)):
        raise UserError(f"storage path {path} is not writable")


def check_local(cfg: RunConfig) -> None:
    """What an in-process run cannot honour fails in one line, before anything is written."""
    import torch

    d = cfg.dist
    if d.gpus_per_worker:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < d.gpus_per_worker:
            raise UserError(f"asked for {d.gpus_per_worker:g} GPU(s); this machine has {have} usable by torch "
                            f"(CUDA {'available' if torch.cuda.is_available() else 'not available'})")
    if d.storage_path:
        raise UserError("--storage is where Ray Train keeps checkpoints; this run trains in-process and "
                        "checkpoints into its run folder (train on Ray Train with --workers 2 or more, --address, "
                        "or --set dist.launcher=ray)")


def check_cluster(cfg: RunConfig, data_cpus: float = 0.0) -> None:
    """Fail fast, in one line, if the request cannot run on the cluster. ``data_cpus``: the CPUs each
    worker's streaming pipeline needs beside it (Ray Data hangs, silently, without them)."""
    connect(cfg.dist.address)  # an unreachable address first: then nothing is written
    check_storage(storage_path(cfg))
    d = cfg.dist
    per = {"GPU": d.gpus_per_worker, "CPU": d.cpus_per_worker + data_cpus}
    _, short = cluster_fit(d.workers, per["CPU"], d.gpus_per_worker)
    if short:
        kind, need, have, free = short
        data = f" training + {data_cpus:g} data" if kind == "CPU" and data_cpus else ""
        fix = (" (lower dist.cpus_per_worker or data.cpus_per_worker: the data pipeline of every worker needs "
               "CPUs of its own)") if data else ""
        raise UserError(f"asked for {need:g} {kind}s ({d.workers} workers x {per[kind]:g}{data}); the cluster has "
                        f"{have:g} {kind}s, {free:g} free{fix}")


def _put(value):
    import ray

    return None if value is None else ray.put(value)


def unwrap(error: BaseException) -> BaseException:
    """The UserError or FloatingPointError a worker raised (too many unreadable images, a diverged
    loss), if Ray wrapped one: the CLI says those in one line. Else the error itself."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (UserError, FloatingPointError)):
            return e
        todo += [e.__cause__, e.__context__, *getattr(e, "worker_failures", {}).values()]
    return error


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
        train_loop_config={"spec": spec.shipped(ray.put(built.method_state()), _put(built.shipped_sources()))},
        torch_config=TorchConfig(backend="nccl" if d.gpus_per_worker else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=d.workers, use_gpu=d.gpus_per_worker > 0,
                                               resources_per_worker=resources, placement_strategy=d.placement),
        run_config=ray.train.RunConfig(
            name=run_dir.name,  # stable: rerunning the same run folder restores its latest checkpoint
            storage_path=storage_path(cfg),
            failure_config=ray.train.FailureConfig(max_failures=d.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # plain prints: with Train's print patch every line of a worker reached the console twice
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            callbacks=reporter.ray_callbacks() if reporter else []),
    )
    from ray.train import TrainingFailedError

    try:
        result = trainer.fit()
    except TrainingFailedError as e:  # a UserError on a worker (e.g. too many unreadable images): one line
        raise unwrap(e) from None
    if result.error:
        raise unwrap(result.error)
    metrics = {k: v for k, v in (result.metrics or {}).items() if "/" in k}
    if cfg.eval.enabled and run_dir.has(RunDir.TRANSFER):
        metrics.update(run_dir.transfer())
    return metrics
