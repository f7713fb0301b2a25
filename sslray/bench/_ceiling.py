"""The ceilings of ``sslray bench gpu``: a training step written by hand, as a researcher would write
it without any platform, with its input already on the device (no data, no augmentation, no
metrics): torchvision's ResNet plus the method's head and loss, bf16 autocast on CUDA,
channels-last, SGD. Timed eager and under ``torch.compile``.

- simclr: two views -> trunk -> 2-layer projection (BN, ReLU) -> NT-Xent (tau 0.5).
- rotation: each image at 0, 90, 180 and 270 degrees -> trunk -> 4-way linear head -> cross-entropy.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def _trunk(arch: str):
    import torchvision

    trunk = getattr(torchvision.models, arch)(num_classes=10)
    out = trunk.fc.in_features
    trunk.fc = torch.nn.Identity()
    return trunk, out


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class Step(torch.nn.Module):
    """One method's forward to the loss, by hand."""

    def __init__(self, method: str, arch: str):
        super().__init__()
        self.method = method
        self.trunk, out = _trunk(arch)
        if method == "simclr":
            self.head = torch.nn.Sequential(torch.nn.Linear(out, out), torch.nn.BatchNorm1d(out), torch.nn.ReLU(),
                                            torch.nn.Linear(out, 128))
        else:
            self.head = torch.nn.Linear(out, 4)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if self.method == "simclr":
            z1, z2 = self.head(self.trunk(torch.cat([x1, x2]))).chunk(2)
            return _nt_xent(z1, z2)
        rotated = torch.cat([torch.rot90(x1, k, (2, 3)) for k in range(4)])
        labels = torch.arange(4, device=x1.device).repeat_interleave(len(x1))
        return F.cross_entropy(self.head(self.trunk(rotated.contiguous(memory_format=torch.channels_last))), labels)


def time_ceiling(method: str, arch: str, size: int, batch: int, steps: int, warmup: int,
                 backend: str | None, device: torch.device) -> dict:
    """Images per second of the hand-written step (``steps`` timed after ``warmup``; compiled with
    ``backend`` unless None), and the seconds its first step took (the compile, when compiled)."""
    model = Step(method, arch).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator(device="cpu").manual_seed(0)
    x1, x2 = (torch.rand((batch, 3, size, size), generator=g).to(device).contiguous(memory_format=torch.channels_last)
              for _ in range(2))
    run = torch.compile(model, backend=backend) if backend else model
    amp = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = run(x1, x2)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(max(0, warmup - 1)):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - t
    return {"img_per_s": batch * steps / seconds, "step_s": seconds / steps, "compile_s": first if backend else None}
