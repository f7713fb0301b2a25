"""The streaming source over Parquet shards of encoded images (``sslray data prepare``'s output,
``data.name=parquet``): large sequential reads instead of one small file per image, for network
storage.

A shard is read whole by one rank: for an epoch, the shards are dealt out in a seeded order
``(seed, epoch)`` (rank ``r`` takes every ``world``-th), each rank streams its shards' rows through a
seeded shuffle buffer and cuts the views in Ray Data tasks. Every rank stops after the same number
of batches: the largest that every possible deal of the shards fills, so DDP never waits. An image
is seen at most once per epoch; the few a deal leaves beyond that count (at most one shard's worth
per rank) are the next epoch's, as the deal changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .imageset import ImageSet
from .source import Batch, Source
from .views import CENTRE

#: the columns of a shard (written by :mod:`sslray.data.prepare`)
COLUMNS = ("image", "label", "index")


def cut_encoded(batch: dict, views, seed: int, epoch: int) -> dict:
    """The Ray Data map: rows ``(image bytes, label, index)`` -> views, labels, indices, ``bad``."""
    from .decode import cut_batch

    index = batch["index"]
    cut, ok = cut_batch(list(batch["image"]), index, views, seed, epoch)
    out = {"index": index, "label": batch["label"],
           "bad": np.array(["" if good else f"index {i}" for i, good in zip(index, ok)], dtype=object)}
    out.update({f"view{i}": v for i, v in enumerate(cut)})
    return out


class ShardSource(Source):
    kind = "stream"

    @property
    def pipeline_cpus(self) -> float:
        return self.cpus

    def __init__(self, root: str, split: str, image_size: int, cpus: float = 1.0, limit: int | None = None,
                 prefetch: int = 4):
        import pyarrow.parquet as pq

        base = Path(root).expanduser()
        self.shards = sorted(str(p) for p in base.glob(f"{split}-*.parquet"))
        if not self.shards:
            raise UserError(f"no {split}-*.parquet shards in {root} (written by `sslray data prepare`)")
        try:
            self.classes = json.loads((base / "classes.json").read_text())
            files = [pq.ParquetFile(p) for p in self.shards]
            self.rows = [f.metadata.num_rows for f in files]
        except (OSError, ValueError) as e:
            raise UserError(f"unreadable shards in {root}: {str(e).splitlines()[0]}") from None
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise UserError(f"{base / 'classes.json'} is not a list of class names")
        for path, f in zip(self.shards, files):
            missing = [c for c in COLUMNS if c not in f.schema_arrow.names]
            if missing:
                raise UserError(f"shard {path} has no {', '.join(map(repr, missing))} column(s) (a shard of `sslray "
                                f"data prepare` has {', '.join(COLUMNS)}; columns: {', '.join(f.schema_arrow.names)})")
        if limit is not None:  # whole shards, in file order, up to the limit (shards mix the classes)
            keep = int(np.searchsorted(np.cumsum(self.rows), limit, side="left")) + 1
            self.shards, self.rows = self.shards[:keep], self.rows[:keep]
        self.split, self.image_size, self.cpus, self.prefetch = split, image_size, cpus, prefetch
        self.root = str(base)
        self.corrupt_seen: list[str] = []

    def __len__(self) -> int:
        return int(sum(self.rows))

    def describe(self) -> dict:
        return {"resolved.data.source": "stream", "resolved.data.catalogue": f"parquet ({len(self.shards)} shards)",
                "resolved.data.cpus_per_worker": self.cpus}

    def steps(self, global_batch: int, world: int = 1) -> int:
        """Batches every rank can fill whatever the deal: its ``len // world`` smallest shards."""
        per = len(self.shards) // world
        if per == 0:
            raise UserError(f"{len(self.shards)} {self.split} shards cannot feed {world} workers: "
                            f"prepare with smaller shards (sslray data prepare --shard-rows)")
        fill = sum(sorted(self.rows)[:per])
        return max(1, fill // (global_batch // world))

    def _read(self, shards: list[str], views, seed: int, epoch: int, batch_size: int, shuffle: int | None):
        import ray.data

        from .stream import data_context, ensure_ray

        ensure_ray()
        data_context(self.cpus)
        ds = ray.data.read_parquet(shards, columns=list(COLUMNS)).map_batches(
            cut_encoded, fn_kwargs={"views": list(views), "seed": seed, "epoch": epoch}, batch_size=64,
            batch_format="numpy", num_cpus=min(1.0, self.cpus))
        kw = {"local_shuffle_buffer_size": shuffle, "local_shuffle_seed": seed * 100_003 + epoch} if shuffle else {}
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=self.prefetch, **kw):
            bad = [f"{self.root} {p}" for p in b["bad"] if p]
            self.corrupt_seen.extend(bad)
            # copies: the arrays may be views into Ray's object store, freed once the next batch comes
            yield Batch([torch.from_numpy(np.array(b[f"view{i}"], order="C", copy=True)) for i in range(len(views))],
                        torch.from_numpy(b["label"].astype(np.int64)), torch.from_numpy(b["index"].astype(np.int64)),
                        corrupt=bad)

    def epoch(self, epoch, global_batch, seed, rank=0, world=1, views=()):
        deal = np.random.default_rng([seed, epoch]).permutation(len(self.shards))[rank::world]
        local, steps = global_batch // world, self.steps(global_batch, world)
        views = views or [CENTRE.at(self.image_size)]
        batches = self._read([self.shards[i] for i in deal], views, seed, epoch, local, shuffle=4 * local)
        for _, batch in zip(range(steps), batches):
            yield batch

    def scan(self, batch_size, views=()):
        return self._read(self.shards, views or [CENTRE.at(self.image_size)], 0, 0, batch_size, shuffle=None)

    def scan_first(self, n):
        got = 0
        for b in self.scan(256):
            yield b
            got += len(b.index)
            if got >= n:
                return

    def subset(self, n):
        """The first ``n`` images of the shards in file order (the shards mix the classes)."""
        images, labels = [], []
        got = 0
        for b in self.scan(256):
            take = len(b.index) if n is None else min(len(b.index), n - got)
            images.append(b.views[0][:take])
            labels.append(b.labels[:take])
            got += take
            if n is not None and got >= n:
                break
        return ImageSet(torch.cat(images), torch.cat(labels), self.classes, "parquet", self.split)
