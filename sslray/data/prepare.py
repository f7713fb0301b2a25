"""``sslray data prepare ROOT --out DIR``: a collection (class-folder tree or manifest) rewritten as
Parquet shards of encoded images, for the streaming source (``data.name=parquet``).

Each split becomes ``DIR/<split>-NNNNN.parquet`` files of ``shard_rows`` images: the image
re-encoded as JPEG after resizing its shorter side to at most ``short_side`` px, its label and its
stable index (the image's row in the collection's catalogue). Rows are dealt to shards in a seeded
random order, so every shard mixes the classes. ``DIR/classes.json`` names the classes and
``DIR/meta.json`` records what was written. Shards are written by Ray tasks in parallel, each to a
temporary name renamed when complete: a crash never leaves a half-written shard under its name,
and ``meta.json`` is written last. Interrupted (Ctrl-C), it stops its tasks and removes what it
wrote, so no partial collection is left to train on.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..errors import Interrupted, UserError
from ..progress import bar


def encode(data: bytes | None, short_side: int, quality: int) -> bytes | None:
    """The image resized (shorter side at most ``short_side``) and re-encoded as JPEG; None if unreadable."""
    from PIL import Image

    from .decode import open_image

    if data is None:
        return None
    try:
        im = open_image(data)
        w, h = im.size
        scale = short_side / min(w, h)
        if scale < 1:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
            im = im.convert("RGB").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        else:
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality)
        return out.getvalue()
    except Exception:
        return None


def write_shard(path: str, locations: list[str], labels: np.ndarray, index: np.ndarray, short_side: int,
                quality: int) -> tuple[int, list[str]]:
    """One shard (a Ray task): ``(rows written, locations that could not be read)``."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .decode import read_bytes

    images, keep, bad = [], [], []
    for i, loc in enumerate(locations):
        enc = encode(read_bytes(loc), short_side, quality)
        if enc is None:
            bad.append(loc)
        else:
            images.append(enc)
            keep.append(i)
    table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels[keep], pa.int64()),
                      "index": pa.array(index[keep], pa.int64())})
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=64)
    os.replace(tmp, path)
    return len(keep), bad


def collection(manifest: bool) -> str:
    """The data source ``sslray data prepare`` reads: a manifest file, or else a folder tree."""
    from .sources.manifest import Manifest
    from .sources.imagefolder import ImageFolder

    return Manifest.name if manifest else ImageFolder.name


def prepare(cfg, out: str, short_side: int = 256, shard_rows: int = 1000, quality: int = 90, seed: int = 0) -> dict:
    """Write every split of the collection ``cfg`` (a DataConfig) as shards under ``out``."""
    import ray

    from ..cluster import connect
    from .catalogue import catalogues

    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder (nothing was written)")
    cats = dict(zip(("train", "test"), catalogues(cfg)))  # one class list; every bad input fails before writing
    connect(None)
    task = ray.remote(num_cpus=1)(write_shard)
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    jobs, summary = {}, {"short_side": short_side, "quality": quality, "seed": seed, "source": cfg.root, "splits": {}}
    pending: list = []
    try:
        for split, cat in cats.items():
            order = np.random.default_rng([seed, 0 if split == "train" else 1]).permutation(len(cat))
            for s, start in enumerate(range(0, len(cat), shard_rows)):
                rows = order[start : start + shard_rows]
                path = str(target / f"{split}-{s:05d}.parquet")
                jobs[task.remote(path, [cat.locations[i] for i in rows], cat.labels[rows], rows, short_side,
                                 quality)] = split
            summary["splits"][split] = {"images": len(cat), "written": 0, "unreadable": []}
        (target / "classes.json").write_text(json.dumps(cats["train"].classes))
        pending = list(jobs)
        with bar(total=len(pending), desc=f"prepare {Path(cfg.root).name}", unit="shard") as progress:
            while pending:
                # a short wait, so that Ctrl-C (SIGINT) reaches this loop at once, not after the shards
                done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
                if not done:
                    continue
                written, bad = ray.get(done[0])
                split = summary["splits"][jobs[done[0]]]
                split["written"] += written
                split["unreadable"] += bad
                progress.update(1)
        empty = [(name, s) for name, s in summary["splits"].items() if s["images"] and not s["written"]]
        if empty:  # shards of nothing: remove what this call wrote and say why
            _remove_partial(target, created)
            name, s = empty[0]
            raise UserError(f"no image of the {name} split could be read ({len(s['unreadable'])} unreadable, e.g. "
                            f"{s['unreadable'][0]}): nothing was written")
        (target / "meta.json").write_text(json.dumps(summary, indent=1))  # written last: the shards are whole
    except KeyboardInterrupt:
        # stop the shards still being written before their files are removed: not force=True, which
        # kills the worker and races its reply (Ray 2.60 then aborts the driver: "Tried to complete
        # task that was not pending"); without it a running shard is interrupted in Python
        for ref in pending:
            ray.cancel(ref)
        for ref in pending:
            try:
                ray.get(ref, timeout=30)
            except Exception:  # cancelled, as asked
                pass
        _remove_partial(target, created)
        raise Interrupted(f"data prepare interrupted: {len(jobs) - len(pending)} of {len(jobs)} shards were "
                          f"written; removed them{' and ' + out if created else ' from ' + out} so that no "
                          f"partial collection is left to train on") from None
    return summary


def _remove_partial(target: Path, created: bool) -> None:
    """What an interrupted prepare wrote: the shards (whole or temporary), classes.json; the folder
    too if this run made it (``--out`` was new or empty, so nothing else is in it)."""
    import shutil

    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for p in target.iterdir():
        if p.name == "classes.json" or p.name.endswith((".parquet", ".parquet.tmp")):
            p.unlink(missing_ok=True)
