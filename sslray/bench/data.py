"""``sslray bench data`` (target 0.05): the streaming source on a generated folder of JPEG files of
mixed sizes around ImageNet's (``--sizes``, default 256-500 px).

- decode + random-resized crop to 224 px: images/s per CPU core, in one process with PIL alone
  (the per-core rate), and through the Ray Data pipeline with ``--cpus`` CPUs;
- the fraction of a training step spent waiting for data (the headline): a short streamed training
  run at 224 px (ImageNet stem) whose loop times its waits (``train/data_wait``), with and without
  the first batch (the pipeline's start);
- peak memory of a training process streaming N and 4N images against holding them in memory
  (the peak resident set, VmHWM, of each process: getrusage carries a parent's peak over fork + exec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ._timing import add_common, finish, own_ray, positive, scratch

HELP = "the streaming source: decode rate per core, data wait per step, memory against collection size"
TARGET = 0.05


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--images", type=int, default=2048, help="JPEG files for the rate and the training run (2048)")
    p.add_argument("--sizes", default="256,500", help="smallest,largest side of the generated images (256,500)")
    p.add_argument("--size", type=int, default=224, help="view size (224)")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs of the Ray Data pipeline (1)")
    p.add_argument("--batch", type=int, default=32, help="training batch (32)")
    p.add_argument("--width", type=float, default=0.125, help="trunk width of the training run (0.125)")
    p.add_argument("--rss-images", type=int, default=1000, help="N of the memory comparison (1000; 0 skips)")
    p.add_argument("--rss-size", type=int, default=256, help="image size of the memory comparison (256)")


def run(args) -> dict:
    positive(args, "images", "size", "batch")
    positive(args, "rss_images", minimum=0)
    positive(args, "rss_size", minimum=16)
    lo, hi = (int(v) for v in args.sizes.split(","))
    return bench_data(args.images, (lo, hi), args.size, args.cpus, args.batch, args.width, args.rss_images,
                      args.rss_size, args.seed, args.json)


def decode_rate(locations: list[str], size: int, seconds: float = 8.0) -> float:
    """Images/s of decode + random-resized crop + resize in this process (one core)."""
    import numpy as np

    from ..data.decode import cut, read_bytes
    from ..data.views import crop

    view = crop((0.08, 1.0), size)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n < 20:
        cut(read_bytes(locations[n % len(locations)]), [view], np.random.default_rng(n))
        n += 1
    return n / (time.perf_counter() - t)


def pipeline_rate(source, size: int, batch: int) -> tuple[float, float]:
    """(images/s of a whole pass through the Ray Data pipeline, its start included; seconds to the
    first batch). Ray is started beforehand: the start is the pipeline's own."""
    from ..cluster import connect
    from ..data.views import crop

    connect(None)
    t0 = time.perf_counter()
    n, first = 0, None
    for b in source.epoch(0, batch, 0, views=[crop((0.08, 1.0), size)]):
        first = first or time.perf_counter()
        n += len(b.index)
    return n / (time.perf_counter() - t0), first - t0


class TimedSource:
    """A source whose batches are timed: ``waits[i]``, the seconds the loop waited for batch ``i``."""

    def __init__(self, source):
        self.source, self.waits = source, []

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, *args, **kw):
        it = iter(self.source.epoch(*args, **kw))
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - t)
            yield batch


RSS_SCRIPT = """
import json, sys, threading, time

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024

peak_anon = [0.0]
def watch():  # the peak of the process's private memory: Ray's object store pages are shared, not its own
    while True:
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
from sslray.train.build import build_config, build_run
from sslray.train.loop import fit
from sslray.components.distributed import DistContext
cfg = build_config("rotation", json.loads(sys.argv[1]))
built = build_run(cfg)
fit(cfg, built.method, built.train, ctx=DistContext(), progress=False)
time.sleep(0.2)
# VmHWM, this process's own peak: getrusage's ru_maxrss would carry the parent's over fork + exec
print(json.dumps({"rss_mb": status("VmHWM"), "anon_mb": peak_anon[0], "n": len(built.train)}))
"""


def peak_rss(root: Path, source: str, n: int, size: int, threads: int) -> dict:
    """Peak RSS and peak private (anonymous) memory, MB, of a process training one epoch on ``n``
    images of ``root`` from ``source``."""
    overrides = {"data.name": "imagefolder", "data.root": str(root), "data.limit": n, "data.image_size": size,
                 "data.source": source, "trunk.width": 0.125, "optim.batch_size": 100, "run.epochs": 1,
                 "run.threads": threads, "eval.enabled": False}
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, json.dumps(overrides)], capture_output=True, text=True,
                       env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})
    if r.returncode:
        raise RuntimeError(f"bench data: the memory run failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_data(images: int = 2048, sizes=(256, 500), size: int = 224, cpus: float = 1.0, batch: int = 32,
               width: float = 0.125, rss_images: int = 1000, rss_size: int = 256, seed: int = 0,
               json_path: str | None = None) -> dict:
    import torch

    from ..config import DataConfig
    from ..data import open_sources
    from ..data.synthetic import write_folder
    from ..train.build import build_config, build_run
    from ..train.loop import DistContext, fit

    threads = torch.get_num_threads()
    with scratch() as (d, _), own_ray():
        t = time.perf_counter()
        write_folder(d / "jpeg", images, max(10, images // 10), sizes, seed)
        made = time.perf_counter() - t
        train, _ = open_sources(DataConfig(name="imagefolder", root=str(d / "jpeg"), source="stream",
                                           image_size=size, cpus_per_worker=cpus))
        per_core = decode_rate(train.catalogue.locations, size)
        cold, start = pipeline_rate(train, size, batch)
        piped, _ = pipeline_rate(train, size, batch)  # a second pass: the task workers are warm
        # a short training run at 224 px, streamed: the loop's own data-wait measurement
        cfg = build_config("rotation", {"data.name": "imagefolder", "data.root": str(d / "jpeg"),
                                        "data.image_size": size, "data.source": "stream", "data.cpus_per_worker": cpus,
                                        "trunk.width": width, "optim.batch_size": batch, "run.epochs": 1,
                                        "run.seed": seed})
        built = build_run(cfg)
        timed = TimedSource(built.train)
        shares: list[float] = []
        stamps = [time.perf_counter()]
        fit(cfg, built.method, timed, ctx=DistContext(), progress=False,
            on_step=[lambda *_: stamps.append(time.perf_counter())],
            on_epoch=lambda e, m, s: shares.append(m["data_wait"]))
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        total = sum(steps)
        wait_all = sum(timed.waits) / total
        # after the first batch, which waits for the pipeline to start
        wait_steady = sum(timed.waits[1:]) / max(total - steps[0], 1e-9)
        rss = {}
        if rss_images:
            write_folder(d / "rss", 4 * rss_images, 10, (rss_size, rss_size + rss_size // 2), seed)
            for source in ("stream", "memory"):
                for n in (rss_images, 4 * rss_images):
                    rss[(source, n)] = peak_rss(d / "rss", source, n, rss_size, threads)
    rows = [{"part": f"decode + crop to {size} px, one process", "value": per_core, "unit": "img/s per core"},
            {"part": f"the same through Ray Data, {cpus:g} CPU(s), a whole pass of {images} (cold)",
             "value": cold / cpus, "unit": "img/s per CPU"},
            {"part": "the same, a second pass (warm task workers)", "value": piped / cpus, "unit": "img/s per CPU"},
            {"part": "Ray Data pipeline start (first batch)", "value": start, "unit": "s"},
            {"part": f"training step at {size} px, rotation, width {width:g}, batch {batch}",
             "value": total / len(steps), "unit": "s/step"},
            {"part": "data wait, share of the epoch", "value": wait_all, "unit": "fraction"},
            {"part": "data wait, as the loop measures it (train/data_wait)", "value": shares[0], "unit": "fraction"},
            {"part": "data wait after the first batch", "value": wait_steady, "unit": "fraction"}]
    for (source, n), mb in rss.items():
        rows.append({"part": f"peak RSS, {source}, {n} images ({rss_size} px)", "value": mb["rss_mb"], "unit": "MB"})
        rows.append({"part": "  of it private (peak RssAnon)", "value": mb["anon_mb"], "unit": "MB"})
    notes = [f"{images} generated JPEGs of {sizes[0]}-{sizes[1]} px (written in {made:.0f} s)",
             f"cores per GPU for ResNet-50 at 2,500-3,000 img/s (NVIDIA's, FFCV's figures): "
             f"{2500 / per_core:.1f}-{3000 / per_core:.1f} at {per_core:.0f} img/s per core"]
    if rss:
        n = rss_images
        grow = {s: {k: rss[(s, 4 * n)][k] / rss[(s, n)][k] for k in ("rss_mb", "anon_mb")} for s in ("stream", "memory")}
        notes.append(f"4N/N: peak RSS stream {grow['stream']['rss_mb']:.2f}, memory {grow['memory']['rss_mb']:.2f}; "
                     f"private memory stream {grow['stream']['anon_mb']:.2f}, memory {grow['memory']['anon_mb']:.2f} "
                     f"(RSS counts the pages of Ray's shared object store a streamed process touches)")
    settings = {"images": images, "sizes": list(sizes), "size": size, "cpus": cpus, "batch": batch, "width": width,
                "threads": threads, "rss_images": rss_images,
                "rss_mb": {f"{s}/{n}": v["rss_mb"] for (s, n), v in rss.items()},
                "private_mb": {f"{s}/{n}": v["anon_mb"] for (s, n), v in rss.items()}}
    return finish("data", TARGET, wait_steady, rows, [("part", "measure", ""), ("value", "value", ".3f"),
                                                       ("unit", "unit", "")], settings, json_path, notes)
