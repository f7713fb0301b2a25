"""Catalogues: one split of an image collection as rows ``(location, label)``, listed once; row ``i``
is the image of stable index ``i``. From a class-folder tree (``imagefolder``) or a manifest
(``manifest``: a CSV or Parquet file with columns ``path``, ``label`` and optionally ``split``).
Either can live on a local disk, a shared file system or object storage (``s3://...``).

``imagefolder`` accepts ``ROOT/train/<class>/<image>`` with ``ROOT/test`` (or ``val``) beside it,
or a single ``ROOT/<class>/<image>`` tree, whose every fifth image per class (sorted by name)
becomes the test split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .imageset import balanced_first, class_rank
from .remote import open_root

SPLIT_NAMES = {"train": ("train",), "test": ("test", "val", "valid", "validation")}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


@dataclass
class Catalogue:
    locations: list[str]  # local paths or URIs
    labels: np.ndarray  # int64
    classes: list[str]
    name: str  # the data set's name (imagefolder, manifest)
    split: str
    key: str  # names the selection (root, split, limit): part of cache keys
    outside_root: int = 0  # images reached through a symbolic link that leads out of the root (followed)

    def __len__(self) -> int:
        return len(self.labels)

    def stamp(self) -> str:
        """A digest of every local file's size and modification time: it changes when any image is
        replaced, added or removed (a cache of the decoded split must then be rebuilt)."""
        import hashlib

        h = hashlib.sha1(self.key.encode())
        for loc in self.locations:
            if "://" not in loc:
                try:
                    st = os.stat(loc)
                    h.update(f"{loc}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                except OSError:
                    h.update(f"{loc}|missing\n".encode())
        return h.hexdigest()[:16]


def limited(locations: list[str], labels: np.ndarray, limit: int | None) -> tuple[list[str], np.ndarray]:
    if limit is not None and limit < len(locations):
        idx = balanced_first(labels, limit)
        return [locations[i] for i in idx], labels[idx]
    return locations, labels


def holdout(labels: np.ndarray, split: str) -> np.ndarray:
    """A single tree's or manifest's split: every fifth image of each class is the test split."""
    rank = class_rank(labels)
    return (rank % 5 == 4) if split == "test" else (rank % 5 != 4)


class FileTree:
    """A folder on a local disk, a shared file system or object storage (``s3://``, ``gs://``: any
    URI pyarrow reads), listed through pyarrow's file systems."""

    def __init__(self, root: str):
        import pyarrow.fs as pafs

        self.uri = "://" in root
        try:
            if self.uri:  # within a deadline ($SSLRAY_REMOTE_TIMEOUT), not the library's minutes of retries
                self.fs, self.base, info = open_root(root)
            else:
                self.fs, self.base = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
                info = self.fs.get_file_info(self.base)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot reach data root {root}: {str(e).splitlines()[0]}") from None
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"data root not found: {root}")
        if info.type != pafs.FileType.Directory:
            raise UserError(f"data root is not a folder: {root}")
        self.root = root

    def entries(self, rel: str = "") -> tuple[list[str], list[str]]:
        """``(sub-folders, image files)`` of ``rel``, sorted by name."""
        import pyarrow.fs as pafs

        where = f"{self.base}/{rel}" if rel else self.base
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(where, allow_not_found=True))
        except OSError as e:
            raise UserError(f"cannot list {self.location(rel)}: {str(e).splitlines()[0]}") from None
        dirs = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)
        files = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and _is_image(i.base_name))
        return dirs, files

    def location(self, rel: str) -> str:
        """What :func:`~sslray.data.stream.read_bytes` reads: a local path or the full URI."""
        if self.uri:
            return f"{self.root.rstrip('/')}/{rel}" if rel else self.root
        return f"{self.base}/{rel}" if rel else self.base


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in EXTENSIONS


def _scan(tree: FileTree, sub: str, classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """The class folders of ``sub`` that hold images, their images and labels. With ``classes`` (the
    training split's), labels are indices into that list, and a folder with images that the
    training split lacks is refused: numbering each split's classes on its own would give a test
    image of class ``c`` the index of another class wherever the splits' folders differ."""
    dirs, files = tree.entries(sub)
    prefix = f"{sub}/" if sub else ""
    found = {d: tree.entries(prefix + d)[1] for d in dirs}
    present = [d for d in dirs if found[d]]
    where = tree.location(sub)
    if not present:
        if files:
            raise UserError(f"wrong layout in {where}: images but no class folders (expected {where}/<class>/<image>)")
        raise UserError(f"no class folders with images in {where} (expected {where}/<class>/<image>)")
    if classes is None:
        classes = present
    check_classes(present, classes, where)
    lookup = {c: i for i, c in enumerate(classes)}
    locations, labels = [], []
    for c in present:
        locations += [tree.location(f"{prefix}{c}/{f}") for f in found[c]]
        labels += [lookup[c]] * len(found[c])
    return classes, locations, np.asarray(labels, np.int64)


def check_classes(present, classes: list[str], where: str) -> None:
    """One class list for the whole collection: the training split's. A class of another split that
    training lacks has no index a probe could have learnt (one line)."""
    extra = [c for c in present if c not in set(classes)]
    if extra:
        shown = ", ".join(map(repr, extra[:5])) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise UserError(f"{where} has class(es) {shown} that the training split lacks (no training images): "
                        f"the class list is the training split's ({len(classes)} classes); remove them or add "
                        f"training images of them")


def scan_imagefolder(root: str, split: str, limit: int | None,
                     classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray, str]:
    """The classes, image locations and labels of one split of a class-folder tree (sorted: an
    image's position is its stable index), limited class-balanced, and a key naming that selection.
    ``classes``: the training split's class list, which the labels of another split index."""
    tree = FileTree(root)
    top, loose = tree.entries()
    if not top and not loose:
        raise UserError(f"data root is empty: {root}")
    sub = next((d for d in SPLIT_NAMES[split] if d in top), None)
    single = None
    if sub is None:
        other = "test" if split == "train" else "train"
        if any(d in top for d in SPLIT_NAMES[other]):
            where = tree.location(SPLIT_NAMES[split][0])
            raise UserError(f"no {split} split in {root} (expected {where}/<class>/<image>)")
        sub, single = "", split
    classes, files, labels = _scan(tree, sub, classes if single is None else None)
    if single is not None:  # single tree: every fifth image of each class is the test split
        keep = holdout(labels, split)
        files, labels = [f for f, k in zip(files, keep) if k], labels[keep]
    files, labels = limited(files, labels, limit)
    return classes, files, labels, f"{tree.location(sub)}|{single}"


def scan_unlabelled(root: str, split: str, limit: int | None) -> tuple[list[str], np.ndarray]:
    """Every image under ``root`` at any depth (sorted by path), one class; every fifth image is
    the test split."""
    tree = FileTree(root)
    files, todo = [], [""]
    while todo:
        rel = todo.pop()
        dirs, names = tree.entries(rel)
        prefix = f"{rel}/" if rel else ""
        files += [prefix + f for f in names]
        todo += [prefix + d for d in dirs]
    if not files:
        raise UserError(f"no images under {root} (data.labels=false reads every image below the root)")
    files.sort()
    keep = (np.arange(len(files)) % 5 == 4) if split == "test" else (np.arange(len(files)) % 5 != 4)
    files = [tree.location(f) for f, k in zip(files, keep) if k]
    return files[:limit] if limit else files, np.zeros(min(len(files), limit or len(files)), np.int64)


def folder_catalogue(root: str, split: str, limit: int | None, labelled: bool = True,
                     classes: list[str] | None = None) -> Catalogue:
    if not labelled:
        files, labels = scan_unlabelled(root, split, limit)
        return Catalogue(files, labels, ["unlabelled"], "imagefolder", split, f"{root}|unlabelled|{split}|{limit}",
                         outside_root(root, files))
    classes, files, labels, key = scan_imagefolder(root, split, limit, classes)
    return Catalogue(files, labels, classes, "imagefolder", split, f"{key}|{limit}", outside_root(root, files))


def outside_root(root: str, files: list[str]) -> int:
    """How many of a local tree's images are reached through a symbolic link (the file's or a
    folder's) that leads out of the root. Such links are followed, as every loader does; the count
    is logged with the run (``resolved.data.outside_root``) so that it is never a surprise."""
    if "://" in root:
        return 0
    base = os.path.realpath(os.path.expanduser(root)) + os.sep
    folder_out: dict[str, bool] = {}  # one look per folder: does its real place lie outside the root?
    count = 0
    for f in files:
        folder = os.path.dirname(f)
        if folder not in folder_out:
            folder_out[folder] = not (os.path.realpath(folder) + os.sep).startswith(base)
        count += folder_out[folder] or (os.path.islink(f) and not os.path.realpath(f).startswith(base))
    return count


def _read_manifest(path: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if path.lower().endswith(".parquet"):
            return pq.read_table(path)
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={"path": "string", "label": "string", "split": "string"}))
    except FileNotFoundError:
        raise UserError(f"manifest not found: {path}") from None
    except Exception as e:
        raise UserError(f"unreadable manifest {path}: {str(e).splitlines()[0]}") from None


def manifest_catalogue(path: str, split: str, limit: int | None) -> Catalogue:
    """A manifest's split: rows whose ``split`` is this split (``val`` counts as test), or, without a
    ``split`` column, the every-fifth hold-out. Relative paths are relative to the manifest's folder;
    a label is a class name (classes sorted) or an integer. A missing local file is an error here."""
    table = _read_manifest(path)
    for col in ("path", "label"):
        if col not in table.column_names:
            raise UserError(f"manifest {path} has no {col!r} column (columns: {', '.join(table.column_names)})")
    paths = table.column("path").to_pylist()
    raw = table.column("label").to_pylist()
    if not paths:
        raise UserError(f"manifest {path} lists no images")
    for what, column in (("path", paths), ("label", raw)):
        blank = next((i for i, v in enumerate(column) if v is None or not str(v).strip()), None)
        if blank is not None:  # a class named '' or 'None' would be trained and probed as if real
            raise UserError(f"manifest {path} row {blank + 1} has no {what} (an empty or null cell); "
                            f"every row needs a {what}")
    paths, raw = [str(p) for p in paths], [str(v).strip() for v in raw]
    if "split" in table.column_names:
        names = [str(v).strip().lower() for v in table.column("split").to_pylist()]
        in_split = {s: np.array([n in SPLIT_NAMES[s] for n in names]) for s in SPLIT_NAMES}
        if not in_split[split].any():
            raise UserError(f"manifest {path} has no {split} rows (split column values: {', '.join(sorted(set(names)))})")
    else:
        in_split = None
    # one class list for the whole manifest: the training rows' classes (sorted, integers by value)
    train_raw = raw if in_split is None else [v for v, k in zip(raw, in_split["train"]) if k]
    classes = sorted(set(train_raw), key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))
    if in_split is not None:
        check_classes(dict.fromkeys(v for v, k in zip(raw, in_split[split]) if k), classes,
                      f"manifest {path} ({split} rows)")
    lookup = {c: i for i, c in enumerate(classes)}
    if in_split is None:
        labels = np.array([lookup[v] for v in raw], np.int64)
        keep = holdout(labels, split)
    else:
        keep = in_split[split]
        labels = np.array([lookup.get(v, -1) for v in raw], np.int64)
    base = path.rsplit("/", 1)[0] if "://" in path else str(Path(path).expanduser().resolve().parent)
    located = [p if ("://" in p or os.path.isabs(p)) else f"{base}/{p}" for p in paths]
    locations, labels = limited([p for p, k in zip(located, keep) if k], labels[keep], limit)
    local = [p for p in locations if "://" not in p]
    missing = [p for p in local if not os.path.isfile(p)]
    if missing:
        raise UserError(f"manifest {path} names {len(missing)} missing file(s), e.g. {missing[0]}")
    return Catalogue(locations, labels, classes, "manifest", split, f"{path}|{split}|{limit}")


def catalogue(cfg, split: str, classes: list[str] | None = None) -> Catalogue:
    """One split of the file collection a DataConfig names (imagefolder, manifest: its registered
    source lists it), limited as asked. ``classes`` passes a training catalogue's list already listed."""
    from .sources import get_collection

    if not cfg.root:
        raise UserError(f"data {cfg.name!r} needs a root: --set data.root=PATH")
    return get_collection(cfg.name).catalogue(cfg, split, classes)


def catalogues(cfg) -> tuple[Catalogue, Catalogue]:
    """The ``(train, test)`` catalogues of a file collection, listed once each, on one class list."""
    from .sources import get_collection

    return get_collection(cfg.name).catalogues(cfg)
