"""``imagefolder``: a tree of class folders (``root/{train,test}/<class>/*.jpg``, local, NFS or
object storage), or with ``data.labels=false`` images anywhere under the root."""

from __future__ import annotations

from . import register
from ._files import FileCollection


@register
class ImageFolder(FileCollection):
    name = "imagefolder"
    summary = ("class folders under data.root (local, NFS or s3://...); data.labels=false: images anywhere under "
               "it, every fifth held out as the test split")

    def catalogue(self, cfg, split, classes=None):
        from ..catalogue import folder_catalogue

        limit = cfg.limit if split == "train" else cfg.test_limit
        if split != "train" and cfg.labels and classes is None:
            classes = folder_catalogue(cfg.root, "train", None, True).classes
        return folder_catalogue(cfg.root, split, limit, cfg.labels, classes)
