"""The loop's device feed: batches reach the method in the source's order with the source's contents,
metric values are read from the device once per epoch, and every epoch says where its time went."""

from __future__ import annotations

import pytest
import torch

from sslray.data import ImageSet, MemorySource
from sslray.methods import get_method
from sslray.train import loop, prefetch
from sslray.train.build import build_config, build_method
from sslray.train.prefetch import to_device


def _images(n: int = 48) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.arange(n) % 4, list("abcd"), "random", "train")


def test_the_device_feed_hands_on_every_batch_in_order_unchanged():
    source = MemorySource(_images())
    raw = list(source.epoch(3, 16, seed=7))
    fed = list(to_device(iter(source.epoch(3, 16, seed=7)), torch.device("cpu")))
    assert len(fed) == len(raw) == 3
    for r, f in zip(raw, fed):
        assert torch.equal(r.views[0], f.views[0]) and f.views[0].dtype == torch.uint8
        assert torch.equal(r.labels, f.labels) and torch.equal(r.index, f.index_cpu) and f.cut == r.cut
        assert f.wait() is f  # nothing to wait for off CUDA


class _Clock:
    """A fake ``time`` whose clock moves only when the test says: the source takes 3 s a batch, the
    step 1 s (an on_step hook), so the epoch's shares are known exactly."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_an_epoch_says_where_its_time_went_and_reads_its_losses_once(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(prefetch, "time", clock)
    cfg = build_config("rotation", {"trunk.width": 0.125, "optim.batch_size": 16, "epochs": 1})
    data = MemorySource(_images())
    method = build_method(cfg, data)

    class Slow(MemorySource):
        def epoch(self, *a, **kw):
            for b in super().epoch(*a, **kw):
                clock.now += 3.0
                yield b

    reads = []
    real_float = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: reads.append(1) or real_float(t))
    seen, reads_by_step = [], []

    def step(*_):
        clock.now += 1.0
        reads_by_step.append(len(reads))

    loop.fit(cfg, method, Slow(_images()), progress=False, on_step=[step], on_epoch=lambda e, m, s: seen.append(m))
    m = seen[0]
    assert (m["time/data_wait"], m["time/host_to_device"], m["time/step"]) == (0.75, 0.0, 0.25)
    assert m["epoch_time"] == 12.0 and m["img_per_s"] == m["img_per_s_worker"] == 48 / 12
    # no value is read from the device while the epoch runs: the loss and accuracy reach the host
    # once, after its last step
    assert reads_by_step == [0, 0, 0] and len(reads) > 0 and set(m) >= {"loss", "acc"}


def test_device_gaps_sum_the_idle_time_between_steps_and_record_nothing_off_cuda():
    from sslray.train.prefetch import DeviceGaps

    clock = iter([0.0, 10.0, 12.0, 30.0, 35.0, 36.0])  # (start, end) of three steps, in ms on the device

    class Event:  # a CUDA event's interface, on a clock the test sets
        def record(self):
            self.t = next(clock)

        def elapsed_time(self, later):
            return later.t - self.t

        def synchronize(self):
            pass

    gaps = DeviceGaps(torch.device("cuda"), event=Event)
    for _ in range(3):
        gaps.start()
        gaps.end()
    assert gaps.idle_seconds() == pytest.approx((2.0 + 5.0) / 1000)  # 10 -> 12 and 30 -> 35
    assert gaps.marks == [] and gaps.idle_seconds() is None  # read once per epoch, then reset
    cpu = DeviceGaps(torch.device("cpu"), event=Event)
    cpu.start()
    cpu.end()
    assert cpu.marks == [] and cpu.idle_seconds() is None
