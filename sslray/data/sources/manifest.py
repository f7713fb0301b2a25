"""``manifest``: a CSV or Parquet file of ``path,label[,split]`` rows naming images anywhere."""

from __future__ import annotations

from ...errors import UserError
from . import register
from ._files import FileCollection


@register
class Manifest(FileCollection):
    name = "manifest"
    summary = "a CSV/Parquet file of path,label[,split] rows (data.root names the file)"

    def catalogue(self, cfg, split, classes=None):
        from ..catalogue import manifest_catalogue

        if not cfg.labels:
            raise UserError("data.labels=false reads an image folder (data.name=imagefolder); a manifest's labels "
                            "column is its own: leave it out of eval.data instead")
        return manifest_catalogue(cfg.root, split, cfg.limit if split == "train" else cfg.test_limit)
