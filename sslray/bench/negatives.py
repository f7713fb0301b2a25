"""``sslray bench negatives`` (target 1.3): a pirl / npid step with K = 32,000 memory-bank negatives
over one with the smallest K."""

from __future__ import annotations

from ..errors import UserError
from ._timing import add_common, bench_config, csv, finish, interleaved, median, positive, random_images, time_fit

HELP = "a memory-bank step at K negatives against the smallest K"
TARGET = 1.3
#: K of the negatives target (PIRL's paper value)
TARGET_NEGATIVES = 32_000


def add_arguments(p) -> None:
    add_common(p)
    p.add_argument("--methods", default="pirl,npid", help="comma-separated methods (pirl,npid)")
    p.add_argument("--negatives", default="1,4096,32000,65536", metavar="K,K,...",
                   help="the K values (1,4096,32000,65536)")
    p.add_argument("--batch", type=int, default=128, help="batch size (128)")
    p.add_argument("--width", type=float, default=0.25, help="trunk width (0.25)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per repetition (2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions (2)")


def run(args) -> dict:
    positive(args, "batch", "steps", "reps")
    positive(args, "warmup", minimum=0)
    ks = csv(args.negatives, int, "--negatives")
    if min(ks) < 1:
        raise UserError("bench: --negatives must all be at least 1")
    return bench_negatives(csv(args.methods, flag="--methods"), ks, args.batch, args.width, args.steps,
                           args.warmup, args.reps, args.seed, args.json)


def negatives_bytes(batch: int, k: int, dim: int) -> int:
    """Peak memory of K bank negatives per step, about twice the gathered ``(B, K, D)`` float32
    tensor (measured: 3.5 GB peak RSS for pirl at B=128, K=32,000) plus the int64 sample indices."""
    return 2 * batch * k * dim * 4 + batch * k * 8


def bench_negatives(methods=("pirl", "npid"), ks=(1, 4096, 32000, 65536), batch: int = 128,
                    width: float = 0.25, steps: int = 2, warmup: int = 1, reps: int = 2, seed: int = 0,
                    json_path: str | None = None) -> dict:
    """Steps of each method with K memory-bank negatives, against the smallest K; the bank holds
    ``max(K) + 1`` images, so every K is allowed, and K that would not fit in memory are skipped."""
    import torch

    from ..data import MemorySource
    from ..data.imageset import available_memory
    from ..train.build import build_method

    ks = sorted(set(ks))
    n_steps = batch * (warmup + steps)
    data = random_images(max(max(ks) + 1, n_steps), seed=seed)
    notes, runnable = [], []
    budget = (available_memory() or 1 << 62) // 2
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
        models = {k: build_method(cfgs[k], MemorySource(data)) for k in runnable}
        # the bank holds every image; the timed steps read only the first batches
        first = data.subset(torch.arange(n_steps))
        jobs = [lambda k=k, m=models: time_fit(cfgs[k], m[k], first, warmup) for k in runnable]
        runs = interleaved(reps, *jobs)
        base = runnable[0]
        for j, k in enumerate(runnable):
            rel = [r[j] / r[0] for r in runs]
            rows.append({"method": name, "negatives": k, "seconds": median([r[j] for r in runs]),
                         "ratio": median(rel), "ratios": rel, "vs": base})
        near = min(runnable, key=lambda k: (abs(k - TARGET_NEGATIVES), -k))
        at_target.append(next(r["ratio"] for r in rows if r["method"] == name and r["negatives"] == near))
        if near != TARGET_NEGATIVES:
            notes.append(f"{name}: K={TARGET_NEGATIVES} not measured; headline uses K={near}")
        del models
    columns = [("method", "method", ""), ("negatives", "K", ""), ("seconds", "s/step", ".3f"),
               ("ratio", "x smallest K", ".3f")]
    settings = {"methods": list(methods), "negatives": runnable, "bank_size": len(data), "batch": batch,
                "width": width, "steps": steps, "warmup": warmup, "reps": reps, "threads": torch.get_num_threads()}
    return finish("negatives", TARGET, max(at_target), rows, columns, settings, json_path, notes)
