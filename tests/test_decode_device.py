"""data.decode: the views of an image decoded on the training device (nvJPEG on CUDA; here, on CPU,
its fallback to the CPU decoder) are the CPU path's views: the same boxes from (seed, epoch, index),
the same resize. And where the switch cannot be honoured, one line."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from sslray.config import DataConfig
from sslray.data import open_sources, set_decode
from sslray.data.decode import box_batch, cut, cut_batch, cut_on_device, view_boxes
from sslray.data.synthetic import write_photos
from sslray.data.views import CENTRE, View, crop
from sslray.train.prefetch import to_device

#: views no more than half the size of the smallest image: the CPU path decodes these at full
#: resolution (libjpeg-turbo) rather than at a DCT-reduced scale, as the device path always does
VIEWS = [crop((0.2, 1.0)).at(40), View(48, (0.5, 1.0)), CENTRE.at(40)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    mean = write_photos(root, 48, sizes=(64, 90), seed=1, processes=1)
    assert 3_000 < mean < 30_000  # photo-like: noisy enough that 64-90 px JPEGs take kilobytes
    return root


def _bytes(root, n=12):
    return [p.read_bytes() for p in sorted((root / "train").rglob("*.jpg"))[:n]]


def test_the_boxes_are_drawn_once_for_both_decoders():
    rng_a, rng_b = np.random.default_rng([3, 1, 7]), np.random.default_rng([3, 1, 7])
    assert view_boxes(300, 200, VIEWS, rng_a) == view_boxes(300, 200, VIEWS, rng_b)
    data, _ = _jpeg(120, 90)
    boxes, ok = box_batch([data], np.array([7]), VIEWS, seed=3, epoch=1)
    assert ok.all() and boxes[0].tolist() == [list(b) for b in view_boxes(120, 90, VIEWS,
                                                                          np.random.default_rng([3, 1, 7]))]


def _jpeg(w, h, fmt="JPEG"):
    from PIL import Image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue(), im


def test_views_cut_on_the_device_equal_the_cpu_paths_views(photos):
    data = _bytes(photos)
    index = np.arange(100, 100 + len(data))
    cpu, ok = cut_batch(data, index, VIEWS, seed=5, epoch=2)
    boxes, ok2 = box_batch(data, index, VIEWS, seed=5, epoch=2)
    assert ok.all() and ok2.all()
    device = cut_on_device(data, torch.from_numpy(boxes), VIEWS, torch.device("cpu"))
    assert [tuple(v.shape) for v in device] == [(len(data), 3, 40, 40), (len(data), 3, 48, 48), (len(data), 3, 40, 40)]
    for a, b in zip(cpu, device):
        assert torch.equal(torch.from_numpy(a), b)  # pixel for pixel


def test_a_png_among_the_jpegs_is_cut_from_the_same_box():
    png, im = _jpeg(100, 80, "PNG")
    boxes, ok = box_batch([png], np.array([0]), [View(32, (0.5, 1.0))], seed=0, epoch=0)
    got = cut_on_device([png], torch.from_numpy(boxes), [View(32, (0.5, 1.0))], torch.device("cpu"))[0][0]
    ref = cut(png, [View(32, (0.5, 1.0))], np.random.default_rng([0, 0, 0]))[0]  # PIL's resize of the same box
    assert got.shape == (3, 32, 32) and np.abs(got.numpy().astype(int) - ref.astype(int)).mean() < 12


def test_an_unreadable_image_takes_the_first_readable_ones_place_and_is_marked(photos):
    data = _bytes(photos, 3)
    data[1] = b"not an image"
    boxes, ok = box_batch(data, np.arange(3), VIEWS, seed=0, epoch=0)
    assert ok.tolist() == [True, False, True] and (boxes[1] == boxes[0]).all()


def test_a_streamed_epoch_decoded_on_the_device_is_the_cpu_decoded_epoch(photos):
    import ray

    try:
        train, _ = open_sources(DataConfig(name="imagefolder", root=str(photos), source="stream", image_size=40))
        assert set_decode(DataConfig(decode="auto"), train, gpu=False) == "cpu"  # no GPU: auto decodes on CPUs
        assert train.describe()["resolved.data.decode"] == "cpu"
        plain = list(train.epoch(1, 16, seed=4, views=VIEWS))
        train.decode = "gpu"  # as a GPU run would: the pipeline reads bytes, the training process decodes
        left = list(train.epoch(1, 16, seed=4, views=VIEWS))
        assert left[0].views == [] and len(left[0].encoded) == 16 and tuple(left[0].boxes.shape) == (16, 3, 4)
        moved = list(to_device(iter(left), torch.device("cpu"), (), VIEWS))
        assert len(moved) == len(plain) == 3
        for a, b in zip(plain, moved):
            assert torch.equal(a.index, b.index) and torch.equal(a.labels, b.labels)
            assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
            assert b.decoding > 0 and b.copying >= 0
    finally:
        ray.shutdown()


def test_auto_decodes_on_the_gpu_only_where_few_cpus_feed_one():
    from sslray.data.source import MemorySource

    import sslray.data.stream as stream

    s = stream.StreamSource.__new__(stream.StreamSource)
    s.decode = "cpu"
    assert set_decode(DataConfig(decode="auto", cpus_per_worker=4), s, gpu=True) == "gpu" and s.decode == "gpu"
    assert set_decode(DataConfig(decode="auto", cpus_per_worker=6), s, gpu=True) == "cpu" and s.decode == "cpu"
    assert set_decode(DataConfig(decode="cpu", cpus_per_worker=1), s, gpu=True) == "cpu"
    memory = MemorySource.__new__(MemorySource)
    assert set_decode(DataConfig(decode="auto", cpus_per_worker=1), memory, gpu=True) == "cpu"
    from sslray.errors import UserError

    with pytest.raises(UserError, match="data.decode=gpu applies to image files streamed"):
        set_decode(DataConfig(decode="gpu"), memory, gpu=True)
    with pytest.raises(UserError, match="this run has none"):
        set_decode(DataConfig(decode="gpu"), s, gpu=False)
