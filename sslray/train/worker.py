"""The body of every training process: the local in-process run and each rank of a Ray Train
worker group run exactly :func:`train_worker`, so a laptop run, a Tune trial and a multi-node job
share one code path. What differs is passed in, not flagged: where epoch state goes (a checkpoint
sink, :mod:`sslray.train.checkpoint`) and who else hears of each epoch (a reporter, e.g. Tune's).

Exactly-once epoch logging: every epoch's metrics are written into its checkpoint *before* rank 0
sends them to MLflow; a process restarted from that checkpoint sends them if MLflow lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from ..components.distributed import dist_context
from ..config import RunConfig
from ..tracking import RunDir, Tracker
from .build import Built, build_run
from .callbacks import Callback, LastEpoch
from .callbacks.checkpoints import Checkpoint
from .callbacks.debug import KillAt, StepRecorder
from .callbacks.health import CollapseRule, HealthCallback, StopOnCollapse
from .callbacks.monitor import KnnMonitorCallback
from .callbacks.report import EpochLine, ReporterCallback
from .callbacks.snapshots import TrunkSnapshots
from .callbacks.timing import TimingLine
from .callbacks.tracking import MlflowLogger
from .checkpoint import LocalCheckpoints, RayCheckpoints
from .loop import fit
from .record import evaluate_and_record, evaluate_over_epochs, record_afterwards


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a training process needs, from the driver that owns the run."""

    config: dict  # RunConfig.model_dump()
    run_id: str  # the MLflow run
    run_dir: str  # the run folder (absolute)
    tracking_uri: str
    progress: bool = True
    #: the built method's state (a Ray object ref on a Ray Train worker group), so workers skip setup
    init_state: Any = None
    #: the driver's data sources when workers should not open the data again (a ref), else None
    sources: Any = None

    def shipped(self, init_state: Any, sources: Any) -> "WorkerSpec":
        return replace(self, init_state=init_state, sources=sources)


class EpochReporter(Protocol):
    """Someone else to tell about each epoch (rank 0 only), e.g. Ray Tune in a sweep trial."""

    def epoch(self, epoch: int, metrics: dict, last: bool) -> None: ...

    def ray_callbacks(self) -> list:
        """Ray Train callbacks that carry the same reports when the run trains on Ray Train."""
        ...


def log_pending(tracker: Tracker, start: dict) -> None:
    """Send the last checkpointed epoch's metrics to MLflow if the crash came before they got there."""
    pending = start.get("metrics") or {}
    if not pending:
        return
    step = int(start["epoch"]) - 1
    if not tracker.has_step(next(iter(pending)), step):
        tracker.log_metrics(pending, step=step)


def epoch_callbacks(cfg: RunConfig, spec: WorkerSpec, built: Built, run_dir: RunDir, checkpoints, ctx,
                    tracker: Tracker | None, reporter: EpochReporter | None, last: LastEpoch) -> list[Callback]:
    """A run's training-time work, in the order it runs after every epoch: the monitors fill the
    epoch's metrics, trunk snapshots come before the checkpoint (a resume never misses one), the
    checkpoint before MLflow (a crash between is repaired by :func:`log_pending`), and a collapse
    stops the run last, once it shows in MLflow. Rank 0 alone monitors, logs and reports."""
    method, main = built.method, ctx.is_main
    out: list[Callback] = []
    if cfg.debug.kill_at and main:
        out.append(KillAt(run_dir, cfg.debug.kill_at))
    if cfg.debug.record_steps:
        out.append(StepRecorder(run_dir, ctx.rank))
    if cfg.eval.monitor and main:
        out.append(KnnMonitorCallback(method.trunk, *built.eval_sources(), cfg.eval))
    rule = None
    # health needs two images at least (uniformity is over pairs); a one-image training set has none
    if cfg.eval.health and main and method.trains and len(built.train) >= 2:
        rule = CollapseRule(cfg.method, method.embed_dim, cfg.eval, tracker)
        out += [HealthCallback(method.trunk, built.train, cfg.eval), rule]
    if cfg.eval.at_epochs and main:
        out.append(TrunkSnapshots(method.trunk, run_dir, cfg.eval.at_epochs))
    out += [Checkpoint(checkpoints, cfg.model_dump(), spec.run_id, main), last]
    if tracker:
        out.append(MlflowLogger(tracker))
        if reporter:
            out.append(ReporterCallback(reporter, cfg.epochs))
        if spec.progress:
            out += [EpochLine(cfg.epochs), TimingLine(last)]
    if rule is not None and cfg.eval.stop_on_collapse:
        out.append(StopOnCollapse(rule))
    return out


def train_worker(spec: WorkerSpec, built: Built | None, checkpoints, reporter: EpochReporter | None = None) -> dict:
    """Train (and on rank 0 evaluate) one run; returns rank 0's last epoch metrics and evaluation.

    ``built`` is the driver's own run (in-process); a Ray Train worker passes None and builds its
    data from the config, its method from ``spec.init_state``."""
    cfg = RunConfig(**spec.config)
    ctx = dist_context()
    built = built or build_run(cfg, spec.init_state, spec.sources)
    run_dir = RunDir(spec.run_dir)
    start = checkpoints.latest()
    tracker = Tracker(cfg.experiment, run_id=spec.run_id, uri=spec.tracking_uri) if ctx.is_main else None
    if start and tracker:
        log_pending(tracker, start)
    method = built.method
    last = LastEpoch(start)
    callbacks = epoch_callbacks(cfg, spec, built, run_dir, checkpoints, ctx, tracker, reporter, last)
    if method.trains and cfg.epochs > 0:
        fit(cfg, method, built.train, ctx=ctx, start=start, callbacks=callbacks, progress=spec.progress)
    if not ctx.is_main:
        return {}
    last = dict(last.logs)
    method.to(ctx.device)
    run_dir.save_trunk(method.trunk.state_dict())
    if method.trains and cfg.epochs > 0:  # e.g. an energy-based model's negatives, an audio net's probe
        last.update(record_afterwards(method.after_training(built.train, built.test), cfg, run_dir, tracker,
                                      spec.progress))
    if cfg.eval.enabled:
        train, test = built.eval_sources()
        last.update(evaluate_and_record(method.trunk, train, test, cfg, run_dir, tracker, spec.progress))
        if cfg.eval.at_epochs and method.trains and cfg.epochs > 0:
            evaluate_over_epochs(method.trunk, train, test, cfg, run_dir, tracker, last, spec.progress)
    return last


def ray_train_loop(config: dict) -> None:
    """The per-worker function of a Ray Train run: ``config = {"spec": WorkerSpec}``."""
    spec: WorkerSpec = config["spec"]
    cfg = RunConfig(**spec.config)
    torch.set_num_threads(max(1, int(cfg.dist.cpus_per_worker)))
    import ray

    spec = spec.shipped(ray.get(spec.init_state), ray.get(spec.sources) if spec.sources is not None else None)
    train_worker(spec, None, RayCheckpoints(RunDir(spec.run_dir)))


__all__ = ["EpochReporter", "LocalCheckpoints", "WorkerSpec", "epoch_callbacks", "ray_train_loop", "train_worker"]
