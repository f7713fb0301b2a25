"""``sslray bench trial`` (target 1.2): a sweep of N short trials over the same N trainings back to
back, on the embedded synthetic data, in a throw-away MLflow store."""

from __future__ import annotations

import time

from ._timing import add_common, finish, interleaved, median, own_ray, positive, scratch, small_study, write_study

HELP = "a sweep of short trials against the same trainings back to back"
TARGET = 1.2


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--trials", type=int, default=8, help="trials per sweep (8)")
    p.add_argument("--images", type=int, default=500, help="training images (500)")
    p.add_argument("--batch", type=int, default=100, help="batch size (100)")
    p.add_argument("--width", type=float, default=0.125, help="trunk width (0.125)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per trial (1)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions (1)")
    p.add_argument("--probe-epochs", type=int, help="linear probe epochs (10)")
    p.add_argument("--feature-dim", type=int, help="pooled feature size (2048)")


def run(args) -> dict:
    positive(args, "trials", "images", "batch", "epochs", "reps", "probe_epochs", "feature_dim")
    return bench_trial(args.trials, args.images, args.batch, args.width, args.epochs, args.reps, args.probe_epochs,
                       args.feature_dim, args.seed, args.json)


def bench_trial(trials: int = 8, images: int = 500, batch: int = 100, width: float = 0.125, epochs: int = 1,
                reps: int = 1, probe_epochs: int | None = None, feature_dim: int | None = None, seed: int = 0,
                json_path: str | None = None) -> dict:
    """A grid sweep of ``trials`` short rotation trials (one at a time, ``epochs`` each) against
    the same trainings run back to back in this process through ``sslray train``'s path."""
    import torch

    from ..data import load_data
    from ..sweep.runner import sweep
    from ..sweep.study import load_study
    from ..train.build import build_config, build_run
    from ..cluster import connect
    from ..train.run import run as run_training

    threads = torch.get_num_threads()
    lrs = [round(0.05 * 1.5**i, 4) for i in range(trials)]
    base = small_study(images, width, batch, epochs, threads, probe_epochs, feature_dim)
    base["budget"]["trials"] = trials
    with scratch() as (d, uri), own_ray():
        t = time.perf_counter()
        connect(None)  # a sweep starts Ray once: timed apart, added to every sweep's wall below
        ray_s = time.perf_counter() - t
        fixed = {**{f"data.{k}": v for k, v in base["data"].items()}, **base["config"], "run.epochs": epochs,
                 "run.threads": threads, "run.seed": seed}
        cfgs = [build_config("rotation", {**fixed, "optim.lr": lr, "run.experiment": "bench-sequential",
                                          "run.output_dir": str(d / "sequential")}) for lr in lrs]
        load_data(cfgs[0].data)  # generate (and cache) the data before any timing

        def sequential():
            t = time.perf_counter()
            for cfg in cfgs:
                run_training(build_run(cfg), progress=False, uri=uri)
            return time.perf_counter() - t

        count = iter(range(10**6))

        def swept():
            name = f"bench-trial-{next(count)}"
            tree = {**base, "question": "fixed cost per trial", "methods": ["rotation"], "search": "grid",
                    "params": {"optim.lr": {"grid": lrs}}, "early_stopping": None, "seed": seed}
            study = load_study(write_study(d, name, tree))
            t = time.perf_counter()
            result = sweep(study, output_dir=str(d / "sweeps"), uri=uri)
            wall = time.perf_counter() - t
            if result.get("trials") != trials or result.get("errors"):
                raise RuntimeError(f"bench trial: the sweep ran {result.get('trials')} of {trials} trials "
                                   f"({result.get('errors')} errors)")
            return wall

        runs = interleaved(reps, swept, sequential)
    sweep_s, seq_s = median([a for a, _ in runs]), median([b for _, b in runs])
    ratio = median([(a + ray_s) / b for a, b in runs])
    rows = [{"part": f"{trials} trainings back to back", "seconds": seq_s, "per_trial": seq_s / trials},
            {"part": f"sweep of {trials} trials, Ray running", "seconds": sweep_s, "per_trial": sweep_s / trials},
            {"part": "starting Ray (once per sweep)", "seconds": ray_s, "per_trial": ray_s / trials},
            {"part": "fixed cost per trial", "seconds": None,
             "per_trial": (sweep_s + ray_s - seq_s) / trials}]
    columns = [("part", "part", ""), ("seconds", "seconds", ".1f"), ("per_trial", "per trial s", ".2f")]
    settings = {"trials": trials, "epochs": epochs, "images": images, "batch": batch, "width": width, "reps": reps,
                "threads": threads, "ratio_without_ray_start": median([a / b for a, b in runs])}
    notes = ["ratio = (sweep + Ray start) / back-to-back trainings; trials run one at a time, so only the "
             "per-trial cost differs (Ray actor, process start, data load, Tune and MLflow bookkeeping)"]
    return finish("trial", TARGET, ratio, rows, columns, settings, json_path, notes)
