"""A run from config to MLflow: validate, load data, train with the shared loop, evaluate, log.

Everything a user can get wrong (config, data, resume target) fails in :func:`prepare`, before
an MLflow run or a run folder exists.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .. import LAYERS
from ..config import RunConfig, flatten
from ..data import ImageSet, load_data
from ..errors import UserError
from ..methods import DataInfo, Method, get_method
from ..models import build_trunk
from ..tracking import Tracker
from .checkpoint import CHECKPOINT
from .loop import dist_context


@dataclass
class Prepared:
    cfg: RunConfig
    train: ImageSet
    test: ImageSet
    method: Method


def build_method(cfg: RunConfig, train: ImageSet) -> Method:
    cls = get_method(cfg.method)
    settings = cls.Settings(**cfg.settings)
    info = DataInfo(train.num_classes, len(train), train.image_size)
    cls.check(settings, info)
    torch.manual_seed(cfg.seed)
    trunk = build_trunk(cfg.trunk.arch, cfg.trunk.width, cfg.trunk.stem, cfg.data.image_size)
    trunk.set_input_stats(*train.channel_stats())
    method = cls(settings, trunk, info)
    method.setup(train)
    return method


def prepare(cfg: RunConfig) -> Prepared:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, test = load_data(cfg.data)
    if cfg.optim.batch_size > len(train):
        raise UserError(f"optim.batch_size={cfg.optim.batch_size} is larger than the training set ({len(train)} images)")
    return Prepared(cfg, train, test, build_method(cfg, train))


def find_run_dir(target: str, output_dir: str, method: str | None = None) -> Path:
    """A run folder from a path, an MLflow run id, ``latest`` (newest of ``method``) or
    ``latest:<method>``."""
    if target.startswith("latest:"):
        target, method = "latest", target.split(":", 1)[1]
    path = Path(target)
    if path.is_file():
        path = path.parent
    if (path / CHECKPOINT).exists():
        return path
    root = Path(output_dir)
    runs = sorted(root.glob(f"*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    for ckpt in runs:
        meta = ckpt.parent / "run.json"
        info = json.loads(meta.read_text()) if meta.exists() else {}
        if target == "latest" and (method is None or info.get("method") == method):
            return ckpt.parent
        if info.get("mlflow_run_id") == target:
            return ckpt.parent
    what = f"no checkpoint of method {method!r} in {root}/" if target == "latest" else f"no run with a checkpoint at {target!r}"
    raise UserError(f"cannot resume: {what}")


def mlflow_run_id(run_dir: Path) -> str:
    """The MLflow run a run folder belongs to (written in its ``run.json``)."""
    return json.loads((Path(run_dir) / "run.json").read_text())["mlflow_run_id"]


def resolved_params(p: Prepared) -> dict:
    """Values the config leaves to the machine, logged so a run is reproducible from MLflow alone."""
    trunk = p.method.trunk
    return {"resolved.trunk.width": trunk.width, "resolved.trunk.stem": trunk.stem,
            "resolved.optim.effective_lr": p.cfg.optim.effective_lr(),
            "resolved.optim.global_batch": p.cfg.optim.batch_size,
            "resolved.data.num_train": len(p.train), "resolved.data.num_test": len(p.test),
            "resolved.device": str(dist_context().device)}


def run(p: Prepared, resume_from: Path | None = None, progress: bool = True, *, run_dir: Path | None = None,
        tags: dict | None = None, tune: bool = False) -> dict:
    """Drive one run: its folder and MLflow run here, the training in-process or on Ray Train.

    ``run_dir`` places a new run; ``tags`` are added to its MLflow run; ``tune`` reports every
    epoch to Ray Tune (the run is a sweep trial). Returns ``{"run_id", "run_dir", "metrics"}``.
    """
    from ..tracking import tracking_uri
    from .launch import check_cluster, launch_ray
    from .worker import train_worker

    cfg, method = p.cfg, p.method
    if resume_from:
        run_dir = Path(resume_from)
        run_id = mlflow_run_id(run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = run_dir or Path(cfg.output_dir) / f"{cfg.method}-{stamp}-{secrets.token_hex(2)}"
        run_id = None
    if cfg.dist.uses_ray():
        check_cluster(cfg, run_dir)  # bad address, too few GPUs, unwritable storage: before MLflow
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = {"sslray.method": cfg.method, "sslray.data": cfg.data.name, "sslray.run_dir": str(run_dir.resolve()),
            **method.run_tags(), **(tags or {})}
    tracker = Tracker(cfg.experiment, cfg.run_name or run_dir.name, run_id=run_id, tags=tags)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (run_dir / "run.json").write_text(json.dumps({"method": cfg.method, "mlflow_run_id": tracker.run_id}))
    tracker.log_params({**flatten(cfg), **resolved_params(p), **probe_protocol_params(p),
                        **{f"method.{k}": v for k, v in method.describe().items()}})
    payload = {"config": cfg.model_dump(), "run_id": tracker.run_id, "run_dir": str(run_dir.resolve()),
               "tracking_uri": tracking_uri(), "progress": progress, "tune": tune}
    try:
        if cfg.dist.uses_ray():
            metrics = launch_ray(payload, cfg, run_dir)
        else:
            metrics = train_worker(payload, p)
        tracker.finish("FINISHED")
    except Exception:
        tracker.finish("FAILED")
        raise
    except BaseException:  # Ctrl-C: the run can be resumed from its last checkpoint
        tracker.finish("KILLED")
        raise
    return {"run_id": tracker.run_id, "run_dir": str(run_dir), "metrics": metrics}


def probe_protocol_params(p: Prepared) -> dict:
    from ..eval import probe_protocol

    return probe_protocol(p.method.trunk, p.train.image_size, p.cfg.eval) if p.cfg.eval.enabled else {}


def evaluate_run(p: Prepared, run_dir: Path, tracker: Tracker, progress: bool = True) -> dict[str, float]:
    from ..eval import per_layer, probe_layers
    from ..eval.plots import plot_per_layer

    cfg = p.cfg
    trunk = p.method.trunk
    key = f"{tracker.run_id}|{cfg.epochs}"
    metrics = probe_layers(trunk, p.train, p.test, cfg.eval, run_dir / "features", key, cfg.seed,
                           device=next(trunk.parameters()).device)
    if cfg.eval.invariance:
        from ..eval.invariance import measure_invariance

        metrics.update(measure_invariance(trunk, p.test.limit(cfg.eval.test_limit), cfg.eval, seed=cfg.seed))
    tracker.log_metrics(metrics)
    results = {"linear probe": per_layer(metrics, "transfer"), "kNN": per_layer(metrics, "knn")}
    plot = plot_per_layer(results, run_dir / "per_layer.png", chance=1 / p.train.num_classes,
                          title=f"{cfg.method} on {cfg.data.name}: top-1 by layer ({cfg.epochs} epochs)")
    (run_dir / "transfer.json").write_text(json.dumps(metrics, indent=1))
    tracker.log_artifact(plot, "plots")
    tracker.log_artifact(run_dir / "transfer.json")
    if progress:
        print(format_table(results))
    return metrics


def format_table(results: dict[str, dict[str, float]]) -> str:
    layers = [layer for layer in LAYERS if any(layer in r for r in results.values())]
    head = f"{'top-1 %':<14}" + "".join(f"{layer:>8}" for layer in layers)
    rows = [f"{name:<14}" + "".join(f"{100 * r[layer]:8.1f}" if layer in r else f"{'':>8}" for layer in layers)
            for name, r in results.items()]
    return "\n".join([head, *rows])
