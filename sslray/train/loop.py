"""The one training loop every method shares: laptop run, Tune trial or multi-node Ray Train job.

It knows nothing of any method: it takes this rank's batches of the training split from a data
source (:mod:`sslray.data.source`), cuts the views the method declares where the source left them
uncut, calls the method's ``forward`` (its training step) on the views, steps the optimiser and
schedule, and hands every step and epoch to its callbacks (:mod:`sslray.train.callbacks`: the
monitors, checkpoints, MLflow and the reporters are theirs). Seeded: the
batch order of epoch ``e`` depends only on ``(seed, e)``, and the RNG state is checkpointed, so a
resumed run continues as if it had never stopped.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.distributed as dist

from ..components.inputs import batch_inputs
from ..components.distributed import DistContext, dist_context
from ..config import OptimConfig, RunConfig
from ..data.source import Source
from ..errors import UserError
from ..progress import bar
from .callbacks import Callback, steps_hooked
from .checkpoint import rng_state, set_rng_state
from .prefetch import DeviceGaps, to_device

#: the progress bar's loss is read from the device every this many steps (each read waits for the device)
SHOW_EVERY = 25


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    lr = cfg.effective_lr()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def build_schedule(opt, cfg: OptimConfig, steps_per_epoch: int, epochs: int):
    total = max(1, steps_per_epoch * epochs)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(cfg: RunConfig, method: torch.nn.Module, source: Source, *,
        ctx: DistContext | None = None, start: dict | None = None,
        callbacks: list[Callback] = (), on_epoch: Callable[[int, dict, dict], None] | None = None,
        on_step: list[Callable] = (), progress: bool = True) -> torch.nn.Module:
    """Train ``method`` on ``source`` for ``cfg.epochs`` epochs from ``start`` (a checkpoint dict) if given.

    Every :class:`~sslray.train.callbacks.Callback` of ``callbacks`` hears of every step, every
    epoch (in list order, with the epoch's metrics as logged: :func:`epoch_logs`, and the full
    checkpoint state: model, optimiser, schedule, RNG, epoch) and the end; on every rank.
    Plain functions do too: ``on_epoch(epoch, metrics, state)`` with the epoch's mean metrics as
    the loop names them, before the callbacks; each ``on_step(epoch, step, idx, loss, model)`` after
    every optimiser step (``loss`` a 0-dim tensor on the device: a hook that reads it waits for the
    step; ``idx`` on the host). Metric values stay on the device until the epoch ends.
    """
    ctx = ctx or dist_context()
    # channels-last is faster for convolutions on both CPU (oneDNN) and GPU (tensor cores)
    model = method.to(ctx.device, memory_format=torch.channels_last)
    core = model
    if ctx.world_size > 1:
        # gradients are views into DDP's all-reduce buckets (no copy in or out of them); buckets of
        # 25 MB (DDP's default) are reduced as soon as backward fills them, under the rest of backward
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            gradient_as_bucket_view=True, bucket_cap_mb=25)
    if cfg.optim.batch_size % ctx.world_size:
        raise ValueError(f"global batch {cfg.optim.batch_size} does not split over {ctx.world_size} workers")
    views = core.input_views()
    steps_per_epoch = source.steps(cfg.optim.batch_size, ctx.world_size)
    opt = build_optimizer([p for p in core.parameters() if p.requires_grad], cfg.optim)
    sched = build_schedule(opt, cfg.optim, steps_per_epoch, cfg.epochs)
    step_model, compiling = model, None
    if cfg.train.compile:  # the training step (forward and backward) compiled; state dicts stay `core`'s
        compiling = Compiled(model, cfg, ctx.is_main and progress)
        step_model = compiling.model
    first = 0
    if start:
        core.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
        sched.load_state_dict(start["scheduler"])
        set_rng_state(start["rng"])
        first = int(start["epoch"])
    else:
        torch.manual_seed(cfg.seed + ctx.rank)
    amp = ctx.device.type == "cuda"
    stepping = steps_hooked(callbacks)
    for epoch in range(first, cfg.epochs):
        model.train()
        sums: dict[str, torch.Tensor | float] = {}  # on the device: read once per epoch, not once per step
        counts: dict[str, int] = {}  # per key: a method may report a metric on some batches only
        seen, t0, waited, copying, decoding, corrupt = 0, time.perf_counter(), 0.0, 0.0, 0.0, []
        batches = source.epoch(epoch, cfg.optim.batch_size, cfg.seed, ctx.rank, ctx.world_size, views)
        steps = bar(range(steps_per_epoch), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    unit="batch", enabled=progress and ctx.is_main)
        moved = to_device(iter(batches), ctx.device, core.needs, views)
        gaps = DeviceGaps(ctx.device)
        for step in steps:
            batch = next(moved).wait()  # on the device; the next batch's copy is already under way
            gaps.start()
            waited += batch.waited  # the wait for data: what a streaming source must keep near zero
            copying += batch.copying
            decoding += batch.decoding
            corrupt += batch.corrupt
            xs = batch_inputs(batch, views, ctx.device)  # floats in [0, 1], cut, channels-last
            extra = {k: _as_input(t) for k, t in batch.extra.items()}
            opt.zero_grad(set_to_none=True)
            if compiling is not None and compiling.pending:
                out = compiling.first_step(xs, batch.labels, batch.index, extra, opt, amp, ctx)
                step_model = compiling.model
            else:
                out = _forward_backward(step_model, xs, batch.labels, batch.index, extra, amp, ctx,
                                        poison=cfg.debug.nan_at == [epoch, step])
            if cfg.train.clip_grad:  # on the reduced gradients (DDP's), so every rank clips alike; no host sync
                torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.train.clip_grad)
            opt.step()
            sched.step()
            core.after_step()
            gaps.end()
            n = len(batch.index_cpu)
            for k, v in out.items():
                v = v.detach().float() if torch.is_tensor(v) else float(v)
                sums[k] = sums.get(k, 0.0) + v * n
                counts[k] = counts.get(k, 0) + n
            seen += n
            for hook in on_step:
                hook(epoch, step, batch.index_cpu, out["loss"].detach(), core)
            for c in stepping:
                c.on_step(epoch, step, batch.index_cpu, out["loss"].detach(), core)
            if progress and ctx.is_main and (step % SHOW_EVERY == 0 or step == steps_per_epoch - 1):
                steps.set_postfix(loss=f"{float(out['loss'].detach()):.3f}", refresh=False)  # a sync, now and then
        metrics = _reduce({k: float(v) for k, v in sums.items()}, counts, ctx)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        metrics.update(lr=opt.param_groups[0]["lr"], epoch_time=elapsed, data_wait=waited / elapsed,
                       img_per_s=seen * ctx.world_size / elapsed, img_per_s_worker=seen / elapsed)
        # where the epoch's time went, as shares of it: waiting for data, staging and issuing the copies
        # to the device, issuing the decoding on the device (data.decode=gpu), and the rest (the steps)
        metrics.update({"time/data_wait": waited / elapsed, "time/host_to_device": copying / elapsed,
                        "time/decode": decoding / elapsed,
                        "time/step": max(0.0, 1 - (waited + copying + decoding) / elapsed)})
        idle = gaps.idle_seconds()
        if idle is not None:  # CUDA: what the device itself lost between steps (see DeviceGaps)
            metrics["time/device_idle"] = idle / elapsed
        if compiling is not None and compiling.seconds is not None:
            metrics["time/compile_s"] = compiling.seconds
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss is {metrics['loss']} at epoch {epoch + 1}")
        bad = [n for n, p in core.trunk.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:  # an overflow the loss did not show (e.g. an infinite step): the trunk is lost
            raise FloatingPointError(f"{len(bad)} trunk weight tensors are not finite after epoch {epoch + 1} "
                                     f"(first: {bad[0]})")
        state = {"epoch": epoch + 1, "model": core.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "rng": rng_state()}
        corrupt = _gather_corrupt(corrupt, ctx)
        if corrupt:  # unreadable images the source replaced: counted, named, and past a threshold fatal
            metrics["corrupt_images"] = len(corrupt)
            state["corrupt"] = corrupt[:5]
            allowed = cfg.data.max_corrupt * len(source)
            if len(corrupt) >= seen * ctx.world_size:  # nothing was readable: batches of zeros, whatever the limit
                raise UserError(f"no image of epoch {epoch + 1} could be read ({len(corrupt)} unreadable, e.g. "
                                f"{corrupt[0]}): the run would train on blank batches")
            if len(corrupt) > allowed:
                raise UserError(f"{len(corrupt)} unreadable images in epoch {epoch + 1} (more than data.max_corrupt="
                                f"{cfg.data.max_corrupt:g} of {len(source)}), e.g. {corrupt[0]}")
        if on_epoch:
            on_epoch(epoch, metrics, state)
        logs = epoch_logs(metrics)
        for c in callbacks:
            c.on_epoch(epoch, logs, state)
    for c in callbacks:
        c.on_end()
    return core


def epoch_logs(metrics: dict) -> dict:
    """An epoch's metrics as logged: ``train/<name>``, the shares of its time as ``time/<share>``."""
    return {k if k.startswith("time/") else f"train/{k}": v for k, v in metrics.items()}


def _forward_backward(model, xs, labels, index, extra, amp: bool, ctx: DistContext, poison: bool = False) -> dict:
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(xs, labels, index, **extra)
    if poison:  # debug.nan_at: a diverging step, for the tests of what a diverged run records
        out["loss"] = out["loss"] * float("nan")
    out["loss"].backward()
    return out


class Compiled:
    """``train.compile``: the method's training step under ``torch.compile`` (mode
    ``train.compile_mode``, inductor unless ``debug.compile_backend`` says otherwise), DDP
    included (it compiles the DDP-wrapped model: Dynamo splits graphs at DDP's buckets). The first
    step compiles and is timed (``time/compile_s``); a method that cannot compile trains eagerly
    after one line saying why."""

    def __init__(self, model, cfg: RunConfig, say: bool):
        self.eager, self.say, self.name = model, say, cfg.method
        self.mode = cfg.train.compile_mode
        self.model = torch.compile(model, mode=None if self.mode == "default" else self.mode,
                                   backend=cfg.debug.compile_backend or "inductor")
        self.pending, self.seconds = True, None

    def first_step(self, xs, labels, index, extra, opt, amp: bool, ctx: DistContext) -> dict:
        self.pending = False
        t0 = time.perf_counter()
        try:
            out = _forward_backward(self.model, xs, labels, index, extra, amp, ctx)
            self.seconds = time.perf_counter() - t0
            if self.say:
                print(f"train.compile: {self.name}'s step compiled in {self.seconds:.1f} s (mode {self.mode})",
                      flush=True)
            return out
        except Exception as e:  # a method Dynamo or its backend cannot take: train it as it is
            print(f"train.compile: {self.name} could not be compiled ({type(e).__name__}: "
                  f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); training eagerly", flush=True)
            self.model = self.eager
            opt.zero_grad(set_to_none=True)
            return _forward_backward(self.eager, xs, labels, index, extra, amp, ctx)


def _as_input(t: torch.Tensor) -> torch.Tensor:
    """An extra of a batch, on the device: uint8 (frames) as floats in [0, 1], the rest as they are."""
    return t.float().div_(255) if t.dtype == torch.uint8 else t


def _gather_corrupt(paths: list[str], ctx: DistContext) -> list[str]:
    """Every rank's unreadable images of the epoch (all ranks call this: a collective)."""
    if ctx.world_size == 1:
        return paths
    count = torch.tensor([len(paths)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        count = count.to(ctx.device)
    dist.all_reduce(count)
    if not int(count.item()):
        return []
    everyone: list = [None] * ctx.world_size
    dist.all_gather_object(everyone, paths)
    return [p for ps in everyone for p in ps]


def _reduce(sums: dict[str, float], counts: dict[str, int], ctx: DistContext) -> dict[str, float]:
    """Mean of each metric over the samples (of all ranks) it was reported for."""
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [float(counts[k]) for k in keys], dtype=torch.float64)
    if ctx.world_size > 1:
        backend_dev = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = t.to(backend_dev)
        dist.all_reduce(t)
        t = t.cpu()
    n = len(keys)
    return {k: float(t[i] / max(t[n + i], 1)) for i, k in enumerate(keys)}
