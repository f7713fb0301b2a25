"""What every benchmark shares: interleaved repetitions, medians, the printed table, the RATIO
headline and the JSON file, and the throw-away places a benchmark's runs go.

Every figure is a ratio of two timings taken in the same process, interleaved (A B, B A, ...)
and summarised by the median, so that a busy or slow machine moves both sides alike.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

from ..config import RunConfig
from ..errors import UserError


def add_common(p, *, seed: bool = True) -> None:
    """Flags every benchmark takes."""
    p.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, help="torch CPU threads (use 1 on a busy machine)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed (0)")


def positive(args, *names: str, minimum: int = 1) -> None:
    """One line and exit 2 for a count flag below ``minimum``."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise UserError(f"bench: --{name.replace('_', '-')} must be at least {minimum}")


def csv(value: str | None, cast=str, flag: str = ""):
    if value is None:
        return None
    try:
        items = tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise UserError(f"bench: {flag} expects a comma-separated list, got {value!r}") from None
    if not items:
        raise UserError(f"bench: {flag} is empty")
    return items


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def step_times(stamps: list[float], warmup: int) -> list[float]:
    """Per-step durations from ``[t_start, t_after_step_0, t_after_step_1, ...]`` without the first ``warmup``."""
    durations = [b - a for a, b in zip(stamps, stamps[1:])]
    return durations[warmup:] or durations[-1:]


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
    if not math.isfinite(value):  # nothing this headline is about was timed (say, no streamed row)
        return f"RATIO {name} = - (target <= {target:g}: not measured)"
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


def finish(name: str, target: float, ratio: float, rows: list[dict], columns, settings: dict,
           json_path: str | None, notes: list[str] = ()) -> dict:
    """Print the table, notes and the headline; write the JSON; return the figures."""
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


def random_images(n: int, size: int = 32, classes: int = 10, seed: int = 0):
    """An :class:`~sslray.data.ImageSet` of ``n`` random uint8 images (for timing only)."""
    import torch

    from ..data import ImageSet

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes
    return ImageSet(images, labels, [f"class{i}" for i in range(classes)], "random", "train")


def bench_config(method: str, *, batch: int, width: float, epochs: int = 1, seed: int = 0, **overrides):
    from ..train.build import build_config

    return build_config(method, {"trunk.width": width, "optim.batch_size": batch, "run.epochs": epochs,
                                 "run.seed": seed, **overrides})


def time_fit(cfg: RunConfig, method, data, warmup: int) -> float:
    """Median seconds per step of the shared loop on an ImageSet, timed between its ``on_step`` hooks."""
    from ..data import MemorySource
    from ..train.loop import DistContext, fit

    stamps = [time.perf_counter()]
    fit(cfg, method, MemorySource(data), ctx=DistContext(),
        on_step=[lambda *_: stamps.append(time.perf_counter())], progress=False)
    return median(step_times(stamps, warmup))


@contextmanager
def scratch():
    """A throw-away folder whose ``mlflow.db`` holds the benchmark's runs, never the user's store."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sslray-bench-") as d:
        yield Path(d), f"sqlite:///{d}/mlflow.db"


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


def write_study(folder: Path, name: str, tree: dict) -> str:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **tree}, sort_keys=False))
    return str(path)


def small_study(images: int, width: float, batch: int, epochs: int, threads: int, probe_epochs: int | None,
                feature_dim: int | None) -> dict:
    """The fixed part of the benchmark studies: small synthetic data, one trial at a time."""
    return {"data": {"name": "synthetic", "limit": images, "test_limit": max(10, images // 2)},
            "config": {"trunk.width": width, "optim.batch_size": batch, "eval.linear.epochs": probe_epochs or 10,
                       "eval.feature_dim": feature_dim or 2048},
            "budget": {"trials": 1, "epochs": epochs, "cpus_per_trial": threads, "max_concurrent": 1},
            "objective": {"metric": "transfer/res3/top1", "mode": "max"}}
