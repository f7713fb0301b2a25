"""The driver of a run: it owns the run's folder and MLflow run, and launches the training
(in-process, or on a Ray Train worker group) on a run :mod:`~sslray.train.build` built once.

Everything a user can get wrong (config, data, resume target, cluster) fails before an MLflow run
or a run folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, flatten
from ..eval import probe_protocol
from ..errors import UserError
from ..paths import check_output
from ..tracking import RunDir, Store, Tracker, store_exists, tracking_uri
from ..tracking.tags import DATA_TAG, METHOD_TAG, RUN_DIR_TAG
from .build import Built
from .checkpoint import LocalCheckpoints
from .worker import EpochReporter, WorkerSpec, train_worker


@dataclass
class RunResult:
    run_id: str
    run_dir: RunDir
    metrics: dict  # the last epoch's and the evaluation's metrics


def resolved_params(b: Built) -> dict:
    """Values the config leaves to the machine, logged so a run is reproducible from MLflow alone."""
    from ..components.distributed import default_device

    trunk = b.method.trunk
    return {**b.train.describe(), "resolved.trunk.width": trunk.width, "resolved.trunk.stem": trunk.stem,
            "resolved.optim.effective_lr": b.cfg.optim.effective_lr(),
            "resolved.optim.global_batch": b.cfg.optim.batch_size,
            "resolved.data.num_train": len(b.train), "resolved.data.num_test": len(b.test),
            "resolved.device": str(default_device())}


def preflight(cfg: RunConfig, resume: RunDir | None = None, run_dir: RunDir | None = None, data_cpus: float = 0.0,
              uri: str | None = None) -> None:
    """What can fail before a run starts, short of its data, in one line and writing nothing: an
    unwritable run folder, a cluster that cannot hold the run (address, GPUs, CPUs, storage), an
    unusable MLflow store, a resume target MLflow does not know."""
    from .launch import check_cluster, check_local

    where = run_dir.path if run_dir else resume.path if resume else Path(cfg.output_dir)
    check_output(where, "folder", what="cannot write the run folder")
    if cfg.dist.uses_ray():
        check_cluster(cfg, data_cpus)
    else:
        check_local(cfg)
    if store_exists(uri):
        store = Store(uri)  # a corrupt store: one line
        if resume and not store.has_run(resume.mlflow_run_id):
            raise UserError(f"cannot resume {resume}: its MLflow run {resume.mlflow_run_id} is not in the store "
                            f"{store.uri}")
    elif resume:
        raise UserError(f"cannot resume {resume}: its MLflow run {resume.mlflow_run_id} is not in the store "
                        f"{tracking_uri(uri)} (no such database)")


def run(built: Built, *, resume: RunDir | None = None, run_dir: RunDir | None = None, tags: dict | None = None,
        progress: bool = True, reporter: EpochReporter | None = None, uri: str | None = None) -> RunResult:
    """Drive one run: its folder and MLflow run here, the training in-process or on Ray Train.

    ``resume`` continues that run folder's run; ``run_dir`` places a new run; ``tags`` are added to
    its MLflow run; ``reporter`` hears of every epoch (a sweep trial's Tune); ``uri`` names the
    MLflow store (default: :func:`~sslray.tracking.tracking_uri`).
    """
    cfg = built.cfg
    run_dir = resume or run_dir or RunDir.new(cfg.output_dir, cfg.method)
    preflight(cfg, resume, run_dir, built.train.pipeline_cpus, uri)
    store = Store(uri)
    run_id = resume.mlflow_run_id if resume else None
    run_dir.create()
    held = run_dir.hold()  # a second process resuming this run is refused until this one ends
    try:
        return _drive(built, run_dir, store, run_id, resume, tags, progress, reporter)
    finally:
        if held is not None:
            held.release()


def _drive(built: Built, run_dir: RunDir, store: Store, run_id: str | None, resume: RunDir | None,
           tags: dict | None, progress: bool, reporter: EpochReporter | None) -> RunResult:
    from .launch import launch_ray

    cfg, method = built.cfg, built.method
    tags = {METHOD_TAG: cfg.method, DATA_TAG: cfg.data.name, RUN_DIR_TAG: str(run_dir.path.resolve()),
            **method.run_tags(), **(tags or {})}
    tracker = Tracker(cfg.experiment, cfg.run_name or run_dir.name, run_id=run_id, tags=tags, store=store)
    run_dir.write_config(cfg.model_dump())
    run_dir.write_meta(cfg.method, tracker.run_id)
    protocol = probe_protocol(method.trunk, built.train.image_size, cfg.eval, built.train.held) if cfg.eval.enabled else {}
    tracker.log_params({**flatten(cfg), **resolved_params(built), **protocol,
                        **{f"method.{k}": v for k, v in method.describe().items()}})
    spec = WorkerSpec(config=cfg.model_dump(), run_id=tracker.run_id, run_dir=str(run_dir.path.resolve()),
                      tracking_uri=tracker.store.uri, progress=progress)
    try:
        if cfg.dist.uses_ray():
            metrics = launch_ray(spec, built, run_dir, reporter)
        else:
            metrics = train_worker(spec, built, LocalCheckpoints(run_dir), reporter)
        tracker.finish("FINISHED")
    except Exception:
        tracker.finish("FAILED")
        raise
    except BaseException:  # Ctrl-C: the run can be resumed from its last checkpoint
        tracker.finish("KILLED")
        raise
    return RunResult(tracker.run_id, run_dir, metrics)
