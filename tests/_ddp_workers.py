"""Worker functions for the 2-process gloo tests (a module of their own so that spawned
processes can import them by name)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def _close() -> None:
    """Leave together: without the barrier, rank 0 (which hosts the TCP store) can tear the group
    down while rank 1 is still in its last collective, and rank 1 aborts ("terminate called
    without an active exception", seen once in CI under load)."""
    dist.barrier()
    dist.destroy_process_group()


def state_worker(rank: int, world: int, port: int, batches, z1, z2, out: str) -> None:
    """Feed this rank's shard of every global batch to a MemoryBank and a KeyQueue; NT-Xent on
    this rank's shard of (z1, z2) with gradients."""
    from sslray.components.losses import nt_xent
    from sslray.components.memory_bank import MemoryBank
    from sslray.components.queue import KeyQueue

    _init(rank, world, port)
    torch.manual_seed(0)  # same initial state on every rank, as a DDP model's broadcast would give
    bank, queue = MemoryBank(20, 4, momentum=0.5), KeyQueue(7, 4)
    for idx, feats in batches:
        shard = slice(rank * len(idx) // world, (rank + 1) * len(idx) // world)
        bank.update(idx[shard], feats[shard])
        queue.enqueue(feats[shard])
    shard = slice(rank * len(z1) // world, (rank + 1) * len(z1) // world)
    a, b = z1[shard].clone().requires_grad_(), z2[shard].clone().requires_grad_()
    loss = nt_xent(a, b, 0.5)
    loss.backward()
    torch.save({"bank": bank.bank, "keys": queue.keys, "ptr": queue.ptr, "loss": loss.detach(),
                "grad1": a.grad, "grad2": b.grad}, f"{out}/rank{rank}.pt")
    _close()


def fit_worker(rank: int, world: int, port: int, methods: list, out: str) -> None:
    """One epoch of each method with the shared loop under DistributedDataParallel."""
    from sslray.data import ImageSet, MemorySource
    from sslray.data.clips import ClipSource, clip_set
    from sslray.data.video import generate_clips
    from sslray.train.build import build_config, source_info
    from sslray.methods import DataInfo, get_method
    from sslray.models import build_trunk
    from sslray.train.loop import dist_context, fit

    _init(rank, world, port)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(32) % 4
    result = {}
    for name, settings in methods:
        method_name = name.split("-")[0]  # "simclr-shuffled": simclr with other settings
        cls = get_method(method_name)
        cfg = build_config(method_name, {"run.epochs": 1, "optim.batch_size": 8, "data.image_size": 16, **settings,
                                         **({"data.name": "synthetic_video", "data.frames": 6} if cls.needs else {})})
        source = MemorySource(ImageSet(images, labels, list("abcd"), "random", "train"))
        info = DataInfo(4, 32, 16, 8)
        if cls.needs:  # issue 16's: clips, sound and tracks pass through the loop under DDP
            source = ClipSource(clip_set(*generate_clips(32, 6, 16, seed=0), "train"))
            info = source_info(cfg, source)
        torch.manual_seed(0)
        trunk = build_trunk("resnet18", 0.125, "cifar", 16, cfg.trunk.norm, cfg.trunk.norm_splits)
        method = cls(cls.Settings(**cfg.settings), trunk, info)
        seen = []
        fit(cfg, method, source, ctx=dist_context(), progress=False, on_epoch=lambda e, m, s: seen.append(m))
        result[name] = {"metrics": seen[-1], "buffers": {k: v.clone() for k, v in method.state_dict().items()
                                                         if k.startswith(("bank.", "queue.", "chains."))}}
    torch.save(result, f"{out}/fit{rank}.pt")
    _close()
