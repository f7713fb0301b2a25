"""``sslray bench eval`` (target 1.0): the per-layer evaluation (:func:`~sslray.eval.probe_layers`:
five layers, linear probe and kNN) over one pretraining epoch of rotation on the same data (the
embedded synthetic images)."""

from __future__ import annotations

import time

from ..errors import UserError
from ._timing import add_common, bench_config, finish, interleaved, median, positive

HELP = "the per-layer evaluation against one pretraining epoch"
TARGET = 1.0


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--images", type=int, default=1000, help="training images (1000)")
    p.add_argument("--test-images", type=int, default=500, help="test images (500)")
    p.add_argument("--batch", type=int, default=128, help="batch size (128)")
    p.add_argument("--width", type=float, default=0.25, help="trunk width (0.25)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (3)")
    p.add_argument("--probe-epochs", type=int, help="linear probe epochs (the run default, 30)")
    p.add_argument("--feature-dim", type=int, help="pooled feature size (the run default, 9216)")


def run(args) -> dict:
    positive(args, "images", "test_images", "batch", "reps", "probe_epochs", "feature_dim")
    return bench_eval(args.images, args.test_images, args.batch, args.width, args.reps, args.probe_epochs,
                      args.feature_dim, args.seed, args.json)


def bench_eval(images: int = 1000, test_images: int = 500, batch: int = 128, width: float = 0.25, reps: int = 3,
               probe_epochs: int | None = None, feature_dim: int | None = None, seed: int = 0,
               json_path: str | None = None) -> dict:
    """:func:`~sslray.eval.probe_layers` with the run's protocol (every layer, linear probe and kNN,
    features extracted afresh) against one rotation epoch of the shared loop on the same images."""
    import torch

    from ..data import MemorySource, load_synthetic
    from ..eval import probe_layers
    from ..train.build import build_method
    from ..train.loop import DistContext, fit

    extra = {"eval.linear.epochs": probe_epochs, "eval.feature_dim": feature_dim}
    extra = {k: v for k, v in extra.items() if v}
    cfg = bench_config("rotation", batch=batch, width=width, seed=seed, **extra)
    quick = bench_config("rotation", batch=batch, width=width, seed=seed, **{**extra, "eval.linear.epochs": 1})
    train = load_synthetic("train", 0, 32, images)
    test = load_synthetic("test", 0, 32, test_images)
    if batch > len(train):
        raise UserError(f"bench eval: --batch {batch} is larger than --images {images}")
    method = build_method(cfg, MemorySource(train))
    # warm-up: two steps and a small evaluation, so that neither side pays first-call costs
    warm = 2 * batch if 2 * batch <= len(train) else batch
    fit(cfg, method, MemorySource(train.limit(warm)), ctx=DistContext(), progress=False)
    probe_layers(method.trunk, train.limit(warm), test.limit(min(len(test), warm)),
                 quick.eval)

    parts: list[dict[str, float]] = []

    def epoch():
        t = time.perf_counter()
        fit(cfg, method, MemorySource(train), ctx=DistContext(), progress=False)
        return time.perf_counter() - t

    def evaluate():
        timings: dict[str, float] = {}
        t = time.perf_counter()
        probe_layers(method.trunk, train, test, cfg.eval, timings=timings)
        timings["total"] = time.perf_counter() - t
        parts.append(timings)
        return timings["total"]

    runs = interleaved(reps, epoch, evaluate)
    ratio = median([b / a for a, b in runs])
    epoch_s = median([a for a, _ in runs])
    rows = [{"part": "pretraining epoch (rotation)", "seconds": epoch_s, "share": 1.0}]
    protocols = [k for k in parts[0] if k not in ("total", "features")]  # each protocol's own seconds
    for key, label in (("total", "evaluation, all layers"), ("features", "  features (train + test)"),
                       *((p, f"  {p}") for p in protocols)):
        s = median([p.get(key, 0.0) for p in parts])
        rows.append({"part": label, "seconds": s, "share": s / epoch_s})
    columns = [("part", "part", ""), ("seconds", "seconds", ".2f"), ("share", "x epoch", ".2f")]
    e = cfg.eval
    settings = {"images": len(train), "test_images": len(test), "batch": batch, "width": width, "reps": reps,
                "layers": list(e.layers), "feature_dim": e.feature_dim,
                **{f"{p}.{k}": v for p in protocols for k, v in e.block(p).items()}, "threads": torch.get_num_threads(), "ratios": [b / a for a, b in runs]}
    return finish("eval", TARGET, ratio, rows, columns, settings, json_path)
