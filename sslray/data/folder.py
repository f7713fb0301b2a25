"""Real image data in memory: a catalogue (class-folder tree or manifest, see
:mod:`sslray.data.catalogue`) decoded once, resized (shorter side, then centre crop) to the
configured size and cached as one uint8 array; and torchvision's CIFAR-10 format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ..errors import UserError
from ..progress import bar
from .cache import cache_dir, cached, fingerprint
from .catalogue import FileTree, folder_catalogue
from .decode import MAX_PIXELS
from .imageset import ImageSet, check_memory


def _decode(path: str, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from .decode import open_image, read_bytes

    data = read_bytes(path)
    if data is None:
        raise UserError(f"unreadable image: {path}")
    try:
        with open_image(data) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, np.uint8).transpose(2, 0, 1)
    except Image.DecompressionBombError:
        raise UserError(f"image too large (over {MAX_PIXELS:,} pixels, a decompression bomb?): {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt image: {path} ({type(e).__name__})") from None


def decode_catalogue(cat, size: int) -> ImageSet:
    """Every image of a catalogue decoded once (resized, centre-cropped) into memory, cached."""
    key = fingerprint(cat.stamp(), size, len(cat))
    def make():
        check_memory(len(cat), size, f"{cat.name} {cat.split} split")
        images = np.empty((len(cat), 3, size, size), np.uint8)
        for i, f in enumerate(bar(cat.locations, min_items=2000, desc=f"decode {cat.name}/{cat.split}", unit="img")):
            images[i] = _decode(f, size)
        return {"images": images}

    images = cached(cache_dir() / f"folder-{key}.npz", make)["images"]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(cat.labels), cat.classes, cat.name, cat.split)


def load_imagefolder(root: str, split: str, size: int, limit: int | None) -> ImageSet:
    return decode_catalogue(folder_catalogue(root, split, limit), size)


def load_cifar10(root: str, split: str, size: int, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10

    path = Path(root).expanduser()
    if not download:
        FileTree(root)  # a missing root or one that is not a folder: one line
    try:
        ds = CIFAR10(str(path), train=split == "train", download=download)
    except RuntimeError:
        raise UserError(f"CIFAR-10 (torchvision format) not found in {path}; "
                        "add --set data.download=true to download it, or use data.name=imagefolder") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    if size != images.shape[-1]:
        images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                                 antialias=True).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes), "cifar10", split)
