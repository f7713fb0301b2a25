"""``sslray bench``: what the platform costs, as ratios measured back to back in one process.

Every figure is a ratio of two timings taken in the same process, interleaved (A B, B A, ...)
and summarised by the median, so that a busy or slow machine moves both sides alike. Each
command prints a short table and one headline ``RATIO <name> = <value> (target <= X: met|not met)``;
``--json PATH`` writes the same figures.

- ``step`` (target 1.05): a training step of the shared loop (:func:`~sslray.train.loop.fit`) over
  a plain PyTorch loop: the same method object, SGD with momentum, a ``for`` over pre-made batches.
- ``eval`` (target 1.0): the per-layer evaluation (:func:`~sslray.eval.probe_layers`: five layers,
  linear probe and kNN) over one pretraining epoch of rotation on the same data.
- ``negatives`` (target 1.3): a pirl / npid step with K = 32,000 memory-bank negatives over one
  with the smallest K.
- ``trial`` (target 1.2): a sweep of N short trials over the same N trainings back to back.
- ``search`` (target 0.4): the fraction of a full grid's epochs TPE+ASHA needs to come within
  1 point of the grid's best.

Timed steps use random uint8 pixels (a step's cost does not depend on the content); ``eval``,
``trial`` and ``search`` use the embedded synthetic data. On a machine shared with other work, use
``--threads 1``: with more torch threads than idle cores, every parallel op waits for a descheduled
thread and steps get slower and far noisier (measured: 10x and more on 2 busy cores).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import UserError

TARGETS = {"step": 1.05, "eval": 1.0, "negatives": 1.3, "trial": 1.2, "search": 0.4}
#: K of the negatives target (PIRL's paper value)
TARGET_NEGATIVES = 32_000


# ---------------------------------------------------------------------------- shared pieces
def random_images(n: int, size: int = 32, classes: int = 10, seed: int = 0):
    """An :class:`~sslray.data.ImageSet` of ``n`` random uint8 images (for timing only)."""
    from .data import ImageSet

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes
    return ImageSet(images, labels, [f"class{i}" for i in range(classes)], "random", "train")


def bench_config(method: str, *, batch: int, width: float, epochs: int = 1, seed: int = 0, **overrides):
    from .config import build_config

    return build_config(method, {"trunk.width": width, "optim.batch_size": batch, "epochs": epochs,
                                 "seed": seed, **overrides})


def step_times(stamps: list[float], warmup: int) -> list[float]:
    """Per-step durations from ``[t_start, t_after_step_0, t_after_step_1, ...]`` without the first ``warmup``."""
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return durations[warmup:] or durations[-1:]


def time_fit(cfg, method, images, labels, warmup: int) -> float:
    """Median seconds per step of the shared loop, timed between its ``on_step`` hooks."""
    from .train.loop import DistContext, fit

    stamps = [time.perf_counter()]
    fit(cfg, method, images, labels, ctx=DistContext(), on_step=[lambda *_: stamps.append(time.perf_counter())],
        progress=False)
    return statistics.median(step_times(stamps, warmup))


def time_plain(cfg, method, batches, warmup: int) -> float:
    """Median seconds per step of a plain PyTorch loop: the same method object, SGD with
    momentum, a ``for`` over pre-made float batches, nothing else."""
    o = cfg.optim
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=o.effective_lr(),
                          momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.momentum > 0)
    method.train()
    torch.manual_seed(cfg.seed)
    stamps = [time.perf_counter()]
    for x, y, idx in batches:
        out = method(x, y, idx)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        method.after_step()
        out["loss"].item()
        stamps.append(time.perf_counter())
    return statistics.median(step_times(stamps, warmup))


def interleaved(reps: int, *jobs):
    """Run the jobs ``reps`` times, the order reversed every other time (A B C, C B A, A B C, ...).

    Returns one list of results per repetition, in job order: ``[[a1, b1, c1], [a2, b2, c2], ...]``."""
    out = []
    for r in range(reps):
        order = list(range(len(jobs)))[:: 1 if r % 2 == 0 else -1]
        got = {i: jobs[i]() for i in order}
        out.append([got[i] for i in range(len(jobs))])
    return out


def headline(name: str, value: float, target: float) -> str:
    met = "met" if value <= target else "not met"
    return f"RATIO {name} = {value:.3f} (target <= {target:g}: {met})"


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format); a missing value prints as ``-``."""
    def cell(row, key, fmt):
        v = row.get(key)
        return "-" if v is None else (format(v, fmt) if fmt else str(v))

    cells = [[h for _, h, _ in columns]] + [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in cells)


def finish(name: str, ratio: float, rows: list[dict], columns, settings: dict, json_path: str | None,
           notes: list[str] = ()) -> dict:
    """Print the table, notes and the headline; write the JSON; return the figures."""
    target = TARGETS[name]
    result = {"bench": name, "ratio": ratio if math.isfinite(ratio) else None, "target": target, "met": ratio <= target,
              "settings": settings, "rows": rows, "notes": list(notes), "load_avg": list(os.getloadavg())}
    print(table(rows, columns))
    for note in notes:
        print(f"note: {note}")
    print(headline(name, ratio, target), flush=True)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def _median(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------- step
def pipeline_seconds(method, images, idx, reps: int = 3) -> dict[str, float]:
    """Seconds of the data pipeline of one step outside the model: the loop's batch gather and
    uint8 -> float conversion, and the method's batch transforms (rotation, crops and colour
    jitter, jigsaw tiling) run alone on the same batch."""
    from .components.tiles import shuffle_tiles, tile_grid
    from .methods._contrastive import augmented_view
    from .methods.rotation import rotate_batch

    def gather():
        return images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)

    x = gather()
    s = method.settings
    parts = {"gather+convert": gather}
    if method.name == "rotation":
        parts["rotate"] = lambda: rotate_batch(x)
    if hasattr(s, "strength"):
        parts["augment"] = lambda: augmented_view(x, s.strength)
    if "jigsaw" in getattr(s, "transform", ""):
        def jigsaw():
            tiles = tile_grid(x, s.grid)
            perms = torch.argsort(torch.rand(len(x), tiles.shape[1]), dim=1)
            return shuffle_tiles(tiles, perms).flatten(0, 1).contiguous(memory_format=torch.channels_last)

        parts["jigsaw tiles"] = jigsaw
    out = {}
    with torch.no_grad():
        for name, fn in parts.items():
            fn()
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[name] = statistics.median(times)
    return out


def bench_step(methods=("rotation", "pirl"), batch: int = 128, width: float = 0.25, steps: int = 2,
               warmup: int = 1, reps: int = 6, seed: int = 0, json_path: str | None = None,
               profile: bool = False) -> dict:
    """The shared loop against two plain loops: NCHW (PyTorch's default) and channels-last (the
    shared loop's layout). The ratio is against the faster plain loop, so that the loop gets no
    credit for a layout choice any plain loop could make. Many short repetitions beat few long
    ones: on a shared machine the load comes in bursts as long as a repetition."""
    from .train.loop import Batches
    from .train.run import build_method

    cl = torch.channels_last
    rows, ratios = [], []
    for name in methods:
        n = batch * (warmup + steps)
        data = random_images(n, seed=seed)
        cfg = bench_config(name, batch=batch, width=width, seed=seed)
        ours, plain, plain_cl = (build_method(cfg, data) for _ in range(3))
        plain_cl.to(memory_format=cl)
        # the plain loops get the shared loop's batches of epoch 0, already gathered and converted
        batches = [(data.images[i].float().div_(255), data.labels[i], i) for i in Batches(n, batch, cfg.seed).epoch(0)]
        batches_cl = [(x.contiguous(memory_format=cl), y, i) for x, y, i in batches]
        runs = interleaved(reps, lambda: time_fit(cfg, ours, data.images, data.labels, warmup),
                           lambda: time_plain(cfg, plain, batches, warmup),
                           lambda: time_plain(cfg, plain_cl, batches_cl, warmup))
        per_rep = [a / min(b, c) for a, b, c in runs]
        ratio = _median(per_rep)
        ratios.append(ratio)
        ours_s = _median([r[0] for r in runs])
        pipe = pipeline_seconds(ours, data.images, batches[0][2])
        rows.append({"method": name, "ours_s": ours_s, "plain_s": _median([r[1] for r in runs]),
                     "plain_cl_s": _median([r[2] for r in runs]), "ratio": ratio, "ratios": per_rep,
                     "ratio_vs_nchw": _median([a / b for a, b, _ in runs]), "pipeline_s": pipe,
                     "pipeline_share": sum(pipe.values()) / ours_s})
        if profile:
            print(profile_steps(cfg, ours, data, min(2, max(1, steps))))
    columns = [("method", "method", ""), ("ours_s", "ours s/step", ".3f"), ("plain_s", "plain NCHW", ".3f"),
               ("plain_cl_s", "plain ch-last", ".3f"), ("ratio", "ratio", ".3f"),
               ("ratio_vs_nchw", "vs NCHW", ".3f"), ("pipeline_share", "data share", ".1%")]
    notes = ["ratio = ours / the faster plain loop, median of the interleaved repetitions"]
    notes += [f"{r['method']} data pipeline: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in r["pipeline_s"].items())
              for r in rows]
    settings = {"methods": list(methods), "batch": batch, "width": width, "steps": steps, "warmup": warmup,
                "reps": reps, "threads": torch.get_num_threads()}
    return finish("step", max(ratios), rows, columns, settings, json_path, notes)


def profile_steps(cfg, method, data, steps: int, top: int = 15) -> str:
    """torch.profiler over ``steps`` steps of the shared loop (after one warm-up step): top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from .train.loop import DistContext, fit

    n = cfg.optim.batch_size * steps
    fit(cfg, method, data.images[: cfg.optim.batch_size], data.labels[: cfg.optim.batch_size],
        ctx=DistContext(), progress=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(cfg, method, data.images[:n], data.labels[:n], ctx=DistContext(), progress=False)
    return f"profile of {steps} {cfg.method} steps:\n" + prof.key_averages().table(sort_by="self_cpu_time_total",
                                                                                  row_limit=top)


# ---------------------------------------------------------------------------- eval
@contextmanager
def timed_parts(module, names: list[str], totals: dict[str, float]):
    """Wrap ``module.<name>`` for each name so that its calls add their seconds to ``totals[name]``."""
    saved = {n: getattr(module, n) for n in names}

    def wrap(name, fn):
        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t
        return timed

    for n, fn in saved.items():
        setattr(module, n, wrap(n, fn))
    try:
        yield totals
    finally:
        for n, fn in saved.items():
            setattr(module, n, fn)


def bench_eval(images: int = 1000, test_images: int = 500, batch: int = 128, width: float = 0.25, reps: int = 3,
               probe_epochs: int | None = None, feature_dim: int | None = None, seed: int = 0,
               json_path: str | None = None) -> dict:
    """:func:`~sslray.eval.probe_layers` with the run's protocol (every layer, linear probe and kNN,
    features extracted afresh) against one rotation epoch of the shared loop on the same images."""
    import sslray.eval as ev

    from .data import load_synthetic
    from .train.loop import DistContext, fit
    from .train.run import build_method

    extra = {"eval.probe_epochs": probe_epochs, "eval.feature_dim": feature_dim}
    cfg = bench_config("rotation", batch=batch, width=width, seed=seed, **{k: v for k, v in extra.items() if v})
    train = load_synthetic("train", 0, 32, images)
    test = load_synthetic("test", 0, 32, test_images)
    if batch > len(train):
        raise UserError(f"bench eval: --batch {batch} is larger than --images {images}")
    method = build_method(cfg, train)
    # warm-up: two steps and a small evaluation, so that neither side pays first-call costs
    warm = 2 * batch if 2 * batch <= len(train) else batch
    fit(cfg, method, train.images[:warm], train.labels[:warm], ctx=DistContext(), progress=False)
    ev.probe_layers(method.trunk, train.limit(warm), test.limit(min(len(test), warm)),
                    cfg.eval.model_copy(update={"probe_epochs": 1}))

    parts: list[dict[str, float]] = []

    def epoch():
        t = time.perf_counter()
        fit(cfg, method, train.images, train.labels, ctx=DistContext(), progress=False)
        return time.perf_counter() - t

    def evaluate():
        totals: dict[str, float] = {}
        with timed_parts(ev, ["extract_features", "linear_probe", "knn_top1"], totals):
            t = time.perf_counter()
            ev.probe_layers(method.trunk, train, test, cfg.eval)
            totals["total"] = time.perf_counter() - t
        parts.append(totals)
        return totals["total"]

    runs = interleaved(reps, epoch, evaluate)
    ratio = _median([b / a for a, b in runs])
    epoch_s = _median([a for a, _ in runs])
    rows = [{"part": "pretraining epoch (rotation)", "seconds": epoch_s, "share": 1.0}]
    for key, label in (("total", "evaluation, all layers"), ("extract_features", "  features (train + test)"),
                       ("linear_probe", "  linear probes"), ("knn_top1", "  kNN")):
        s = _median([p.get(key, 0.0) for p in parts])
        rows.append({"part": label, "seconds": s, "share": s / epoch_s})
    columns = [("part", "part", ""), ("seconds", "seconds", ".2f"), ("share", "x epoch", ".2f")]
    e = cfg.eval
    settings = {"images": len(train), "test_images": len(test), "batch": batch, "width": width, "reps": reps,
                "layers": list(e.layers), "probe_epochs": e.probe_epochs, "feature_dim": e.feature_dim,
                "knn_k": e.knn_k, "threads": torch.get_num_threads(), "ratios": [b / a for a, b in runs]}
    return finish("eval", ratio, rows, columns, settings, json_path)


# ---------------------------------------------------------------------------- negatives
def available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def negatives_bytes(batch: int, k: int, dim: int) -> int:
    """Peak memory of K bank negatives per step, about twice the gathered ``(B, K, D)`` float32
    tensor (measured: 3.5 GB peak RSS for pirl at B=128, K=32,000) plus the int64 sample indices."""
    return 2 * batch * k * dim * 4 + batch * k * 8


def bench_negatives(methods=("pirl", "npid"), ks=(1, 4096, 32000, 65536), batch: int = 128,
                    width: float = 0.25, steps: int = 2, warmup: int = 1, reps: int = 2, seed: int = 0,
                    json_path: str | None = None) -> dict:
    """Steps of each method with K memory-bank negatives, against the smallest K; the bank holds
    ``max(K) + 1`` images, so every K is allowed, and K that would not fit in memory are skipped."""
    from .train.run import build_method

    ks = sorted(set(ks))
    n_steps = batch * (warmup + steps)
    data = random_images(max(max(ks) + 1, n_steps), seed=seed)
    notes, runnable = [], []
    budget = available_bytes() // 2
    for k in ks:
        need = negatives_bytes(batch, k, 128)
        if need > budget:
            notes.append(f"K={k} skipped: needs ~{need / 2**30:.1f} GiB, {budget / 2**30:.1f} GiB allowed "
                         "(half the available memory)")
        else:
            runnable.append(k)
    if not runnable:
        raise UserError("bench negatives: no K fits in memory; use a smaller --batch or --negatives")
    rows, at_target = [], []
    for name in methods:
        cfgs = {k: bench_config(name, batch=batch, width=width, seed=seed, negatives=k) for k in runnable}
        models = {k: build_method(cfgs[k], data) for k in runnable}
        # the bank holds every image; the timed steps read only the first batches
        jobs = [lambda k=k: time_fit(cfgs[k], models[k], data.images[:n_steps], data.labels[:n_steps], warmup)
                for k in runnable]
        runs = interleaved(reps, *jobs)
        base = runnable[0]
        for j, k in enumerate(runnable):
            rel = [r[j] / r[0] for r in runs]
            rows.append({"method": name, "negatives": k, "seconds": _median([r[j] for r in runs]),
                         "ratio": _median(rel), "ratios": rel, "vs": base})
        near = min(runnable, key=lambda k: (abs(k - TARGET_NEGATIVES), -k))
        at_target.append(next(r["ratio"] for r in rows if r["method"] == name and r["negatives"] == near))
        if near != TARGET_NEGATIVES:
            notes.append(f"{name}: K={TARGET_NEGATIVES} not measured; headline uses K={near}")
        del models
    columns = [("method", "method", ""), ("negatives", "K", ""), ("seconds", "s/step", ".3f"),
               ("ratio", "x smallest K", ".3f")]
    settings = {"methods": list(methods), "negatives": runnable, "bank_size": len(data), "batch": batch,
                "width": width, "steps": steps, "warmup": warmup, "reps": reps, "threads": torch.get_num_threads()}
    return finish("negatives", max(at_target), rows, columns, settings, json_path, notes)


# ---------------------------------------------------------------------------- trial / search
@contextmanager
def scratch_store():
    """A throw-away folder and MLflow store, so that benchmark sweeps never land in the user's."""
    import tempfile

    old = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="sslray-bench-") as d:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d}/mlflow.db"
        try:
            yield Path(d)
        finally:
            if old is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old


@contextmanager
def own_ray():
    """Shut Ray down afterwards if this benchmark started it (a sweep starts a local one)."""
    import ray

    started_here = not ray.is_initialized()
    try:
        yield
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()


def _sweep_api():
    """``load_study`` and ``sweep`` of :mod:`sslray.sweep`, or a one-line error if they moved."""
    try:
        from .sweep.runner import sweep
        from .sweep.study import load_study
    except ImportError as e:  # pragma: no cover - the sweep module is young
        raise UserError(f"bench: the sweep API is not available ({e})") from None
    return load_study, sweep


def write_study(folder: Path, name: str, tree: dict) -> str:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **tree}, sort_keys=False))
    return str(path)


def small_study(images: int, width: float, batch: int, epochs: int, threads: int, probe_epochs: int | None,
                feature_dim: int | None) -> dict:
    """The fixed part of the benchmark studies: small synthetic data, one trial at a time."""
    return {"data": {"name": "synthetic", "limit": images, "test_limit": max(10, images // 2)},
            "config": {"trunk.width": width, "optim.batch_size": batch, "eval.probe_epochs": probe_epochs or 10,
                       "eval.feature_dim": feature_dim or 2048},
            "budget": {"trials": 1, "epochs": epochs, "cpus_per_trial": threads, "max_concurrent": 1},
            "objective": {"metric": "transfer/res3/top1", "mode": "max"}}


def bench_trial(trials: int = 8, images: int = 500, batch: int = 100, width: float = 0.125, epochs: int = 1,
                reps: int = 1, probe_epochs: int | None = None, feature_dim: int | None = None, seed: int = 0,
                json_path: str | None = None) -> dict:
    """A grid sweep of ``trials`` short rotation trials (one at a time, ``epochs`` each) against
    the same trainings run back to back in this process through ``sslray train``'s path."""
    from .config import build_config
    from .data import load_data
    from .train.launch import connect
    from .train.run import prepare, run as run_training

    load_study, sweep = _sweep_api()
    threads = torch.get_num_threads()
    lrs = [round(0.05 * 1.5**i, 4) for i in range(trials)]
    base = small_study(images, width, batch, epochs, threads, probe_epochs, feature_dim)
    base["budget"]["trials"] = trials
    with scratch_store() as d, own_ray():
        t = time.perf_counter()
        connect(None)  # a sweep starts Ray once: timed apart, added to every sweep's wall below
        ray_s = time.perf_counter() - t
        fixed = {**{f"data.{k}": v for k, v in base["data"].items()}, **base["config"], "epochs": epochs,
                 "threads": threads, "seed": seed}
        cfgs = [build_config("rotation", {**fixed, "optim.lr": lr, "experiment": "bench-sequential",
                                          "output_dir": str(d / "sequential")}) for lr in lrs]
        load_data(cfgs[0].data)  # generate (and cache) the data before any timing

        def sequential():
            t = time.perf_counter()
            for cfg in cfgs:
                run_training(prepare(cfg), progress=False)
            return time.perf_counter() - t

        count = iter(range(10**6))

        def swept():
            name = f"bench-trial-{next(count)}"
            tree = {**base, "question": "fixed cost per trial", "methods": ["rotation"], "search": "grid",
                    "params": {"optim.lr": {"grid": lrs}}, "early_stopping": None, "seed": seed}
            study = load_study(write_study(d, name, tree))
            t = time.perf_counter()
            result = sweep(study, output_dir=str(d / "sweeps"))
            wall = time.perf_counter() - t
            if result.get("trials") != trials or result.get("errors"):
                raise RuntimeError(f"bench trial: the sweep ran {result.get('trials')} of {trials} trials "
                                   f"({result.get('errors')} errors)")
            return wall

        runs = interleaved(reps, swept, sequential)
    sweep_s, seq_s = _median([a for a, _ in runs]), _median([b for _, b in runs])
    ratio = _median([(a + ray_s) / b for a, b in runs])
    rows = [{"part": f"{trials} trainings back to back", "seconds": seq_s, "per_trial": seq_s / trials},
            {"part": f"sweep of {trials} trials, Ray running", "seconds": sweep_s, "per_trial": sweep_s / trials},
            {"part": "starting Ray (once per sweep)", "seconds": ray_s, "per_trial": ray_s / trials},
            {"part": "fixed cost per trial", "seconds": None,
             "per_trial": (sweep_s + ray_s - seq_s) / trials}]
    columns = [("part", "part", ""), ("seconds", "seconds", ".1f"), ("per_trial", "per trial s", ".2f")]
    settings = {"trials": trials, "epochs": epochs, "images": images, "batch": batch, "width": width, "reps": reps,
                "threads": threads, "ratio_without_ray_start": _median([a / b for a, b in runs])}
    notes = ["ratio = (sweep + Ray start) / back-to-back trainings; trials run one at a time, so only the "
             "per-trial cost differs (Ray actor, process start, data load, Tune and MLflow bookkeeping)"]
    return finish("trial", ratio, rows, columns, settings, json_path, notes)


def epochs_trained(c, run) -> int:
    return len(c.get_metric_history(run.info.run_id, "train/loss"))


def bench_search(methods=("rotation", "jigsaw"), trials: int = 4, images: int = 500, batch: int = 100,
                 width: float = 0.125, epochs: int = 2, probe_epochs: int | None = None,
                 feature_dim: int | None = None, seed: int = 0, json_path: str | None = None) -> dict:
    """TPE+ASHA (``trials`` trials) against the full grid of the same space and per-trial budget
    (``epochs`` each): the fraction of the grid's epochs TPE+ASHA spends before one of its
    finished trials comes within 1 point (0.01 top-1) of the grid's best."""
    from .tracking import client, experiment_id

    load_study, sweep = _sweep_api()
    threads = torch.get_num_threads()
    base = small_study(images, width, batch, epochs, threads, probe_epochs, feature_dim)
    space = {"question": "search efficiency", "methods": list(methods),
             "params": {"optim.lr": {"loguniform": [0.02, 0.5]}}, "seed": seed}
    found = {}
    with scratch_store() as d, own_ray():
        c = client()
        for search in ("grid", "tpe"):
            tree = {**base, **space, "search": search,
                    "early_stopping": {"metric": "monitor/knn_top1", "mode": "max", "grace_epochs": 1}}
            tree["budget"] = {**base["budget"], "trials": trials}
            study = load_study(write_study(d, f"bench-search-{search}", tree))
            t = time.perf_counter()
            result = sweep(study, output_dir=str(d / "sweeps"))
            wall = time.perf_counter() - t
            runs = c.search_runs([experiment_id(c, study.name)],
                                 filter_string=f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'")
            runs = sorted(runs, key=lambda r: r.info.end_time or 0)
            found[search] = {"wall": wall, "runs": [(epochs_trained(c, r), r.data.metrics.get(study.objective.metric))
                                                    for r in runs]}
    grid, tpe = found["grid"], found["tpe"]
    grid_epochs = sum(e for e, _ in grid["runs"])
    grid_best = max((v for _, v in grid["runs"] if v is not None), default=float("nan"))
    spent, reached, best = 0, None, float("-inf")
    for trained, value in tpe["runs"]:
        spent += trained
        if value is not None:
            best = max(best, value)
            if reached is None and value >= grid_best - 0.01:
                reached = spent
    ratio = reached / grid_epochs if reached is not None and grid_epochs else float("inf")
    rows = [{"search": f"grid ({len(grid['runs'])} points)", "trials": len(grid["runs"]), "epochs": grid_epochs,
             "best": grid_best, "wall": grid["wall"]},
            {"search": f"TPE+ASHA ({trials} trials)", "trials": len(tpe["runs"]), "epochs": spent,
             "best": best if math.isfinite(best) else None, "wall": tpe["wall"], "to_reach": reached}]
    columns = [("search", "search", ""), ("trials", "trials", ""), ("epochs", "epochs", ""),
               ("best", "best top-1", ".3f"), ("to_reach", "epochs to within 1 pt", ""), ("wall", "wall s", ".0f")]
    notes = [] if reached is not None else [f"TPE+ASHA never came within 1 point of the grid's best "
                                            f"({grid_best:.3f}) in {trials} trials"]
    settings = {"methods": list(methods), "space": space["params"], "trials": trials, "epochs": epochs,
                "images": images, "batch": batch, "width": width, "threads": threads,
                "grid_points": len(grid["runs"]), "objective": base["objective"]["metric"]}
    return finish("search", ratio, rows, columns, settings, json_path, notes)


# ---------------------------------------------------------------------------- CLI
def _csv(value: str | None, cast=str, flag: str = ""):
    if value is None:
        return None
    try:
        items = tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise UserError(f"bench: {flag} expects a comma-separated list, got {value!r}") from None
    if not items:
        raise UserError(f"bench: {flag} is empty")
    return items


def run(args) -> dict:
    """Entry point of ``sslray bench``: pass only the options the user gave; the defaults live here."""
    import inspect

    options = {"batch": args.batch, "width": args.width, "steps": args.steps, "warmup": args.warmup,
               "reps": args.reps, "seed": args.seed, "images": args.images, "test_images": args.test_images,
               "probe_epochs": args.probe_epochs, "feature_dim": args.feature_dim, "profile": args.profile or None,
               "trials": args.trials, "epochs": args.epochs, "methods": _csv(args.methods, flag="--methods"),
               "ks": _csv(args.negatives, int, "--negatives")}
    given = {k: v for k, v in options.items() if v is not None}
    bench = {"step": bench_step, "eval": bench_eval, "negatives": bench_negatives,
             "trial": bench_trial, "search": bench_search}[args.what]
    unused = [k for k in given if k not in inspect.signature(bench).parameters]
    if unused:
        flags = ", ".join("--" + {"ks": "negatives"}.get(k, k).replace("_", "-") for k in unused)
        raise UserError(f"bench {args.what}: {flags} not used by this bench")
    for key in ("batch", "steps", "reps", "images", "test_images", "trials", "epochs", "threads"):
        value = given.get(key, getattr(args, key, None))
        if value is not None and value < 1:
            raise UserError(f"bench: --{key.replace('_', '-')} must be at least 1")
    if min(given.get("ks", [1])) < 1:
        raise UserError("bench: --negatives must all be at least 1")
    if given.get("warmup", 0) < 0:
        raise UserError("bench: --warmup must be at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load > cores - 0.5:
        print(f"note: busy machine (load {load:.1f} on {cores} cores) and {torch.get_num_threads()} torch threads: "
              "expect noisy timings; --threads 1 is steadier", flush=True)
    return bench(json_path=args.json, **given)
