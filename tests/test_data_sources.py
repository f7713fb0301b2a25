"""Data sources are registered parts (sslray/data/sources/): one module each, found by name, and a
new one is one class, shown here by a toy source registered from this test and trained through
``sslray train``."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_probed

from sslray.cli import main
from sslray.config import DataConfig
from sslray.data import ImageSet, MemorySource, offered, open_sources
from sslray.data.sources import COLLECTIONS, Collection, get_collection, names, register


def stripes(n: int, size: int, split: str) -> ImageSet:
    """Horizontal (class 0) or vertical (class 1) stripes of random period and phase."""
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(n) % 2
    period = torch.randint(3, 8, (n,), generator=g)
    phase = torch.randint(0, 8, (n,), generator=g)
    pos = torch.arange(size)
    wave = (((pos[None] + phase[:, None]) // period[:, None]) % 2).to(torch.uint8) * 255  # (n, size)
    rows = wave[:, :, None].expand(n, size, size)
    img = torch.where(labels[:, None, None].bool(), rows.transpose(1, 2), rows)
    return ImageSet(img[:, None].expand(n, 3, size, size).contiguous(), labels, ["across", "down"], "stripes", split)


@pytest.fixture
def toy():
    """A data source in one class, registered for the test and removed after it."""

    class Stripes(Collection):
        name = "toy_stripes"
        summary = "stripes across or down (a test's toy)"
        settings = ()
        needs_root = False

        def split(self, cfg, split):
            return stripes(cfg.limit or 80 if split == "train" else cfg.test_limit or 40, cfg.image_size, split)

        def open(self, cfg):
            self.held_only(cfg)
            return MemorySource(self.split(cfg, "train")), MemorySource(self.split(cfg, "test"))

    register(Stripes)
    yield Stripes
    del COLLECTIONS["toy_stripes"]


def test_a_toy_source_registered_in_one_class_trains_through_sslray_train(toy, mlflow_runs, capsys):
    assert "toy_stripes" in names() and DataConfig(name="toy_stripes").name == "toy_stripes"
    assert main(["train", "--method", "rotation", "--data", "toy_stripes", "--epochs", "1", "--quiet",
                 "--set", "data.limit=80", "--set", "data.test_limit=40", "--set", "trunk.width=0.125",
                 "--set", "optim.batch_size=20", "--set", "eval.linear.epochs=3", "--set", "eval.feature_dim=256"]) == 0
    c, runs = mlflow_runs()
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["sslray.data"] == "toy_stripes" and run.data.params["data.name"] == "toy_stripes"
    assert run.data.params["resolved.data.source"] == "memory"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")] == [0]
    assert_probed(run.data.metrics, [f"transfer/{layer}/top1" for layer in ("conv1", "res5")], n_test=40)
    # the new source is listed, and what it refuses it says in one line
    assert main(["data", "sources"]) == 0
    assert "toy_stripes: stripes across or down (a test's toy)\n    memory; reads nothing more" in capsys.readouterr().out
    assert main(["train", "--method", "rotation", "--data", "toy_stripes", "--set", "data.source=stream"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sslray: error: data.source=stream reads image files (data.name=imagefolder or manifest); "
                   "toy_stripes is held in memory")


def test_the_registry_is_the_list_of_names(toy):
    assert DataConfig.model_fields["name"].annotation is str  # config.py lists no names
    assert names() == ["cifar10", "imagefolder", "manifest", "parquet", "synthetic", "synthetic_video", "toy_stripes"]
    with pytest.raises(ValueError, match="must be a registered data source: cifar10, .*, toy_stripes"):
        DataConfig(name="nope")
    with pytest.raises(TypeError, match="registered twice"):
        register(type("Other", (Collection,), {"name": "toy_stripes"}))


def test_what_each_source_declares():
    video, still = offered(DataConfig(name="synthetic_video", frames=8)), offered(DataConfig())
    assert (video.offers, video.frames, video.sample_rate, video.fps) == (("clip", "audio", "track", "frame"), 8, 4000, 8)
    assert (still.offers, still.frames, still.sample_rate, still.fps) == ((), 0, 0, 0)
    assert {n: get_collection(n).ways for n in names()} == {
        "cifar10": ("memory",), "imagefolder": ("memory", "stream"), "manifest": ("memory", "stream"),
        "parquet": ("stream",), "synthetic": ("memory",), "synthetic_video": ("memory",)}
    train, test = open_sources(DataConfig(limit=30, test_limit=10))
    assert train.held and test.held and train.pipeline_cpus == 0 and (len(train), len(test)) == (30, 10)
