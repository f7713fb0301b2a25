"""``sslray bench search`` (target 0.4): the fraction of a full grid's epochs TPE+ASHA needs to come
within 1 point of the grid's best, on the embedded synthetic data, in a throw-away MLflow store."""

from __future__ import annotations

import math
import time

from ._timing import add_common, csv, finish, own_ray, positive, scratch, small_study, write_study

HELP = "TPE+ASHA against a full grid: the share of the grid's epochs needed"
TARGET = 0.4


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--methods", default="rotation,jigsaw", help="comma-separated methods (rotation,jigsaw)")
    p.add_argument("--trials", type=int, default=4, help="TPE trials (4)")
    p.add_argument("--images", type=int, default=500, help="training images (500)")
    p.add_argument("--batch", type=int, default=100, help="batch size (100)")
    p.add_argument("--width", type=float, default=0.125, help="trunk width (0.125)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial (2)")
    p.add_argument("--probe-epochs", type=int, help="linear probe epochs (10)")
    p.add_argument("--feature-dim", type=int, help="pooled feature size (2048)")


def run(args) -> dict:
    positive(args, "trials", "images", "batch", "epochs", "probe_epochs", "feature_dim")
    return bench_search(csv(args.methods, flag="--methods"), args.trials, args.images, args.batch, args.width,
                        args.epochs, args.probe_epochs, args.feature_dim, args.seed, args.json)


def bench_search(methods=("rotation", "jigsaw"), trials: int = 4, images: int = 500, batch: int = 100,
                 width: float = 0.125, epochs: int = 2, probe_epochs: int | None = None,
                 feature_dim: int | None = None, seed: int = 0, json_path: str | None = None) -> dict:
    """TPE+ASHA (``trials`` trials) against the full grid of the same space and per-trial budget
    (``epochs`` each): the fraction of the grid's epochs TPE+ASHA spends before one of its
    finished trials comes within 1 point (0.01 top-1) of the grid's best."""
    import torch

    from ..sweep.runner import sweep
    from ..sweep.study import load_study
    from ..tracking import Store

    threads = torch.get_num_threads()
    base = small_study(images, width, batch, epochs, threads, probe_epochs, feature_dim)
    space = {"question": "search efficiency", "methods": list(methods),
             "params": {"optim.lr": {"loguniform": [0.02, 0.5]}}, "seed": seed}
    found = {}
    with scratch() as (d, uri), own_ray():
        store = Store(uri)
        for search in ("grid", "tpe"):
            tree = {**base, **space, "search": search,
                    "early_stopping": {"metric": "monitor/knn_top1", "mode": "max", "grace_epochs": 1}}
            tree["budget"] = {**base["budget"], "trials": trials}
            study = load_study(write_study(d, f"bench-search-{search}", tree))
            t = time.perf_counter()
            result = sweep(study, output_dir=str(d / "sweeps"), uri=uri)
            wall = time.perf_counter() - t
            runs = sorted(store.children(store.experiment(study.name), result["parent_run_id"]),
                          key=lambda r: r.info.end_time or 0)
            found[search] = {"wall": wall, "runs": [(len(store.history(r.info.run_id, "train/loss")),
                                                     r.data.metrics.get(study.objective.metric),
                                                     {"method": r.data.params.get("method"),
                                                      "optim.lr": float(r.data.params.get("optim.lr", "nan"))})
                                                    for r in runs]}
    grid, tpe = found["grid"], found["tpe"]
    grid_epochs = sum(e for e, _, _ in grid["runs"])
    grid_best = max((v for _, v, _ in grid["runs"] if v is not None), default=float("nan"))
    spent, reached, best = 0, None, float("-inf")
    for trained, value, _ in tpe["runs"]:
        spent += trained
        if value is not None:
            best = max(best, value)
            if reached is None and value >= grid_best - 0.01:
                reached = spent
    ratio = reached / grid_epochs if reached is not None and grid_epochs else float("inf")
    # each trial (in the order they ended): epochs trained, objective (None: stopped before evaluation), setting
    per_trial = {s: [{"epochs": e, "objective": v, **prm} for e, v, prm in found[s]["runs"]] for s in found}
    rows = [{"search": f"grid ({len(grid['runs'])} points)", "trials": len(grid["runs"]), "epochs": grid_epochs,
             "best": grid_best, "wall": grid["wall"], "runs": per_trial["grid"]},
            {"search": f"TPE+ASHA ({trials} trials)", "trials": len(tpe["runs"]), "epochs": spent,
             "best": best if math.isfinite(best) else None, "wall": tpe["wall"], "to_reach": reached,
             "runs": per_trial["tpe"]}]
    columns = [("search", "search", ""), ("trials", "trials", ""), ("epochs", "epochs", ""),
               ("best", "best top-1", ".3f"), ("to_reach", "epochs to within 1 pt", ""), ("wall", "wall s", ".0f")]
    notes = [] if reached is not None else [f"TPE+ASHA never came within 1 point of the grid's best "
                                            f"({grid_best:.3f}) in {trials} trials"]
    settings = {"methods": list(methods), "space": space["params"], "trials": trials, "epochs": epochs,
                "images": images, "batch": batch, "width": width, "threads": threads,
                "grid_points": len(grid["runs"]), "objective": base["objective"]["metric"]}
    return finish("search", TARGET, ratio, rows, columns, settings, json_path, notes)
