"""Batches on the device one step ahead: the host work of batch ``i + 1`` (waiting for the source,
the copy to the device) happens while the device still runs step ``i``.

On a CUDA device each batch's tensors are copied into pinned host buffers that are reused from batch
to batch (two sets, so the copy of one batch never overwrites the buffer the device is still reading),
then sent to the device on a side stream; the training stream waits on that copy's event only when
it uses the batch. Elsewhere (CPU) the batch is handed on as it is: no copies, no threads, the same
order and contents. A batch the source left encoded (``data.decode=gpu``) is decoded and cut on the
device here, on the side stream, so its decoding also runs under the previous step. Either way the
loop receives :class:`DeviceBatch` es in the source's order, and
the time spent waiting for the source and issuing the copies is measured per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..data.source import Batch


@dataclass
class DeviceBatch:
    """A batch whose tensors are on the device (``index_cpu``: the indices on the host, for hooks)."""

    views: list[torch.Tensor]  # uint8 on the device
    labels: torch.Tensor
    index: torch.Tensor
    index_cpu: torch.Tensor
    cut: bool
    corrupt: list[str]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    waited: float = 0.0  # seconds the host waited for the source to yield this batch
    copying: float = 0.0  # seconds the host spent staging and issuing its copy to the device
    decoding: float = 0.0  # seconds the host spent issuing its decoding on the device (data.decode=gpu)
    ready: object = None  # the CUDA event its copy records (None: nothing to wait for)

    def wait(self) -> "DeviceBatch":
        """Make the current stream wait for this batch's copy (a no-op off CUDA)."""
        if self.ready is not None:
            torch.cuda.current_stream().wait_event(self.ready)
            for t in (*self.views, self.labels, self.index, *self.extra.values()):
                t.record_stream(torch.cuda.current_stream())  # the copy stream's memory is used here
        return self


class _Pinned:
    """Pinned host buffers reused for tensors of the same shape and dtype (two generations)."""

    def __init__(self):
        self.sets: list[dict] = [{}, {}]
        self.events: list = [None, None]
        self.turn = 0

    def stage(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        which = self.turn
        self.turn ^= 1
        if self.events[which] is not None:  # the copy that last read these buffers must be done
            self.events[which].synchronize()
        pool = self.sets[which]
        out = []
        for i, t in enumerate(tensors):
            key = (i, tuple(t.shape), t.dtype)
            buf = pool.get(key)
            if buf is None:
                buf = pool[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            buf.copy_(t)
            out.append(buf)
        self._which = which
        return out

    def mark(self, event) -> None:
        self.events[self._which] = event


def to_device(batches: Iterator[Batch], device: torch.device, needs: Sequence[str] = (),
              views: Sequence = ()) -> Iterator[DeviceBatch]:
    """The source's batches as :class:`DeviceBatch` es, one ahead on CUDA (see the module docstring);
    ``views``: the method's views, for the batches left encoded."""
    if device.type != "cuda":
        yield from _plain(batches, device, needs, views)
        return
    stream, pinned = torch.cuda.Stream(device), _Pinned()
    ahead = _next_on_stream(batches, device, needs, stream, pinned, views)
    while ahead is not None:
        current = ahead
        ahead = _next_on_stream(batches, device, needs, stream, pinned, views)  # issued before the loop runs `current`
        yield current


def _decoded(b: Batch, device, views) -> tuple[Batch, float]:
    """``b`` with its views decoded and cut on ``device`` if the source left them encoded."""
    if b.encoded is None:
        return b, 0.0
    from ..data.decode import cut_on_device

    t = time.perf_counter()
    cut = cut_on_device(b.encoded, b.boxes, list(views), device)
    return Batch(cut, b.labels, b.index, True, b.corrupt, b.extra), time.perf_counter() - t


def _plain(batches: Iterator[Batch], device, needs, views=()) -> Iterator[DeviceBatch]:
    while True:
        t0 = time.perf_counter()
        b = next(batches, None)
        waited = time.perf_counter() - t0
        if b is None:
            return
        b, decoding = _decoded(b, device, views)
        t1 = time.perf_counter()
        moved = DeviceBatch([v.to(device) for v in b.views], b.labels.to(device), b.index.to(device), b.index,
                            b.cut, b.corrupt, {k: b.extra[k].to(device) for k in needs}, waited)
        moved.copying, moved.decoding = time.perf_counter() - t1, decoding
        yield moved


def _next_on_stream(batches, device, needs, stream, pinned: _Pinned, views=()) -> DeviceBatch | None:
    t0 = time.perf_counter()
    b = next(batches, None)
    waited = time.perf_counter() - t0
    if b is None:
        return None
    decoding, encoded = 0.0, b.encoded is not None
    if encoded:  # decoded and cut on the side stream, under the step the device is running
        with torch.cuda.stream(stream):
            b, decoding = _decoded(b, device, views)
    t1 = time.perf_counter()
    on_device = list(b.views) if encoded else []  # decoded above: already on the device
    host = [*([] if encoded else b.views), b.labels, b.index, *(b.extra[k] for k in needs)]
    staged = pinned.stage(host)
    with torch.cuda.stream(stream):
        moved = on_device + [t.to(device, non_blocking=True) for t in staged]
        event = torch.cuda.Event()
        event.record(stream)
    pinned.mark(event)
    n = len(b.views)
    out = DeviceBatch(moved[:n], moved[n], moved[n + 1], b.index, b.cut, b.corrupt,
                      dict(zip(needs, moved[n + 2:])), waited, time.perf_counter() - t1, decoding, event)
    return out


class DeviceGaps:
    """On CUDA, the device's idle time between consecutive steps: an event recorded on the training
    stream where each step starts (after the wait for its batch's copy) and where it ends; the gaps
    between one step's end and the next one's start are read once, at the epoch's end. The host's
    time blocked on the source (``time/data_wait``) can pass under queued device work; these gaps
    are what the device itself lost, to data or to the host. Off CUDA: nothing is recorded."""

    def __init__(self, device: torch.device, event=None):
        self.on = device.type == "cuda"
        self.event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self.marks: list[list] = []

    def start(self) -> None:
        if self.on:
            e = self.event()
            e.record()
            self.marks.append([e, None])

    def end(self) -> None:
        if self.on and self.marks:
            e = self.event()
            e.record()
            self.marks[-1][1] = e

    def idle_seconds(self) -> float | None:
        """Seconds the device idled between this epoch's steps (None off CUDA or under two steps); resets."""
        marks, self.marks = [m for m in self.marks if m[1] is not None], []
        if not self.on or len(marks) < 2:
            return None
        marks[-1][1].synchronize()
        return sum(max(0.0, a[1].elapsed_time(b[0])) for a, b in zip(marks, marks[1:])) / 1000
