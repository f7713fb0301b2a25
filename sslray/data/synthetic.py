"""The embedded default data set: ten shape classes with recorded nuisance factors.

Every image is rendered from signed distance functions, so any size works (32 px by default)
and 10,000 images take a few seconds. Per image we record the factors a layer could be
invariant or covariant to:

==============  ===============================================================
factor          meaning
==============  ===============================================================
``hue``         foreground hue in [0, 1)
``bg_hue``      background hue in [0, 1)
``x``, ``y``    shape centre, in [-0.35, 0.35] of the half-width (y points down)
``scale``       shape half-size as a fraction of the half-width, [0.35, 0.6]
``angle``       in-plane rotation in degrees, [-30, 30] (shapes keep an "up")
``texture``     background: 0 flat, 1 stripes, 2 checker, 3 smooth noise
``light``       strength of the top-down lighting gradient, [0, 0.6]
``light_angle`` direction of that gradient from vertical, degrees, [-30, 30]
``brightness``  global gain, [0.6, 1.0]
==============  ===============================================================

Shapes are chosen so that most have a canonical "up" (triangle, tee, ell, dome, arrow), which
keeps rotation prediction well posed, while circle, square, plus, ring and diamond are
(partly) rotation-symmetric — as in real photos, some classes carry no orientation cue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle", "plus", "tee", "ell", "ring", "dome", "arrow", "diamond")
FACTORS = ("hue", "bg_hue", "x", "y", "scale", "angle", "texture", "light", "light_angle", "brightness")
_SPLIT_STREAM = {"train": 0, "test": 1}


def _box(qx, qy, cx, cy, hx, hy):
    return np.maximum(np.abs(qx - cx) - hx, np.abs(qy - cy) - hy)


def _triangle(qx, qy, top, base, half):
    """Upward triangle (y down): apex at ``top``, base at ``base`` with half-width ``half``."""
    h = base - top
    n = np.hypot(h, half)
    # two slanted edges and the base; the max of signed distances is negative inside
    left = (-h * qx - half * (qy - top)) / n
    right = (h * qx - half * (qy - top)) / n
    return np.maximum(np.maximum(left, right), qy - base)


def _sdf(label: int, qx, qy):
    r = np.hypot(qx, qy)
    if label == 0:  # circle
        return r - 0.8
    if label == 1:  # square
        return _box(qx, qy, 0, 0, 0.7, 0.7)
    if label == 2:  # triangle
        return _triangle(qx, qy, -0.95, 0.7, 0.6)
    if label == 3:  # plus
        return np.minimum(_box(qx, qy, 0, 0, 0.85, 0.25), _box(qx, qy, 0, 0, 0.25, 0.85))
    if label == 4:  # tee
        return np.minimum(_box(qx, qy, 0, -0.6, 0.85, 0.25), _box(qx, qy, 0, 0.15, 0.25, 0.75))
    if label == 5:  # ell
        return np.minimum(_box(qx, qy, -0.5, 0, 0.25, 0.85), _box(qx, qy, 0, 0.6, 0.75, 0.25))
    if label == 6:  # ring
        return np.abs(r - 0.62) - 0.22
    if label == 7:  # dome: a half-disc resting on its flat side
        return np.maximum(np.hypot(qx, qy - 0.35) - 0.9, qy - 0.35)
    if label == 8:  # arrow pointing up
        return np.minimum(_triangle(qx, qy, -0.9, -0.1, 0.7), _box(qx, qy, 0, 0.4, 0.22, 0.5))
    return np.abs(qx) + np.abs(qy) - 0.9  # diamond


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all inputs shaped (N,), output (N, 3)."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def _factors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    f = {
        "label": labels,
        "hue": rng.random(n),
        "bg_hue": rng.random(n),
        "x": rng.uniform(-0.35, 0.35, n),
        "y": rng.uniform(-0.35, 0.35, n),
        "scale": rng.uniform(0.35, 0.6, n),
        "angle": rng.uniform(-30, 30, n),
        "texture": rng.integers(0, 4, n),
        "light": rng.uniform(0, 0.6, n),
        "light_angle": rng.uniform(-30, 30, n),
        "brightness": rng.uniform(0.6, 1.0, n),
        "tex_freq": rng.uniform(3, 8, n),
        "tex_dir": rng.uniform(0, np.pi, n),
    }
    return f


def _render(f: dict[str, np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    n = len(f["label"])
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    py, px = np.meshgrid(c, c, indexing="ij")
    px, py = px[None], py[None]  # (1, S, S)

    # shape mask, anti-aliased over one pixel
    a = np.deg2rad(f["angle"])[:, None, None]
    dx, dy = px - f["x"][:, None, None], py - f["y"][:, None, None]
    s = f["scale"][:, None, None]
    qx = (np.cos(a) * dx + np.sin(a) * dy) / s
    qy = (-np.sin(a) * dx + np.cos(a) * dy) / s
    sdf = np.empty((n, size, size))
    for label in range(len(CLASSES)):
        idx = f["label"] == label
        sdf[idx] = _sdf(label, qx[idx], qy[idx])
    pixel = (2.0 / size) / s
    alpha = np.clip(0.5 - sdf / pixel, 0, 1)[:, None]

    # background: a muted colour modulated by a texture
    tex = np.zeros((n, size, size))
    d = f["tex_dir"][:, None, None]
    phase = f["tex_freq"][:, None, None] * np.pi * (np.cos(d) * px + np.sin(d) * py)
    t = f["texture"]
    tex[t == 1] = np.sin(phase[t == 1])
    fx = f["tex_freq"][:, None, None] * np.pi
    tex[t == 2] = np.sign(np.sin(fx * px) * np.sin(fx * py))[t == 2]
    k = int((t == 3).sum())
    if k:
        coarse = rng.standard_normal((k, 5, 5))
        idx = np.clip(np.round((c + 1) / 2 * 4).astype(int), 0, 4)
        tex[t == 3] = coarse[:, idx][:, :, idx] * 0.7
    bg = _hsv_to_rgb(f["bg_hue"], np.full(n, 0.45), np.full(n, 0.45))[:, :, None, None]
    bg = bg * (1 + 0.35 * tex[:, None])
    fg = _hsv_to_rgb(f["hue"], np.full(n, 0.85), np.full(n, 0.95))[:, :, None, None]
    img = alpha * fg + (1 - alpha) * bg

    # light from above (tilted by light_angle): the top of the image is brighter
    la = np.deg2rad(f["light_angle"])[:, None, None]
    along = (-np.sin(la) * px + np.cos(la) * py + 1) / 2  # 0 at the lit side, 1 opposite
    gain = f["brightness"][:, None, None] * (1 - f["light"][:, None, None] * along)
    img = img * gain[:, None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(n: int, seed: int = 0, split: str = "train", size: int = 32, chunk: int = 2000):
    """Render ``n`` images deterministically from ``(seed, split)``.

    Returns ``(images uint8 (N, 3, S, S), labels int64 (N,), factors {name: float32 (N,)})``.
    """
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], 0x5551])
    f = _factors(rng, n)
    images = np.empty((n, 3, size, size), np.uint8)
    for start in range(0, n, chunk):
        part = {k: v[start : start + chunk] for k, v in f.items()}
        images[start : start + chunk] = _render(part, rng, size)
    factors = {k: f[k].astype(np.float32) for k in FACTORS}
    return images, f["label"].astype(np.int64), factors


def write_folder(root, n_train: int, n_test: int, sizes: tuple[int, int] = (48, 96), seed: int = 0,
                 quality: int = 90) -> None:
    """A class-folder tree of JPEG files of the synthetic shapes at mixed sizes (``root/train/<class>/``,
    ``root/test/<class>/``): each image rendered at its own width and height, drawn in ``sizes``.
    For tests and benchmarks of the streaming source; generated, never committed."""
    from pathlib import Path

    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        # rendered at up to 128 px, then resized to each image's own size: the files' sizes (what a
        # decoder pays for) are right; rendering 500-px shapes would take minutes
        images, labels, _ = generate(n, seed, split, min(max(sizes), 128))
        for c in CLASSES:
            (Path(root) / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(images, labels)):
            w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
            im = Image.fromarray(img.transpose(1, 2, 0)).resize((w, h), Image.BILINEAR)
            im.save(Path(root) / split / CLASSES[label] / f"{i:06d}.jpg", quality=quality)


def _photo(w: int, h: int, rng: np.random.Generator):
    """A photo-like image: a smooth colour field under texture at three scales, so that it compresses
    like a photograph (about 100 KB at 400 x 350 px, JPEG quality 95), not like a smooth rendering."""
    from PIL import Image

    im = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                    np.float32)
    for step, amplitude in ((8, 30), (2, 22), (1, 16)):
        noise = np.clip(rng.normal(128, amplitude, (h // step + 1, w // step + 1, 3)), 0, 255).astype(np.uint8)
        im = im + np.asarray(Image.fromarray(noise).resize((w, h), Image.BILINEAR), np.float32) - 128
    return Image.fromarray(np.clip(im, 0, 255).astype(np.uint8))


def _write_photos(job) -> int:
    folder, start, stop, sizes, seed, classes = job
    total = 0
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
        path = Path(folder) / f"class{i % classes}" / f"{i:07d}.jpg"
        _photo(w, h, rng).save(path, quality=95)
        total += path.stat().st_size
    return total


def write_photos(root, n: int, sizes: tuple[int, int] = (300, 500), seed: int = 0, classes: int = 10,
                 processes: int | None = None) -> float:
    """``n`` photo-like JPEG files in ``classes`` class folders under ``root/train`` (each image's
    sides drawn in ``sizes``) and a test split of ``max(classes, n // 50)`` under ``root/test``,
    written by ``processes`` processes (default: every CPU); returns the training files' mean size
    in bytes. What a decoder meets in a real collection, for the benchmarks; never committed."""
    import multiprocessing as mp
    import os

    processes = max(1, processes or os.cpu_count() or 1)
    jobs, first = [], 0
    for split, count in (("train", n), ("test", max(classes, n // 50))):
        for c in range(classes):
            (Path(root) / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        cuts = np.linspace(first, first + count, min(count, processes * 4) + 1).astype(int)
        jobs += [(str(Path(root) / split), int(a), int(b), tuple(sizes), seed, classes)
                 for a, b in zip(cuts, cuts[1:]) if b > a]
        first += count  # the test images are other images than the training ones
    if processes == 1 or len(jobs) == 1:
        sizes_written = list(map(_write_photos, jobs))
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            sizes_written = pool.map(_write_photos, jobs)
    train = sum(t for t, job in zip(sizes_written, jobs) if job[0].endswith("train"))
    return train / max(n, 1)
