"""Decode an encoded image and cut a method's views from it at full resolution (PIL), as the
streaming source's Ray Data tasks do, one batch of rows at a time.

Every random choice of an image's views (crop boxes) is drawn from a generator seeded by
``(seed, epoch, index)``: a view is a pure function of those three, whatever the blocks, tasks,
batches or ranks the image passes through, so a streamed epoch is reproducible and an image's
crops differ from epoch to epoch.
"""

from __future__ import annotations

import io
import math

import numpy as np

from .views import View, crop_box

#: Pillow's guard against decompression bombs is set at this many pixels (a 12k x 12k photo)
MAX_PIXELS = 150_000_000


def read_bytes(path: str) -> bytes | None:
    """A file's bytes (local or any pyarrow file system URI), or None if it cannot be read."""
    try:
        if "://" in path:
            import pyarrow.fs as pafs

            fs, rel = pafs.FileSystem.from_uri(path)
            with fs.open_input_file(rel) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except Exception:
        return None


def open_image(data: bytes):
    """A lazily decoded PIL image (its header read); an image over :data:`MAX_PIXELS` pixels
    (a decompression bomb, or a header that claims to be one) raises ``DecompressionBombError``."""
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombWarning as e:
            raise Image.DecompressionBombError(str(e)) from None


def _jpeg_decoder():
    """TorchCodec's JPEG decoder (libjpeg-turbo; it supersedes torchvision's, deprecated since
    torchvision 0.29), else torchvision's, else None (PIL decodes)."""
    try:
        from torchcodec.decoders import decode_jpeg

        return lambda data: decode_jpeg(data, mode="RGB")
    except Exception:  # not installed, or built for another torch
        pass
    try:
        import warnings

        import torch
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as tv_decode_jpeg

        warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision")
        return lambda data: tv_decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception:
        return None


_DECODE_JPEG = None


def _decode_jpeg(data: bytes):
    """A JPEG as a uint8 ``(3, H, W)`` tensor by libjpeg-turbo (the decoder found once per process),
    or None where no such decoder is installed."""
    global _DECODE_JPEG
    if _DECODE_JPEG is None:
        _DECODE_JPEG = _jpeg_decoder() or (lambda data: None)
    return _DECODE_JPEG(data)


def _cut_jpeg(data: bytes, boxes, views: list[View]) -> list[np.ndarray] | None:
    """libjpeg-turbo, then crop and antialiased resize on uint8 tensors: the fastest full-resolution
    path measured here (about 1.4x PIL's at 224 px); None where no such decoder is installed."""
    img = _decode_jpeg(data)
    if img is None:
        return None
    from torchvision.transforms.v2.functional import resized_crop

    return [resized_crop(img, top, left, h, w, [v.size, v.size], antialias=True).numpy()
            for (left, top, w, h), v in zip(boxes, views)]


def view_boxes(width: int, height: int, views: list[View], rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """The crop boxes ``(left, top, w, h)`` of an image's views, drawn in view order from ``rng``: the one
    draw both decoders share (the CPU path cuts them as it decodes, the GPU path after nvJPEG)."""
    return [crop_box(width, height, v, rng) for v in views]


def cut(data: bytes, views: list[View], rng: np.random.Generator) -> list[np.ndarray]:
    """``(3, size, size)`` uint8 arrays, one per view (sizes resolved), from an encoded image."""
    from PIL import Image

    im = open_image(data)
    width, height = im.size
    boxes = view_boxes(width, height, views, rng)
    if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale (DCT) when every crop stays >= its size
        k = min(min(w, h) / v.size for (_, _, w, h), v in zip(boxes, views))
        reduce = next((r for r in (8, 4, 2) if k >= r), 1)
        if reduce == 1 and im.mode in ("RGB", "L"):
            fast = _cut_jpeg(data, boxes, views)
            if fast is not None:
                return fast
        if reduce > 1:
            im.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
    im = im.convert("RGB")  # decodes: a truncated file raises here
    sx, sy = im.size[0] / width, im.size[1] / height
    out = []
    for (left, top, w, h), v in zip(boxes, views):
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        out.append(np.asarray(im.resize((v.size, v.size), Image.BILINEAR, box=box), np.uint8).transpose(2, 0, 1))
    return out


def cut_batch(data: list[bytes | None], index: np.ndarray, views: list[View], seed: int, epoch: int,
              errors: list[str] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The views of a batch of encoded images: ``([uint8 (N, 3, S, S) per view], ok (N,))``.

    An image that cannot be read or decoded (``None`` bytes, a truncated or foreign file, a
    decompression bomb) is replaced by a copy of the batch's first readable image, so the batch
    keeps its size (every rank must keep the same number of batches); ``ok`` marks it, and its
    error goes to ``errors``."""
    n = len(index)
    out = [np.zeros((n, 3, v.size, v.size), np.uint8) for v in views]

    def one(i: int, rng: np.random.Generator) -> None:
        for arr, cut_view in zip(out, cut(data[i], views, rng)):
            arr[i] = cut_view

    return out, _each_image(data, index, seed, epoch, one, out, errors)


def _each_image(data: list[bytes | None], index: np.ndarray, seed: int, epoch: int, one, filled: list[np.ndarray],
                errors: list[str] | None) -> np.ndarray:
    """``one(i, rng)`` for every image of a batch, ``rng`` seeded by ``(seed, epoch, index[i])``; an
    image that cannot be read or decoded is marked (the returned ``ok`` False, its error in
    ``errors``) and its rows of every array of ``filled`` become the batch's first readable image's."""
    ok = np.zeros(len(index), bool)
    for i in range(len(index)):
        try:
            if data[i] is None:
                raise OSError("unreadable file")
            one(i, np.random.default_rng([seed, epoch, int(index[i])]))
            ok[i] = True
        except Exception as e:  # PIL raises many kinds; any failure is the image's, not the run's
            if errors is not None:
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
    good = np.flatnonzero(ok)
    if len(good) and not ok.all():
        for arr in filled:
            arr[~ok] = arr[good[0]]
    return ok


# --- decoding on the training device (data.decode=gpu) ---------------------------------------------
# The pipeline's CPU tasks only read each file and its header and draw the crop boxes (the same
# draw as above, from (seed, epoch, index)); the training process decodes the JPEG bytes on its GPU
# (nvJPEG, one batched call) and cuts the views there. Where nvJPEG cannot take an image (a PNG, a
# CMYK JPEG, no CUDA), that image is decoded by the CPU decoder of the CPU path: same boxes, same
# resize, the same views.


def box_batch(data: list[bytes | None], index: np.ndarray, views: list[View], seed: int, epoch: int,
              errors: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The crop boxes of a batch of encoded images without decoding them: ``(boxes int32 (N, V, 4),
    ok (N,))``. An image whose header cannot be read is marked (``ok`` False) and given the boxes of
    the batch's first readable image, whose bytes the caller puts in its place (as :func:`cut_batch`
    does)."""
    boxes = np.zeros((len(index), len(views), 4), np.int32)

    def one(i: int, rng: np.random.Generator) -> None:
        boxes[i] = view_boxes(*open_image(data[i]).size, views, rng)

    return boxes, _each_image(data, index, seed, epoch, one, [boxes], errors)


def _decode_on(encoded: list[bytes], device) -> list:
    """Each image as a uint8 ``(3, H, W)`` tensor on ``device``: nvJPEG in one batched call on CUDA,
    image by image where it refuses; the CPU decoder (libjpeg-turbo, else PIL) elsewhere."""
    import torch

    out: list = [None] * len(encoded)
    if device.type == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
        try:
            out = list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
        except Exception:  # one image nvJPEG cannot take fails the whole call: retry one by one
            for i, r in enumerate(raw):
                try:
                    out[i] = decode_jpeg(r, mode=ImageReadMode.RGB, device=device)
                except Exception:
                    pass
    for i, img in enumerate(out):
        if img is None:
            out[i] = _decode_cpu(encoded[i]).to(device, non_blocking=True)
    return out


def _decode_cpu(data: bytes):
    """The CPU path's full-resolution decode of one image, as a uint8 ``(3, H, W)`` tensor."""
    import torch

    im = open_image(data)
    img = _decode_jpeg(data) if im.format == "JPEG" and im.mode in ("RGB", "L") else None
    if img is None:
        img = torch.from_numpy(np.asarray(im.convert("RGB"), np.uint8).transpose(2, 0, 1).copy())
    return img


def cut_on_device(encoded: list[bytes], boxes, views: list[View], device) -> list:
    """The views of a batch from its encoded images and crop boxes (:func:`box_batch`), decoded and
    cut on ``device``: ``[uint8 (N, 3, S, S) per view]``, each crop resized as the CPU path does
    (antialiased bilinear on uint8 tensors)."""
    import torch
    from torchvision.transforms.v2.functional import resized_crop

    images = _decode_on(encoded, device)
    boxes = boxes.tolist() if hasattr(boxes, "tolist") else boxes
    out = [torch.empty((len(images), 3, v.size, v.size), dtype=torch.uint8, device=device) for v in views]
    for i, img in enumerate(images):
        for arr, (left, top, w, h), v in zip(out, boxes[i], views):
            arr[i] = resized_crop(img, top, left, h, w, [v.size, v.size], antialias=True)
    return out
