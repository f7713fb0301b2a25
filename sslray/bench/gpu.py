"""``sslray bench gpu`` (target 0.05): the prepared GPU check of the streaming source. ResNet-50 at
224 px (ImageNet stem, full width), SimCLR and rotation, trained from a streamed generated folder of
JPEG files under bf16 autocast on one GPU; prints images/s and the share of each step spent waiting
for data, against the published anchor of ~2,500-3,000 img/s for ResNet-50 training on one
A100/H100 (NVIDIA's DeepLearningExamples, FFCV).

Refuses to run without a CUDA GPU unless ``--cpu`` is given (a smoke test of the script itself at
tiny sizes: the figures then mean nothing).
"""

from __future__ import annotations

import os
import time

from ..errors import UserError
from ._timing import add_common, finish, own_ray, positive, scratch

HELP = "ResNet-50 at 224 px on one GPU from a streamed folder: img/s and data wait (needs CUDA)"
TARGET = 0.05
ANCHOR = (2500, 3000)


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--images", type=int, default=6000, help="generated JPEG files (6000)")
    p.add_argument("--sizes", default="300,500", help="smallest,largest side of the generated images (300,500)")
    p.add_argument("--methods", default="simclr,rotation", help="comma-separated methods (simclr,rotation)")
    p.add_argument("--batch", type=int, default=256, help="batch (256)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per method, after --warmup (40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (5)")
    p.add_argument("--cpus", type=float, help="CPUs of the decode pipeline (default: all but two)")
    p.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet50"])
    p.add_argument("--width", type=float, default=1.0, help="trunk width (1.0)")
    p.add_argument("--size", type=int, default=224, help="image size (224)")
    p.add_argument("--cpu", action="store_true", help="run without a GPU (a smoke test; figures meaningless)")


def run(args) -> dict:
    import torch

    positive(args, "images", "batch", "steps", "size")
    positive(args, "warmup", minimum=0)
    if not torch.cuda.is_available() and not args.cpu:
        raise UserError("bench gpu needs a CUDA GPU (none visible here); --cpu runs it as a smoke test")
    from ._timing import csv

    lo, hi = (int(v) for v in args.sizes.split(","))
    cpus = args.cpus or float(max(1, (os.cpu_count() or 2) - 2))
    return bench_gpu(csv(args.methods, flag="--methods"), args.images, (lo, hi), args.batch, args.steps,
                     args.warmup, cpus, args.arch, args.width, args.size, args.seed, args.json)


def bench_gpu(methods, images: int, sizes, batch: int, steps: int, warmup: int, cpus: float, arch: str,
              width: float, size: int, seed: int, json_path: str | None) -> dict:
    import torch

    from ..components.distributed import dist_context
    from ..data.synthetic import write_folder
    from ..train.build import build_config, build_run
    from ..train.loop import fit
    from .data import TimedSource

    rows = []
    with scratch() as (d, _), own_ray():
        t = time.perf_counter()
        write_folder(d / "jpeg", images, 10, sizes, seed)
        made = time.perf_counter() - t
        for name in methods:
            n = batch * (warmup + steps)
            cfg = build_config(name, {"data.name": "imagefolder", "data.root": str(d / "jpeg"), "data.image_size": size,
                                      "data.source": "stream", "data.cpus_per_worker": cpus, "data.limit": n,
                                      "trunk.arch": arch, "trunk.width": width, "trunk.stem": "imagenet",
                                      "optim.batch_size": batch, "run.epochs": 1, "run.seed": seed,
                                      "eval.enabled": False})
            built = build_run(cfg)
            timed = TimedSource(built.train)
            stamps = []

            def step(*_):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

            fit(cfg, built.method, timed, ctx=dist_context(), on_step=[step], progress=False)
            timed_steps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
            waits = timed.waits[warmup + 1: warmup + 1 + len(timed_steps)]
            seconds = sum(timed_steps)
            rows.append({"method": name, "img_per_s": batch * len(timed_steps) / seconds,
                         "step_s": seconds / len(timed_steps), "data_wait": sum(waits) / seconds,
                         "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"})
    anchor = f"{ANCHOR[0]:,}-{ANCHOR[1]:,} img/s"
    notes = [f"{images} generated JPEGs of {sizes[0]}-{sizes[1]} px (written in {made:.0f} s); decode pipeline on "
             f"{cpus:g} CPUs; {arch} x{width:g} at {size} px, batch {batch}, bf16 autocast on CUDA",
             f"anchor: ResNet-50 training at {anchor} on one A100/H100 (NVIDIA DeepLearningExamples, FFCV)"]
    columns = [("method", "method", ""), ("img_per_s", "img/s", ".0f"), ("step_s", "s/step", ".3f"),
               ("data_wait", "data wait", ".1%"), ("device", "device", "")]
    settings = {"methods": list(methods), "images": images, "batch": batch, "steps": steps, "warmup": warmup,
                "cpus": cpus, "arch": arch, "width": width, "size": size}
    return finish("gpu", TARGET, max(r["data_wait"] for r in rows), rows, columns, settings, json_path, notes)
