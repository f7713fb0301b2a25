import os

import numpy as np
import pytest
import torch
from PIL import Image

from sslray.config import DataConfig
from sslray.data import load_split, synthetic
from sslray.data.folder import load_imagefolder
from sslray.errors import UserError


def test_synthetic_is_deterministic_by_seed_and_records_factors():
    a, la, fa = synthetic.generate(60, seed=0)
    b, lb, fb = synthetic.generate(60, seed=0)
    c, _, _ = synthetic.generate(60, seed=1)
    t, _, _ = synthetic.generate(60, seed=0, split="test")
    assert a.shape == (60, 3, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c) and not np.array_equal(a, t)
    assert set(fa) == set(synthetic.FACTORS)
    assert all(v.shape == (60,) for v in fa.values())
    assert np.bincount(la, minlength=10).tolist() == [6] * 10  # balanced classes
    assert fa["angle"].min() >= -30 and fa["angle"].max() <= 30
    assert set(np.unique(fa["texture"])) <= {0, 1, 2, 3}


def test_synthetic_renders_any_size_and_shapes_differ_by_class():
    imgs, labels, _ = synthetic.generate(40, seed=3, size=64)
    assert imgs.shape == (40, 3, 64, 64)
    # the foreground is bright and saturated: every image has some pixels far from its background
    spread = imgs.reshape(40, 3, -1).astype(int).max(-1) - imgs.reshape(40, 3, -1).astype(int).min(-1)
    assert (spread.max(1) > 60).all()


def test_load_split_caches_and_limits_balanced(tmp_path):
    cfg = DataConfig(limit=50, test_limit=20)
    train = load_split(cfg, "train")
    again = load_split(cfg, "train")
    assert len(train) == 50 and torch.equal(train.images, again.images)
    from sslray.data import cache_dir

    assert (cache_dir() / "synthetic-v1-seed0-train-50-32px.npz").exists()
    sub = train.limit(20)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [2] * 10
    assert set(sub.factors) == set(synthetic.FACTORS) and len(sub.factors["hue"]) == 20
    assert load_split(cfg, "test").split == "test" and len(load_split(cfg, "test")) == 20


def _write_tree(root, classes=("cat", "dog", "emu"), per_class=5, size=40):
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for j in range(per_class):
            arr = np.full((size, size + 8, 3), 20 * i + j, np.uint8)
            Image.fromarray(arr).save(root / c / f"{j:03d}.png")


def test_imagefolder_splits_labels_resize_and_limit(tmp_path):
    _write_tree(tmp_path / "data" / "train")
    _write_tree(tmp_path / "data" / "test", per_class=2)
    train = load_imagefolder(str(tmp_path / "data"), "train", 32, None)
    assert train.classes == ["cat", "dog", "emu"]
    assert train.images.shape == (15, 3, 32, 32)
    assert train.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert int(train.images[7, 0, 0, 0]) == 20 * 1 + 2  # dog/002.png kept its value through resize
    test = load_imagefolder(str(tmp_path / "data"), "test", 32, None)
    assert len(test) == 6
    assert torch.bincount(load_imagefolder(str(tmp_path / "data"), "train", 32, 6).labels).tolist() == [2, 2, 2]


def test_single_tree_holds_out_every_fifth_image(tmp_path):
    _write_tree(tmp_path / "flat", per_class=10)
    train = load_imagefolder(str(tmp_path / "flat"), "train", 32, None)
    test = load_imagefolder(str(tmp_path / "flat"), "test", 32, None)
    assert len(train) == 24 and len(test) == 6


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "flat_images", "no_test_split"])
def test_bad_data_names_the_path(tmp_path, case):
    root = tmp_path / "root"
    if case == "empty":
        root.mkdir()
    elif case == "corrupt":
        _write_tree(root / "train")
        _write_tree(root / "test")
        (root / "train" / "dog" / "001.png").write_bytes(b"not an image at all")
    elif case == "flat_images":
        root.mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a.png")
    elif case == "no_test_split":
        _write_tree(root / "train")
    with pytest.raises(UserError) as e:
        load_imagefolder(str(root), "test" if case == "no_test_split" else "train", 32, None)
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg
    expected = {"missing": "not found", "empty": "empty", "corrupt": "corrupt image", "flat_images": "wrong layout",
                "no_test_split": "no test split"}[case]
    assert expected in msg
    if case == "corrupt":
        assert "001.png" in msg


def _make_slowly(path, marks):
    """A process that wants ``path`` from the cache; its maker leaves a mark and takes its time."""
    import time

    from sslray.data.cache import cached

    def make():
        (marks / f"{os.getpid()}").touch()
        time.sleep(0.5)
        return {"x": np.arange(5)}

    assert cached(path, make)["x"].tolist() == [0, 1, 2, 3, 4]


def test_processes_wanting_the_same_missing_cache_file_make_it_once(tmp_path):
    """On a fresh machine a study's first runs start together: one generates the data, the others
    wait on the cache's lock and read what it wrote (each used to generate it all again)."""
    import multiprocessing as mp

    marks = tmp_path / "marks"
    marks.mkdir()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_make_slowly, args=(tmp_path / "a.npz", marks)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(list(marks.iterdir())) == 1
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2, 3, 4]
    assert not list(tmp_path.glob(".*"))  # no half-written file or lock left behind
