"""``parquet``: the Parquet shards ``sslray data prepare`` wrote (:mod:`sslray.data.shards`), streamed."""

from __future__ import annotations

from ...errors import UserError
from . import register
from .base import Collection


@register
class Parquet(Collection):
    name = "parquet"
    summary = "the Parquet shards `sslray data prepare` wrote under data.root, streamed"
    settings = ("root", "cpus_per_worker", "max_corrupt")
    ways = ("stream",)

    def open(self, cfg):
        if not cfg.labels:
            raise UserError("data.labels=false reads an image folder (data.name=imagefolder), cifar10 or synthetic")
        if cfg.source == "memory":
            raise UserError("data.name=parquet streams its shards: leave data.source at auto or stream")
        if not cfg.root:
            raise UserError("data 'parquet' needs a root: --set data.root=FOLDER_OF_SHARDS")
        from ..shards import ShardSource

        return tuple(ShardSource(cfg.root, split, cfg.image_size, cfg.cpus_per_worker, limit)
                     for split, limit in (("train", cfg.limit), ("test", cfg.test_limit)))
