"""``sslray bench gpu``: the whole GPU story in one call, on one generated folder of photo-like JPEGs
(about 110 KB at 300-500 px, what a decoder meets in ImageNet; never smooth renderings that
compress tenfold). For simclr and rotation, ResNet-50 at 224 px (ImageNet stem), batch 256, bf16
autocast, channels-last:

- ``ceiling``: a hand-written step, input already on the GPU, eager and compiled (:mod:`._ceiling`);
- ``memory``: sslray's loop fed from batches in host memory (no decoding);
- ``pipeline``: the data alone: Ray Data decoding and cutting the views on CPUs (``decode=cpu``),
  reading bytes and drawing boxes only (``decode=gpu``'s CPU share), and nvJPEG decoding plus the
  crops on the GPU from bytes in memory;
- ``stream``: sslray streamed training with ``data.decode=cpu`` and ``gpu``;
- ``profile``: ``torch.profiler`` over a few steps of the loop (eager), top ops by device time.

The ratio printed is streamed / compiled ceiling (target >= 0.9) with the data-wait share (target
<= 0.05). ``--parts`` runs some parts only and ``--jsonl`` appends each row as it finishes, so a
script can run each part under its own timeout; ``--report JSONL`` prints the table of such rows.
Refuses to run without a CUDA GPU unless ``--cpu`` (a smoke test at tiny sizes: the figures then mean
nothing, and ``decode=gpu`` runs its CPU fallback).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import UserError
from ._timing import add_common, csv, finish, own_ray, positive, scratch

HELP = "the GPU story in one call: ceilings, loop from memory, pipeline, streamed cpu/gpu decoding (needs CUDA)"
TARGET = 0.05  # data-wait share
RATIO_TARGET = 0.9  # streamed / compiled ceiling
PARTS = ("ceiling", "memory", "pipeline", "stream", "profile")


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--images", type=int, default=8000, help="generated JPEG files (8000)")
    p.add_argument("--sizes", default="300,500", help="smallest,largest side of the generated images (300,500)")
    p.add_argument("--folder", help="generate the images here, or reuse them if already there (default: scratch)")
    p.add_argument("--methods", default="simclr,rotation", help="comma-separated registered methods (simclr,rotation); the ceiling part: simclr and rotation only")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts ({','.join(PARTS)})")
    p.add_argument("--decode", default="cpu,gpu", help="the stream part's data.decode values (cpu,gpu)")
    p.add_argument("--batch", type=int, default=256, help="batch (256)")
    p.add_argument("--steps", type=int, default=25, help="timed steps per row, after --warmup (25)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first, the compile included (5)")
    p.add_argument("--cpus", type=float, help="CPUs of the decode pipeline (default: all but two)")
    p.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"])
    p.add_argument("--width", type=float, default=1.0, help="sslray's trunk width (1.0; the ceilings are full width)")
    p.add_argument("--size", type=int, default=224, help="image size (224)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="sslray's rows eager")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (inductor)")
    p.add_argument("--jsonl", metavar="PATH", help="append each row to this file as it finishes")
    p.add_argument("--report", metavar="JSONL", help="print the table of the rows in this file and stop")
    p.add_argument("--cpu", action="store_true", help="run without a GPU (a smoke test; figures meaningless)")


def run(args) -> dict:
    import torch

    if args.report:
        path = Path(args.report)
        if not path.is_file():
            raise UserError(f"bench gpu: --report {args.report}: no such file")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return report(rows, {"report": str(path)}, args.json)
    positive(args, "images", "batch", "steps", "size")
    positive(args, "warmup", minimum=1)
    if not torch.cuda.is_available() and not args.cpu:
        raise UserError("bench gpu needs a CUDA GPU (none visible here); --cpu runs it as a smoke test")
    parts = csv(args.parts, flag="--parts")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UserError(f"bench gpu: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    methods = csv(args.methods, flag="--methods")
    if "ceiling" in parts and set(methods) - {"simclr", "rotation"}:
        raise UserError("bench gpu: the ceiling part takes simclr and rotation (its hand-written steps are those two); "
                        "other methods: --parts memory,stream")
    from ..methods import get_method

    for name in methods:
        get_method(name)  # an unknown method: one line naming the registered ones
    decodes = csv(args.decode, flag="--decode")
    if set(decodes) - {"cpu", "gpu"}:
        raise UserError("bench gpu: --decode takes cpu and gpu")
    lo, hi = (int(v) for v in csv(args.sizes, flag="--sizes"))
    need = args.batch * (args.warmup + args.steps + 1)
    if args.images < need and ({"stream", "pipeline"} & set(parts)):
        raise UserError(f"bench gpu: --images {args.images} is fewer than one streamed epoch needs "
                        f"(batch {args.batch} x {args.warmup + args.steps + 1} steps = {need})")
    cpus = args.cpus or float(max(1, (os.cpu_count() or 2) - 2))
    return bench_gpu(args, parts, methods, decodes, (lo, hi), cpus)


def bench_gpu(args, parts, methods, decodes, sizes, cpus: float) -> dict:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    rows: list[dict] = []

    def add(row: dict) -> None:
        row = {**row, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    with scratch() as (d, _), own_ray():
        folder = Path(args.folder) if args.folder else d / "photos"
        if {"stream", "pipeline"} & set(parts) and not any(folder.glob("train/class0/*.jpg")):
            from ..data.synthetic import write_photos

            t = time.perf_counter()
            mean = write_photos(folder, args.images, sizes, args.seed)
            print(f"wrote {args.images} photo-like JPEGs ({mean / 1e3:.0f} KB each on average) in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        for name in methods:
            if "ceiling" in parts:
                from ._ceiling import time_ceiling

                for compiled in (False, True):
                    r = time_ceiling(name, args.arch, args.size, args.batch, args.steps, args.warmup,
                                     args.backend if compiled else None, device)
                    add({"part": "ceiling", "method": name, "mode": "compiled" if compiled else "eager", **r})
            if "memory" in parts:
                add({"part": "memory", "method": name, "mode": _mode(args),
                     **_time_loop(args, name, None, cpus, device)})
            if "pipeline" in parts and name == methods[0]:
                for row in _pipeline(args, name, folder, cpus, device):
                    add({"part": "pipeline", "method": name, **row})
            if "stream" in parts:
                for decode in decodes:
                    add({"part": "stream", "method": name, "mode": _mode(args), "decode": decode,
                         **_time_loop(args, name, (folder, decode), cpus, device)})
            if "profile" in parts and name == methods[0]:
                add({"part": "profile", "method": name, "table": _profile(args, name, device)})
    return report(rows, {"methods": list(methods), "parts": list(parts), "images": args.images, "batch": args.batch,
                         "steps": args.steps, "warmup": args.warmup, "cpus": cpus, "arch": args.arch,
                         "size": args.size, "compile": args.compile, "backend": args.backend}, args.json)


def _mode(args) -> str:
    return "compiled" if args.compile else "eager"


def _config(args, name: str, cpus: float, stream: tuple | None, n: int, compile: bool | None = None):
    from ..train.build import build_config

    data = {"data.image_size": args.size, "data.limit": n}
    if stream:
        data.update({"data.name": "imagefolder", "data.root": str(stream[0]), "data.source": "stream",
                     "data.cpus_per_worker": cpus})
    return build_config(name, {**data, "trunk.arch": args.arch, "trunk.width": args.width, "trunk.stem": "imagenet",
                               "optim.batch_size": args.batch, "run.epochs": 1, "run.seed": args.seed,
                               "eval.enabled": False, "train.compile": args.compile if compile is None else compile,
                               "debug.compile_backend": None if args.backend == "inductor" else args.backend})


def _time_loop(args, name: str, stream: tuple | None, cpus: float, device) -> dict:
    """sslray's loop, from host memory (``stream`` None) or streamed from ``stream = (folder, decode)``:
    images/s over the timed steps (synchronised at their two ends only, so the one-ahead copy and
    decoding overlap the steps as in a real run) and the share of that time spent waiting for data."""
    import torch

    from ..components.distributed import DistContext
    from ..data import MemorySource
    from ..train.build import build_method, build_run
    from ..train.loop import fit
    from ._timing import random_images
    from .data import TimedSource

    n = args.batch * (args.warmup + args.steps)
    cfg = _config(args, name, cpus, stream, n + (args.batch if stream else 0))
    if stream:
        built = build_run(cfg)
        source, method = built.train, built.method
        source.decode = stream[1]  # as asked, also where --cpu has no GPU (the CPU fallback of decode=gpu)
    else:
        source = MemorySource(random_images(n, args.size, seed=args.seed))
        method = build_method(cfg, source)
    timed = TimedSource(source)
    stamps = []
    last = args.warmup + args.steps - 1

    def on_step(epoch, i, *_):
        if i in (args.warmup - 1, last):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

    epoch: dict = {}
    fit(cfg, method, timed, ctx=DistContext(device=device), on_step=[on_step], progress=False,
        on_epoch=lambda e, m, s: epoch.update(m))
    seconds = stamps[1] - stamps[0]
    waits = sum(timed.waits[args.warmup + 1: last + 2])
    idle = epoch.get("time/device_idle")  # CUDA: the device's idle time between the epoch's steps
    return {"img_per_s": args.batch * args.steps / seconds, "step_s": seconds / args.steps,
            "data_wait": waits / seconds, "compile_s": epoch.get("time/compile_s"),
            "device_idle": None if idle is None else idle * epoch["epoch_time"] / seconds}


def _pipeline(args, name: str, folder: Path, cpus: float, device) -> list[dict]:
    """The data alone: the CPU pipeline with each decode setting, and the device's decoding of bytes
    already in memory."""
    import torch

    from ..data.decode import cut_on_device
    from ..methods import get_method

    views = [v.at(args.size) for v in get_method(name).views(get_method(name).Settings(), args.size)]
    cfg = _config(args, name, cpus, (folder, "cpu"), args.images)
    from ..data import open_sources

    source = open_sources(cfg.data)[0]
    steps = args.warmup + args.steps
    out, kept = [], []
    for decode in ("cpu", "gpu"):
        source.decode = decode
        it = source.epoch(0, args.batch, args.seed, views=views)
        next(it)  # the pipeline's start
        t, k = time.perf_counter(), 0
        for b in it:
            k += 1
            if decode == "gpu" and len(kept) < 4:
                kept.append(b)
            if k >= steps:
                break
        seconds = time.perf_counter() - t
        out.append({"mode": f"decode={decode} on {cpus:g} CPUs" + (" (bytes and boxes only)" if decode == "gpu" else ""),
                    "img_per_s": k * args.batch / seconds, "per_cpu": k * args.batch / seconds / cpus})

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    cut_on_device(kept[0].encoded, kept[0].boxes, views, device)
    sync()
    t, k = time.perf_counter(), 0
    for _ in range(3):
        for b in kept:
            cut_on_device(b.encoded, b.boxes, views, device)
            k += len(b.encoded)
    sync()
    out.append({"mode": f"decode + crops on {device.type} from bytes in memory", "img_per_s": k / (time.perf_counter() - t)})
    return out


def _profile(args, name: str, device, steps: int = 3, top: int = 20) -> str:
    """torch.profiler over ``steps`` eager steps of the loop from memory: top ops by device (else CPU) time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ..components.distributed import DistContext
    from ..data import MemorySource
    from ..train.build import build_method
    from ..train.loop import fit
    from ._timing import random_images

    cfg = _config(args, name, 1.0, None, args.batch * (steps + 1), compile=False)
    source = MemorySource(random_images(args.batch * (steps + 1), args.size, seed=args.seed))
    method = build_method(cfg, source)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fit(cfg, method, source, ctx=DistContext(device=device), progress=False)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top)


def report(rows: list[dict], settings: dict, json_path: str | None) -> dict:
    """The table of the rows, the ratio streamed / compiled ceiling and the data-wait share."""
    notes = []
    # the worst streamed row's data wait; nan (the headline's "not measured") when none was streamed
    worst = max((r["data_wait"] for r in rows if r["part"] == "stream"), default=float("nan"))
    for name in dict.fromkeys(r["method"] for r in rows):
        ceiling = next((r["img_per_s"] for r in rows if r["method"] == name and r["part"] == "ceiling"
                        and r.get("mode") == "compiled"), None)
        for r in rows:
            if r["method"] == name and r["part"] in ("memory", "stream") and ceiling:
                r["vs_ceiling"] = r["img_per_s"] / ceiling
        for r in (r for r in rows if r["method"] == name and r["part"] == "stream"):
            if "vs_ceiling" in r:
                met = "met" if r["vs_ceiling"] >= RATIO_TARGET and r["data_wait"] <= TARGET else "not met"
                notes.append(f"{name} streamed (decode={r['decode']}) / compiled ceiling = {r['vs_ceiling']:.2f}, "
                             f"data wait {r['data_wait']:.1%} (targets >= {RATIO_TARGET} and <= {TARGET:.0%}: {met})")
    if any(r["part"] in ("memory", "stream") for r in rows):
        notes.append("data wait: the host's time blocked on the source; with the next batch fetched while the "
                     "device works through the queued step it can pass under the device's work: compare a streamed "
                     "row's img/s with the memory row's for what the device lost")
    for r in rows:
        if r["part"] == "profile":
            print(f"profile of {r['method']} (eager, {r['device']}):\n{r['table']}")
    table_rows = [r for r in rows if r["part"] != "profile"]
    columns = [("part", "part", ""), ("method", "method", ""), ("mode", "mode", ""), ("decode", "decode", ""),
               ("img_per_s", "img/s", ".0f"), ("vs_ceiling", "vs compiled", ".2f"), ("data_wait", "data wait", ".1%"),
               ("device_idle", "device idle", ".1%"),
               ("compile_s", "compile s", ".0f"), ("device", "device", "")]
    return finish("gpu", TARGET, worst, table_rows, columns, settings, json_path, notes)
