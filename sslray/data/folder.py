"""Real image data: any class-folder tree (``imagefolder``) and torchvision's CIFAR-10 format.

``imagefolder`` accepts ``ROOT/train/<class>/<image>`` with ``ROOT/test`` (or ``val``) beside it,
or a single ``ROOT/<class>/<image>`` tree, whose every fifth image per class (sorted by name)
becomes the test split. Images are decoded once, resized (shorter side, then centre crop) to the
configured size, and cached as one uint8 array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ..errors import UserError
from ..progress import bar
from .cache import save_npz, cache_dir, fingerprint
from .imageset import ImageSet, balanced_first, class_rank

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}


def _check_root(root: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"data root not found: {path}")
    if not path.is_dir():
        raise UserError(f"data root is not a folder: {path}")
    if not any(path.iterdir()):
        raise UserError(f"data root is empty: {path}")
    return path


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in EXTENSIONS


def _scan(tree: Path) -> tuple[list[str], list[Path], np.ndarray]:
    classes = sorted(d.name for d in tree.iterdir() if d.is_dir() and any(_is_image(f) for f in d.iterdir()))
    if not classes:
        if any(_is_image(f) for f in tree.iterdir()):
            raise UserError(f"wrong layout in {tree}: images but no class folders (expected {tree}/<class>/<image>)")
        raise UserError(f"no class folders with images in {tree} (expected {tree}/<class>/<image>)")
    files, labels = [], []
    for i, c in enumerate(classes):
        found = sorted(f for f in (tree / c).iterdir() if _is_image(f))
        files += found
        labels += [i] * len(found)
    return classes, files, np.asarray(labels, np.int64)


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"corrupt image: {path} ({type(e).__name__})") from None


def load_imagefolder(root: str, split: str, size: int, limit: int | None) -> ImageSet:
    base = _check_root(root)
    tree = next((base / d for d in SPLIT_DIRS[split] if (base / d).is_dir()), None)
    holdout = None
    if tree is None:
        other = "test" if split == "train" else "train"
        if any((base / d).is_dir() for d in SPLIT_DIRS[other]):
            raise UserError(f"no {split} split in {base} (expected {base}/{SPLIT_DIRS[split][0]}/<class>/<image>)")
        tree, holdout = base, split
    classes, files, labels = _scan(tree)
    if holdout is not None:  # single tree: every fifth image of each class is the test split
        rank = class_rank(labels)
        keep = (rank % 5 == 4) if holdout == "test" else (rank % 5 != 4)
        files, labels = [f for f, k in zip(files, keep) if k], labels[keep]
    if limit is not None and limit < len(files):
        idx = balanced_first(labels, limit)
        files, labels = [files[i] for i in idx], labels[idx]

    key = fingerprint(tree.resolve(), holdout, size, len(files), files[0], files[-1], tree.stat().st_mtime)
    path = cache_dir() / f"folder-{key}.npz"
    if path.exists():
        images = np.load(path)["images"]
    else:
        images = np.empty((len(files), 3, size, size), np.uint8)
        for i, f in enumerate(bar(files, min_items=2000, desc=f"decode {tree.name}", unit="img")):
            images[i] = _decode(f, size)
        save_npz(path, images=images)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), classes, "imagefolder", split)


def load_cifar10(root: str, split: str, size: int, download: bool) -> ImageSet:
    from torchvision.datasets import CIFAR10

    path = Path(root).expanduser()
    if not download:
        _check_root(root)
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
