"""Worker functions of tests/test_negative_free.py's 2-process gloo tests (a module of their own so
that spawned processes can import them by name)."""

from __future__ import annotations

import torch

from _ddp_workers import _close, _init


def loss_worker(rank: int, world: int, port: int, z1, z2, out: str) -> None:
    """Barlow Twins' and VICReg's losses on this rank's shard of (z1, z2), with gradients."""
    from sslray.components.negative_free import barlow_twins_loss, vicreg_terms

    _init(rank, world, port)
    shard = slice(rank * len(z1) // world, (rank + 1) * len(z1) // world)
    result = {}
    for name, fn in (("barlow", lambda a, b: barlow_twins_loss(a, b, 0.1)),
                     ("vicreg", lambda a, b: sum(vicreg_terms(a, b).values()))):
        a, b = z1[shard].clone().requires_grad_(), z2[shard].clone().requires_grad_()
        loss = fn(a, b)
        loss.backward()
        result[name] = {"loss": loss.detach(), "grad1": a.grad, "grad2": b.grad}
    torch.save(result, f"{out}/loss{rank}.pt")
    _close()


def fit_worker(rank: int, world: int, port: int, methods: list, out: str) -> None:
    """One epoch of each method with the shared loop under DistributedDataParallel; its metrics and
    its target / teacher state (weights, buffers, centre, step)."""
    from sslray.data import ImageSet, MemorySource
    from sslray.methods import DataInfo, get_method
    from sslray.models import build_trunk
    from sslray.train.build import build_config
    from sslray.train.loop import dist_context, fit

    _init(rank, world, port)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(32) % 4
    result = {}
    for name, settings in methods:
        cls = get_method(name)
        cfg = build_config(name, {"run.epochs": 1, "optim.batch_size": 8, "data.image_size": 16, **settings})
        source = MemorySource(ImageSet(images, labels, list("abcd"), "random", "train"))
        torch.manual_seed(0)
        trunk = build_trunk("resnet18", 0.125, "cifar", 16, cfg.trunk.norm, cfg.trunk.norm_splits)
        method = cls(cls.Settings(**cfg.settings), trunk, DataInfo(4, 32, 16, 8, epochs=1))
        seen = []
        fit(cfg, method, source, ctx=dist_context(), progress=False, on_epoch=lambda e, m, s: seen.append(m))
        # the target's weights, the centre and the step (BN running statistics, the target's as the
        # online trunk's, are rank 0's from DDP's broadcast at every forward, each rank's after the last)
        state = {k: v.detach().clone() for k, v in [*method.named_parameters(), *method.named_buffers()]
                 if k.startswith(("target_", "teacher_", "center", "step")) and "running_" not in k
                 and "num_batches" not in k}
        result[name] = {"metrics": seen[-1], "state": state}
    torch.save(result, f"{out}/fit{rank}.pt")
    _close()
