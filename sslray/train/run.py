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
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .loop import dist_context, fit


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
    """A run folder from a path, an MLflow run id, or ``latest`` (newest of this method)."""
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


def resolved_params(p: Prepared) -> dict:
    """Values the config leaves to the machine, logged so a run is reproducible from MLflow alone."""
    trunk = p.method.trunk
    return {"resolved.trunk.width": trunk.width, "resolved.trunk.stem": trunk.stem,
            "resolved.optim.effective_lr": p.cfg.optim.effective_lr(),
            "resolved.optim.global_batch": p.cfg.optim.batch_size,
            "resolved.data.num_train": len(p.train), "resolved.data.num_test": len(p.test),
            "resolved.device": str(dist_context().device)}


def run(p: Prepared, resume_from: Path | None = None, progress: bool = True) -> dict:
    """Train and evaluate a prepared run; returns ``{"run_id", "run_dir", "metrics"}``."""
    cfg, method = p.cfg, p.method
    start = load_checkpoint(resume_from) if resume_from else None
    if resume_from:
        run_dir = Path(resume_from)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.output_dir) / f"{cfg.method}-{stamp}-{secrets.token_hex(2)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = {"sslray.method": cfg.method, "sslray.data": cfg.data.name, "sslray.run_dir": str(run_dir),
            **method.run_tags()}
    tracker = Tracker(cfg.experiment, cfg.run_name or run_dir.name, run_id=start and start["mlflow_run_id"], tags=tags)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (run_dir / "run.json").write_text(json.dumps({"method": cfg.method, "mlflow_run_id": tracker.run_id}))
    tracker.log_params({**flatten(cfg), **resolved_params(p), **probe_protocol_params(p),
                        **{f"method.{k}": v for k, v in method.describe().items()}})
    ctx = dist_context()
    try:
        if start:
            _log_pending(tracker, start)
        if method.trains and cfg.epochs > 0:
            def on_epoch(epoch: int, metrics: dict, state: dict) -> None:
                logged = {f"train/{k}": v for k, v in metrics.items()}
                state.update(config=cfg.model_dump(), mlflow_run_id=tracker.run_id, metrics=logged)
                save_checkpoint(run_dir / CHECKPOINT, state)  # first the checkpoint, then MLflow:
                tracker.log_metrics(logged, step=epoch)     # a crash between is repaired on resume
                if progress:
                    print(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['loss']:.4f}  "
                          f"acc {100 * metrics.get('acc', float('nan')):.1f}%  {metrics['img_per_s']:.0f} img/s", flush=True)

            fit(cfg, method, p.train.images, p.train.labels, ctx=ctx, start=start, on_epoch=on_epoch, progress=progress)
        method.to(ctx.device)
        torch.save(method.trunk.state_dict(), run_dir / "trunk.pt")
        metrics = evaluate_run(p, run_dir, tracker, progress) if cfg.eval.enabled else {}
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


def _log_pending(tracker: Tracker, start: dict) -> None:
    """Log the last checkpointed epoch's metrics if the crash came before MLflow got them."""
    pending = start.get("metrics") or {}
    if not pending:
        return
    step = int(start["epoch"]) - 1
    key = next(iter(pending))
    history = tracker.client.get_metric_history(tracker.run_id, key)
    if not any(m.step == step for m in history):
        tracker.log_metrics(pending, step=step)


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
