"""``sslray bench step`` (target 1.05): a training step of the shared loop
(:func:`~sslray.train.loop.fit`) over a plain PyTorch loop: the same method object, SGD with
momentum, a ``for`` over pre-made batches. Timed steps use random uint8 pixels (a step's cost does
not depend on the content)."""

from __future__ import annotations

import statistics
import time

from ..config import RunConfig
from ._timing import add_common, bench_config, csv, finish, interleaved, median, positive, random_images, \
    step_times, time_fit

HELP = "the shared training loop against a plain PyTorch loop"
TARGET = 1.05


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--methods", default="rotation,pirl", help="comma-separated methods (rotation,pirl)")
    p.add_argument("--batch", type=int, default=128, help="batch size (128)")
    p.add_argument("--width", type=float, default=0.25, help="trunk width (0.25)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per repetition (2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    p.add_argument("--reps", type=int, default=6, help="interleaved repetitions (6)")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops")


def run(args) -> dict:
    positive(args, "batch", "steps", "reps")
    positive(args, "warmup", minimum=0)
    return bench_step(csv(args.methods, flag="--methods"), args.batch, args.width, args.steps, args.warmup,
                      args.reps, args.seed, args.json, args.profile)


def time_plain(cfg: RunConfig, method, batches, warmup: int) -> float:
    """Median seconds per step of a plain PyTorch loop: the same method object, SGD with
    momentum, a ``for`` over pre-made float batches whose views it cuts, nothing else."""
    import torch

    from ..components.augment import cut_views

    o = cfg.optim
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=o.effective_lr(),
                          momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.momentum > 0)
    method.train()
    torch.manual_seed(cfg.seed)
    stamps = [time.perf_counter()]
    views = method.input_views()
    for x, y, idx in batches:
        out = method(cut_views(x, views), y, idx)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        method.after_step()
        out["loss"].item()
        stamps.append(time.perf_counter())
    return median(step_times(stamps, warmup))


def pipeline_seconds(method, images, idx, reps: int = 3) -> dict[str, float]:
    """Seconds of the data pipeline of one step outside the model: the loop's batch gather and
    uint8 -> float conversion, and the method's batch transforms (rotation, crops and colour
    jitter, jigsaw tiling) run alone on the same batch."""
    import torch

    from ..components.augment import cut_views
    from ..components.rotation import rotate_batch
    from ..components.tiles import shuffle_tiles, tile_grid
    from ..methods._contrastive import photometric

    def gather():
        return images[idx].float().div_(255).contiguous(memory_format=torch.channels_last)

    x = gather()
    s = method.settings
    views = method.input_views()
    parts = {"gather+convert": gather, "cut views": lambda: cut_views(x, views)}
    if method.name == "rotation":
        parts["rotate"] = lambda: rotate_batch(x)
    if hasattr(s, "strength"):
        parts["augment"] = lambda: [photometric(v, s.strength) for v in cut_views(x, views)]
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
    import torch

    from ..data import MemorySource
    from ..data.source import epoch_order, rank_slices
    from ..train.build import build_method

    cl = torch.channels_last
    rows, ratios = [], []
    for name in methods:
        n = batch * (warmup + steps)
        data = random_images(n, seed=seed)
        cfg = bench_config(name, batch=batch, width=width, seed=seed)
        ours, plain, plain_cl = (build_method(cfg, MemorySource(data)) for _ in range(3))
        plain_cl.to(memory_format=cl)
        # the plain loops get the shared loop's batches of epoch 0, already gathered and converted
        batches = [(data.images[i].float().div_(255), data.labels[i], i)
                   for i in rank_slices(epoch_order(n, cfg.seed, 0), batch, 0, 1)]
        batches_cl = [(x.contiguous(memory_format=cl), y, i) for x, y, i in batches]
        runs = interleaved(reps, lambda: time_fit(cfg, ours, data, warmup),
                           lambda: time_plain(cfg, plain, batches, warmup),
                           lambda: time_plain(cfg, plain_cl, batches_cl, warmup))
        per_rep = [a / min(b, c) for a, b, c in runs]
        ratio = median(per_rep)
        ratios.append(ratio)
        ours_s = median([r[0] for r in runs])
        pipe = pipeline_seconds(ours, data.images, batches[0][2])
        rows.append({"method": name, "ours_s": ours_s, "plain_s": median([r[1] for r in runs]),
                     "plain_cl_s": median([r[2] for r in runs]), "ratio": ratio, "ratios": per_rep,
                     "ratio_vs_nchw": median([a / b for a, b, _ in runs]), "pipeline_s": pipe,
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
    return finish("step", TARGET, max(ratios), rows, columns, settings, json_path, notes)


def profile_steps(cfg: RunConfig, method, data, steps: int, top: int = 15) -> str:
    """torch.profiler over ``steps`` steps of the shared loop (after one warm-up step): top ops by self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ..train.loop import DistContext, fit

    from ..data import MemorySource

    n = cfg.optim.batch_size * steps
    fit(cfg, method, MemorySource(data.subset(torch.arange(cfg.optim.batch_size))), ctx=DistContext(), progress=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit(cfg, method, MemorySource(data.subset(torch.arange(n))), ctx=DistContext(), progress=False)
    return f"profile of {steps} {cfg.method} steps:\n" + prof.key_averages().table(sort_by="self_cpu_time_total",
                                                                                  row_limit=top)
