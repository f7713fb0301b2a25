"""The streaming source on Ray Data: a generated folder of thousands of JPEG files of mixed sizes,
cut into views from the original images; shards, batch counts, indices, crops, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslray.cli import main
from sslray.config import DataConfig
from sslray.data import open_sources
from sslray.data.decode import cut, read_bytes
from sslray.data.synthetic import write_folder
from sslray.data.views import CENTRE, View, crop, crop_box

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
GB = 128  # global batch of the direct tests


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    write_folder(root, 2000, 200, sizes=(40, 160), seed=3)  # every image its own width and height
    return root


@pytest.fixture(scope="module")
def ray_local():
    import ray

    yield
    ray.shutdown()


def _stream(tree, **data):
    return open_sources(DataConfig(name="imagefolder", root=str(tree), source="stream", image_size=32, **data))


def test_crop_boxes_lie_inside_the_original_image_and_cover_the_asked_area():
    rng = np.random.default_rng(0)
    view = View(32, (0.2, 1.0))
    photos, inside = 0, 0
    for _ in range(4000):
        w, h = (int(v) for v in rng.integers(8, 600, size=2))
        left, top, cw, ch = crop_box(w, h, view, rng)
        assert 0 <= left and 0 <= top and 0 < cw and 0 < ch and left + cw <= w and top + ch <= h
        if 2 / 3 <= w / h <= 3 / 2 and min(w, h) >= 64:  # photo-like: a draw almost always fits
            photos += 1
            inside += 0.2 * 0.9 <= cw * ch / (w * h) <= 1.0
    assert photos > 500 and inside > 0.97 * photos  # the area in the scale range (rounding, rare fallback aside)
    assert crop_box(300, 200, CENTRE, rng) == (50, 0, 200, 200)  # centre view: the largest centred square


def test_each_image_is_streamed_once_per_epoch_with_its_index_in_equal_rank_shares(tree, ray_local):
    train, _ = _stream(tree)
    cat = train.catalogue
    views = [crop((0.2, 1.0)).at(32), CENTRE.at(32)]
    epochs = {}
    for epoch in (0, 1):
        shards = []
        for rank in (0, 1):
            batches = list(train.epoch(epoch, GB, seed=5, rank=rank, world=2, views=views))
            assert len(batches) == train.steps(GB) == len(cat) // GB  # equal counts on both ranks
            for b in batches:
                assert [(v.shape, v.dtype) for v in b.views] == [((GB // 2, 3, 32, 32), torch.uint8)] * 2
                assert torch.equal(b.labels, torch.from_numpy(cat.labels[b.index.numpy()]))  # label travels with index
            shards.append(torch.cat([b.index for b in batches]))
            if epoch == 0 and rank == 1:  # the pixels travel with their index: the image's own crop of (5, 0, index)
                b, i = batches[3], 7
                own = cut(read_bytes(cat.locations[int(b.index[i])]), views,
                          np.random.default_rng([5, 0, int(b.index[i])]))
                assert all(torch.equal(v[i], torch.from_numpy(o.copy())) for v, o in zip(b.views, own))
        a, c = set(shards[0].tolist()), set(shards[1].tolist())
        assert not a & c and len(a) == len(c) == len(shards[0]) == train.steps(GB) * GB // 2  # disjoint, no repeats
        epochs[epoch] = torch.cat(shards)
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch ...
    again = torch.cat([b.index for b in train.epoch(0, GB, seed=5, rank=0, world=2, views=views)])
    assert torch.equal(again, epochs[0][: len(again)])  # ... that depends only on (seed, epoch)


def test_dino_s_multi_crop_views_are_cut_from_each_original_image_at_their_own_sizes(tree, ray_local):
    # DINO declares two 32-px global and two 14-px local crops: the stream cuts all four from the
    # original file, each at its own size, each the image's own crop of (seed, epoch, index)
    from sslray.methods import get_method

    cls = get_method("dino")
    views = [v.at(32) for v in cls.views(cls.Settings(local_crops=2), 32)]
    assert [v.size for v in views] == [32, 32, 14, 14]
    train, _ = _stream(tree)
    b = next(iter(train.epoch(0, 64, seed=2, rank=0, world=1, views=views)))
    assert [tuple(v.shape) for v in b.views] == [(64, 3, 32, 32)] * 2 + [(64, 3, 14, 14)] * 2
    i = int(b.index[5])
    own = cut(read_bytes(train.catalogue.locations[i]), views, np.random.default_rng([2, 0, i]))
    assert all(torch.equal(v[5], torch.from_numpy(o.copy())) for v, o in zip(b.views, own))
    assert not torch.equal(b.views[0][5], b.views[1][5])  # two global crops, not one twice


def test_views_come_from_the_original_resolution(tree, ray_local):
    # a 16-px view of a small central crop keeps detail a 32-px whole image (resized first) has lost
    train, _ = _stream(tree)
    loc = train.catalogue.locations[0]
    from PIL import Image

    with Image.open(loc) as im:
        w, h = im.size
    data = read_bytes(loc)
    tight = View(16, (0.05, 0.05), (1.0, 1.0))
    left, top, cw, ch = crop_box(w, h, tight, np.random.default_rng([0, 0, 0]))
    got = cut(data, [tight], np.random.default_rng([0, 0, 0]))[0]
    with Image.open(loc) as im:
        ref = np.asarray(im.convert("RGB").resize((16, 16), Image.BILINEAR, box=(left, top, left + cw, top + ch)))
    assert np.abs(got.transpose(1, 2, 0).astype(int) - ref.astype(int)).max() <= 12  # the same box, at full res


def _run(*args, cwd, check=True):
    r = subprocess.run([sys.executable, "-m", "sslray", "train", *args, "--quiet"], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=900)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


SMALL = ["--set", "trunk.width=0.125", "--set", "optim.batch_size=100", "--set", "eval.linear.epochs=2",
         "--set", "eval.feature_dim=256", "--set", "data.source=stream", "--set", "data.test_limit=100"]


def test_two_ray_train_workers_get_disjoint_equal_shards_of_the_stream(tree, tmp_path):
    _run("--method", "npid", "--data", "imagefolder", "--root", str(tree), "--epochs", "2", "--workers", "2",
         "--no-eval", "--set", "debug.record_steps=true", "--set", "dist.cpus_per_worker=0.5",
         "--set", "data.cpus_per_worker=0.5", "--set", "data.limit=1000", *SMALL, cwd=tmp_path)
    run_dir = next((tmp_path / "runs").glob("npid-*"))
    steps = {r: [json.loads(line) for line in (run_dir / "debug" / f"rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)}
    for epoch in (0, 1):
        mine = {r: [s["idx"] for s in steps[r] if s["epoch"] == epoch] for r in (0, 1)}
        assert len(mine[0]) == len(mine[1]) == 10  # 1000 images, global batch 100: 10 steps on each rank
        flat = {r: [i for b in mine[r] for i in b] for r in (0, 1)}
        assert all(len(b) == 50 for r in (0, 1) for b in mine[r])
        assert not set(flat[0]) & set(flat[1]) and len(set(flat[0]) | set(flat[1])) == 1000  # each image once
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    assert run.data.params["resolved.data.source"] == "stream" and run.info.status == "FINISHED"


def test_a_streamed_run_resumes_at_an_epoch_boundary_like_an_uninterrupted_run(tree, tmp_path):
    common = ["--method", "simclr", "--data", "imagefolder", "--root", str(tree), "--epochs", "2", "--no-eval",
              "--set", "data.limit=400", *SMALL]
    _run(*common, "--set", "output_dir=straight", cwd=tmp_path)
    killed = _run(*common, "--set", "output_dir=split", "--set", "debug.kill_at=[1,0]", cwd=tmp_path, check=False)
    assert killed.returncode != 0  # SIGKILLed in epoch 2, after epoch 1's checkpoint
    _run("--resume", "--method", "simclr", "--set", "output_dir=split", cwd=tmp_path)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = c.search_runs(["1"])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "train/loss")] == [0, 1]
    a = torch.load(next((tmp_path / "straight").glob("*/trunk.pt")), weights_only=True)
    b = torch.load(next((tmp_path / "split").glob("*/trunk.pt")), weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_an_unreadable_image_is_replaced_counted_and_named_and_past_the_threshold_stops_the_run(tree, tmp_path):
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(tree, root)
    bad = sorted((root / "train" / "circle").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated mid-scan
    base = ["--method", "rotation", "--data", "imagefolder", "--root", str(root), "--epochs", "1", "--no-eval",
            "--set", "data.limit=400", *SMALL]
    _run(*base, "--set", "data.max_corrupt=0.01", cwd=tmp_path)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    # 400 images (the first 40 of each class, the truncated one among them) in batches of 100: an epoch
    # draws every one, so the bad file is met, replaced and counted exactly once
    assert run.data.metrics.get("train/corrupt_images") == 1, "the truncated image was not detected"
    assert str(bad) in run.data.tags["sslray.data.corrupt_first"]
    r = _run(*base, "--set", "data.max_corrupt=0", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("sslray: error: 1 unreadable images in epoch 1")


@pytest.mark.parametrize("case", ["no images", "missing manifest file", "unreachable s3", "stream of synthetic"])
def test_bad_streaming_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, tree):
    os.chdir(tmp_path)
    if case == "no images":
        (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
        args, phrase = ["--data", "imagefolder", "--root", "empty"], "no class folders with images"
    elif case == "missing manifest file":
        first = next((tree / "train" / "arrow").glob("*.jpg"))
        (tmp_path / "m.csv").write_text(f"path,label\n{first},arrow\nnope/missing.jpg,circle\n")
        args, phrase = ["--data", "manifest", "--root", "m.csv"], "names 1 missing file(s), e.g."
    elif case == "unreachable s3":
        args = ["--data", "imagefolder", "--root", "s3://no-such-bucket/imagenet?endpoint_override=127.0.0.1:1&scheme=http"]
        phrase = "cannot reach data root s3://no-such-bucket/imagenet"
    else:
        args, phrase = ["--data", "synthetic"], "data.source=stream reads image files"
    assert main(["train", "--method", "rotation", *args, "--set", "data.source=stream", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and phrase in err, err
    assert not Path("mlflow.db").exists() and not Path("runs").exists()


def test_a_manifest_streams_like_its_folder(tree, tmp_path, ray_local):
    files = sorted((tree / "train").glob("*/*.jpg"))[::7]  # every class, as training must hold each test class
    held = sorted((tree / "test").glob("*/*.jpg"))[:50]
    lines = ["path,label,split"] + [f"{f},{f.parent.name},train" for f in files] + \
            [f"{f},{f.parent.name},val" for f in held]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    train, test = open_sources(DataConfig(name="manifest", root=str(tmp_path / "m.csv"), source="stream",
                                          image_size=32))
    assert len(train) == len(files) and len(test) == 50  # "val" rows are the test split
    assert train.classes == test.classes == sorted({f.parent.name for f in files})  # one class list: training's
    batch = next(iter(train.epoch(0, 100, 0, views=[CENTRE.at(32)])))
    assert batch.views[0].shape == (100, 3, 32, 32) and math.isfinite(float(batch.views[0].float().mean()))


def test_prepare_writes_class_mixed_shards_that_stream_each_image_once_per_epoch(tree, tmp_path, capsys, ray_local):
    out = tmp_path / "shards"
    assert main(["data", "prepare", str(tree), "--out", str(out), "--shard-rows", "250", "--short-side", "64",
                 "--quiet"]) == 0
    assert "train: 2000 of 2000 images" in capsys.readouterr().out
    import pyarrow.parquet as pq

    shards = sorted(out.glob("train-*.parquet"))
    assert len(shards) == 8 and json.loads((out / "classes.json").read_text())[0] == "arrow"
    first = pq.read_table(shards[0])
    assert first.num_rows == 250 and len(set(first.column("label").to_pylist())) == 10  # classes mixed
    from PIL import Image
    import io

    assert min(Image.open(io.BytesIO(first.column("image")[0].as_py())).size) <= 64  # resized short side
    train, test = open_sources(DataConfig(name="parquet", root=str(out), image_size=32))
    assert len(train) == 2000 and len(test) == 200 and train.kind == "stream"
    for epoch in (0, 1):
        seen = [torch.cat([b.index for b in train.epoch(epoch, 100, 0, rank, 2)]) for rank in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == train.steps(100, 2) * 50  # equal shares, every deal fills them
        both = torch.cat(seen).tolist()
        assert len(set(both)) == len(both) >= 1500  # each image at most once; the deal's rest is the next epoch's
    # rewriting into a folder that holds anything is refused, writing nothing
    assert main(["data", "prepare", str(tree), "--out", str(out), "--quiet"]) == 2
    assert "not an empty folder" in capsys.readouterr().err and len(list(out.iterdir())) == 8 + 1 + 2
