"""Data that would give wrong numbers without a word: splits whose class folders differ, shards
prepared from them, unreadable images in a streamed evaluation, a stream of nothing readable
(the reliability issue, round two, causes 1, 3 and 10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslray.cli import main
from sslray.config import DataConfig
from sslray.data import open_sources
from sslray.data.catalogue import catalogues

COLOURS = {"a": (230, 30, 30), "b": (30, 230, 30), "c": (30, 30, 230)}


def _tree(root: Path, train: str, test: str, n: int = 8, bad: dict | None = None) -> Path:
    """Solid-colour classes (a probe must tell them apart perfectly); ``bad`` maps a relative path
    to bytes that replace that image."""
    for split, classes in (("train", train), ("test", test)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                colour = tuple(min(255, v + 3 * j) for v in COLOURS[c])
                Image.new("RGB", (24, 24), colour).save(root / split / c / f"{j}.png")
    for rel, data in (bad or {}).items():
        (root / rel).write_bytes(data)
    return root


def test_every_split_is_labelled_by_the_training_split_class_list(tmp_path):
    root = _tree(tmp_path / "t", "abc", "ac")
    train, test = catalogues(DataConfig(name="imagefolder", root=str(root)))
    assert train.classes == test.classes == ["a", "b", "c"]
    by_folder = {Path(p).parent.name: int(y) for p, y in zip(test.locations, test.labels)}
    assert by_folder == {"a": 0, "c": 2}  # numbered per split, c would have been 1 (train's b)
    _, mem_test = open_sources(DataConfig(name="imagefolder", root=str(root), source="memory", image_size=16))
    assert mem_test.classes == ["a", "b", "c"] and sorted(set(mem_test.data.labels.tolist())) == [0, 2]
    # a manifest: the training rows' classes, whatever order the test rows come in
    (tmp_path / "m.csv").write_text("path,label,split\n" + "".join(
        f"{p},{Path(p).parent.name},{Path(p).parent.parent.name}\n"
        for p in sorted(str(q.relative_to(tmp_path)) for q in root.rglob("*.png"))[::-1]))
    mtrain, mtest = catalogues(DataConfig(name="manifest", root=str(tmp_path / "m.csv")))
    assert mtrain.classes == ["a", "b", "c"] and sorted(set(mtest.labels.tolist())) == [0, 2]


def test_r2_1_a_run_whose_test_split_lacks_a_class_probes_it_correctly(tmp_path, capsys):
    """Train a, b, c; test a, c: the kNN vote on solid colours is perfect (it fell to 50 % when the
    test split numbered its own classes)."""
    root = _tree(tmp_path / "t", "abc", "ac")
    assert main(["train", "--method", "random", "--data", "imagefolder", "--root", str(root), "--set",
                 "data.image_size=16", "--set", "trunk.width=0.125", "--set", "optim.batch_size=8", "--set",
                 "eval.protocols=[knn]", "--set", "eval.layers=[conv1,res2]", "--set", "eval.knn.k=3",
                 "--set", "eval.health=false", "--quiet"]) == 0, capsys.readouterr().err
    transfer = json.loads(next(Path("runs").rglob("transfer.json")).read_text())
    assert transfer["knn/conv1/top1"] == 1.0 and transfer["knn/res2/top1"] == 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_r2_10_prepare_labels_shards_by_the_training_classes_and_writes_nothing_of_an_unreadable_tree(tmp_path, capsys):
    import pyarrow.parquet as pq
    import ray

    try:
        root = _tree(tmp_path / "t", "abc", "ac", n=4)
        assert main(["data", "prepare", str(root), "--out", str(tmp_path / "out"), "--quiet"]) == 0
        assert json.loads((tmp_path / "out" / "classes.json").read_text()) == ["a", "b", "c"]
        labels = sorted({int(v) for p in (tmp_path / "out").glob("test-*.parquet")
                         for v in pq.read_table(p, columns=["label"]).column("label").to_pylist()})
        assert labels == [0, 2]
        # every image unreadable: one line, exit 2, no shards of nothing left behind
        bad = {f"{s}/{c}/{j}.png": b"not an image" for s in ("train", "test") for c in "ab" for j in range(4)}
        junk = _tree(tmp_path / "junk", "ab", "ab", n=4, bad=bad)
        capsys.readouterr()
        assert main(["data", "prepare", str(junk), "--out", str(tmp_path / "nothing"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sslray: error: no image of the train split could be read (8 unreadable") and "\n" not in err
        assert not (tmp_path / "nothing").exists()
    finally:
        ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_r2_3_a_streamed_evaluation_counts_and_names_its_unreadable_images_and_a_blank_stream_fails(
        tmp_path, capsys, mlflow_runs):
    import ray

    small = ["--set", "data.image_size=16", "--set", "trunk.width=0.125", "--set", "optim.batch_size=8",
             "--set", "eval.protocols=[knn]", "--set", "eval.layers=[conv1]", "--set", "eval.health=false",
             "--set", "data.source=stream", "--set", "data.max_corrupt=0.5", "--epochs", "1", "--quiet"]
    try:
        root = _tree(tmp_path / "t", "ab", "ab", bad={"test/b/5.png": b"\x89PNG broken"})
        assert main(["train", "--method", "rotation", "--data", "imagefolder", "--root", str(root), *small]) == 0, \
            capsys.readouterr().err
        client, runs = mlflow_runs()
        metrics, tags = runs[0].data.metrics, runs[0].data.tags
        assert metrics["eval/corrupt_images"] == 1.0 and "train/corrupt_images" not in metrics
        assert tags["sslray.eval.corrupt_first"].endswith("test/b/5.png")
        # a stream of which nothing can be read trains on nothing, whatever data.max_corrupt allows
        bad = {f"train/{c}/{j}.png": b"" for c in "ab" for j in range(8)}
        blank = _tree(tmp_path / "blank", "ab", "ab", bad=bad)
        capsys.readouterr()
        assert main(["train", "--method", "rotation", "--data", "imagefolder", "--root", str(blank), *small[:-5],
                     "--set", "data.max_corrupt=1", "--epochs", "1", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("sslray: error: no image of epoch 1 could be read (16 unreadable") and "\n" not in err
        assert mlflow_runs()[1][0].info.status == "FAILED"
    finally:
        ray.shutdown()


def test_links_out_of_the_root_are_followed_and_counted(tmp_path):
    root = _tree(tmp_path / "t", "ab", "ab", n=3)
    outside = _tree(tmp_path / "elsewhere", "c", "c", n=2)
    (root / "train" / "c").symlink_to(outside / "train" / "c")  # a class folder that leads out
    (root / "test" / "c").mkdir()
    (root / "test" / "c" / "0.png").symlink_to(outside / "test" / "c" / "1.png")  # a file that does
    (root / "train" / "a" / "inside.png").symlink_to(root / "train" / "b" / "0.png")  # one that stays inside
    train, test = catalogues(DataConfig(name="imagefolder", root=str(root)))
    assert (train.outside_root, test.outside_root) == (2, 1)
    assert len(train) == 9 and train.classes == ["a", "b", "c"]
    source, _ = open_sources(DataConfig(name="imagefolder", root=str(root), source="memory", image_size=16))
    assert source.describe()["resolved.data.outside_root"] == 2
    assert np.array_equal(np.bincount(train.labels), [4, 3, 2])
