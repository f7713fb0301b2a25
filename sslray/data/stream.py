"""The streaming source: any image collection, decoded and cut into views by Ray Data's CPU tasks
while the training process trains, never held whole by any process.

A split is a *catalogue* (:mod:`sslray.data.catalogue`): one row per image (its location, label
and stable index), listed once from a class-folder tree or a manifest. For an epoch, each
rank takes its slice of every global batch of the seeded order (:func:`~sslray.data.source.rank_slices`)
and runs its own Ray Data pipeline over those rows, in order: the rows' bytes are read and cut
into the method's views (:mod:`sslray.data.decode`) in Ray tasks, and arrive as uint8 tensors.
So every rank gets exactly its share, the same number of batches as every other rank, and the
same images whatever the worker count; the order and the crops depend only on ``(seed, epoch)``.

CPUs: a rank's pipeline runs its tasks with ``data.cpus_per_worker`` CPUs in all (a Ray Data
resource limit); training workers must leave those CPUs free (see README "Data at scale").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .catalogue import Catalogue
from .imageset import ImageSet, balanced_first
from .source import Batch, Source, epoch_order, rank_slices
from .views import CENTRE, View

#: rows per Ray Data block: the unit a decode task works on
BLOCK_ROWS = 256


def cut_rows(batch: dict, views: list[View], seed: int, epoch: int) -> dict:
    """The Ray Data map of a pipeline: rows ``(location, label, index)`` -> views, labels, indices,
    and ``bad``: the location of each unreadable image (replaced in the batch), else ``""``."""
    from .decode import cut_batch, read_bytes

    index = batch["index"]
    data = [read_bytes(str(p)) for p in batch["location"]]
    cut, ok = cut_batch(data, index, views, seed, epoch)
    out = {"index": index, "label": batch["label"],
           "bad": np.array(["" if good else str(p) for p, good in zip(batch["location"], ok)], dtype=object)}
    out.update({f"view{i}": v for i, v in enumerate(cut)})
    return out


def box_rows(batch: dict, views: list[View], seed: int, epoch: int) -> dict:
    """The Ray Data map of a pipeline whose images the training process decodes (``data.decode=gpu``):
    rows -> the files' bytes and their views' crop boxes, drawn as :func:`cut_rows` draws them."""
    from .decode import box_batch, read_bytes

    index = batch["index"]
    data = [read_bytes(str(p)) for p in batch["location"]]
    boxes, ok = box_batch(data, index, views, seed, epoch)
    good = np.flatnonzero(ok)
    encoded = np.empty(len(data), dtype=object)
    for i, b in enumerate(data):
        encoded[i] = b if ok[i] else (data[good[0]] if len(good) else b"")
    return {"index": index, "label": batch["label"], "encoded": encoded, "boxes": boxes,
            "bad": np.array(["" if g else str(p) for p, g in zip(batch["location"], ok)], dtype=object)}


def ensure_ray() -> None:
    """Ray Data needs Ray: join the process's cluster, or start a local one (an in-process run)."""
    import ray

    if not ray.is_initialized():
        from ..cluster import connect

        connect(None)


def data_context(cpus: float) -> None:
    """This process's Ray Data settings: rows in order, at most ``cpus`` CPUs for its tasks, quiet."""
    import logging

    import ray.data
    from ray.data import ExecutionResources

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.execution_options.resource_limits = ExecutionResources(cpu=cpus)
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class StreamSource(Source):
    kind = "stream"

    @property
    def pipeline_cpus(self) -> float:
        return self.cpus

    def __init__(self, catalogue: Catalogue, split: str, image_size: int, cpus: float = 1.0, prefetch: int = 4,
                 decode: str = "cpu"):
        self.catalogue, self.split, self.image_size = catalogue, split, image_size
        self.classes = catalogue.classes
        self.cpus, self.prefetch = cpus, prefetch
        #: where a training epoch's images are decoded: "cpu" (the pipeline's tasks cut the views) or
        #: "gpu" (the tasks read bytes and draw boxes; the training process decodes on its device).
        #: Scans (evaluation, setup) always decode on the CPU.
        self.decode = decode
        self.corrupt_seen: list[str] = []

    def __len__(self) -> int:
        return len(self.catalogue)

    def describe(self) -> dict:
        return {"resolved.data.source": self.kind, "resolved.data.cpus_per_worker": self.cpus,
                "resolved.data.decode": self.decode,
                "resolved.data.catalogue": self.catalogue.name,
                "resolved.data.outside_root": self.catalogue.outside_root}

    def _pipeline(self, rows: np.ndarray, views: Sequence[View], seed: int, epoch: int, batch_size: int,
                  on_device: bool = False):
        """Batches of ``rows`` (catalogue row ids, in this order) cut into ``views`` (``on_device``: left
        encoded, with their crop boxes, for the training process to decode)."""
        import pyarrow as pa
        import ray.data

        ensure_ray()
        data_context(self.cpus)
        cat = self.catalogue
        table = pa.table({"location": pa.array([cat.locations[i] for i in rows], pa.string()),
                          "label": pa.array(cat.labels[rows], pa.int64()),
                          "index": pa.array(np.asarray(rows, np.int64), pa.int64())})
        blocks = [table.slice(s, BLOCK_ROWS) for s in range(0, len(table), BLOCK_ROWS)] or [table]
        ds = ray.data.from_arrow(blocks).map_batches(
            box_rows if on_device else cut_rows, fn_kwargs={"views": list(views), "seed": seed, "epoch": epoch},
            batch_size=BLOCK_ROWS, batch_format="numpy", num_cpus=min(1.0, self.cpus))
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=self.prefetch,
                                 drop_last=False):
            bad = [p for p in b["bad"] if p]
            # copies: the arrays may be views into Ray's object store, freed once the next batch comes
            self.corrupt_seen.extend(bad)
            if on_device:
                yield Batch([], torch.from_numpy(b["label"].astype(np.int64)), torch.from_numpy(b["index"].astype(np.int64)),
                            cut=True, corrupt=bad, encoded=list(b["encoded"]),
                            boxes=torch.from_numpy(np.array(b["boxes"], np.int32)))
                continue
            yield Batch([torch.from_numpy(np.array(b[f"view{i}"], order="C", copy=True)) for i in range(len(views))],
                        torch.from_numpy(b["label"].astype(np.int64)), torch.from_numpy(b["index"].astype(np.int64)),
                        cut=True, corrupt=bad)

    def epoch(self, epoch, global_batch, seed, rank=0, world=1, views=()) -> Iterator[Batch]:
        mine = [s.numpy() for s in rank_slices(epoch_order(len(self), seed, epoch), global_batch, rank, world)]
        if not mine:
            return iter(())
        local = len(mine[0])
        return self._pipeline(np.concatenate(mine), views or [CENTRE.at(self.image_size)], seed, epoch, local,
                              on_device=self.decode == "gpu")

    def scan(self, batch_size, views=()):
        return self._pipeline(np.arange(len(self)), views or [CENTRE.at(self.image_size)], 0, 0, batch_size)

    def rows(self, rows: np.ndarray, batch_size: int = 256) -> ImageSet:
        """The centre views of catalogue rows ``rows`` in memory, as an ImageSet."""
        images = torch.empty((len(rows), 3, self.image_size, self.image_size), dtype=torch.uint8)
        pos = {int(r): i for i, r in enumerate(rows)}
        for b in self._pipeline(np.asarray(rows), [CENTRE.at(self.image_size)], 0, 0, batch_size):
            at = torch.tensor([pos[int(i)] for i in b.index])
            images[at] = b.views[0]
        labels = torch.from_numpy(self.catalogue.labels[rows].astype(np.int64))
        return ImageSet(images, labels, self.classes, self.catalogue.name, self.split)

    def subset(self, n):
        n = len(self) if n is None else min(n, len(self))
        return self.rows(balanced_first(self.catalogue.labels, n))

    def scan_first(self, n):
        rows = balanced_first(self.catalogue.labels, min(n, len(self)))
        return self._pipeline(rows, [CENTRE.at(self.image_size)], 0, 0, 256)
