"""Evaluation protocols as registered modules (issue 25): a protocol added in one place runs through
``sslray train`` and lands in MLflow; results and MLflow keys are one another's image; one protocol
gives the same numbers on memory and on streamed data."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import Field

from conftest import TINY
from sslray.cli import main
from sslray.config import EvalConfig, Strict
from sslray.eval.protocols import PROTOCOLS, Protocol, Result, register


@pytest.fixture
def toy_protocol():
    """A protocol defined here, in the test: its name, its settings, its run. Nothing else changes."""

    class ToySettings(Strict):
        scale: float = Field(1.0, gt=0, le=10)

    class Toy(Protocol):
        name = "toy"
        Settings = ToySettings

        def run(self, scan):
            # per layer: the size of its pooled features; of no layer: how often the training
            # split's most common class is right on the test images (the majority baseline), scaled
            feats = scan.features()
            out = [Result(self.name, "dim", feats["train"][layer].shape[1], layer, n=len(scan.train_set))
                   for layer in scan.cfg.layers]
            common = torch.bincount(scan.train_set.labels).argmax()
            share = float((scan.test_set.labels == common).float().mean())
            return out + [Result(self.name, "majority", self.settings.scale * share, n=len(scan.test_set))]

    register(Toy)
    yield Toy
    PROTOCOLS.pop("toy", None)  # the registry is the process's: leave it as it was


def test_a_protocol_registered_in_a_test_runs_through_sslray_train_into_mlflow(toy_protocol, mlflow_runs, tmp_path):
    assert main(["train", "--method", "rotation", "--epochs", "1", *TINY, "--set", "eval.protocols=[linear,toy]",
                 "--set", "eval.toy.scale=2", "--set", "eval.layers=[res3,res5]"]) == 0
    _, runs = mlflow_runs()
    m, p = runs[0].data.metrics, runs[0].data.params
    for layer in ("res3", "res5"):  # its per-layer numbers, keyed <protocol>/<layer>/<metric>
        assert m[f"toy/{layer}/dim"] == float(p[f"probe/{layer}/dim"])
        assert f"transfer/{layer}/top1" in m  # the protocols it was asked beside still ran
    # 200 training and 100 test images, class-balanced over 10 classes: the majority class is right
    # on a tenth of the test images, scaled by the setting given on the command line
    assert m["toy/majority"] == pytest.approx(2 * 0.1)
    assert p["eval.toy.scale"] == "2.0" and p["eval.protocols"] == "linear,toy"
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "transfer.json").read_text())["toy/majority"] == pytest.approx(0.2)


def test_a_protocols_settings_are_checked_where_the_run_is_configured(toy_protocol, capsys):
    assert main(["train", "--method", "rotation", "--set", "eval.protocols=[toy]", "--set", "eval.toy.scale=20"]) == 2
    assert "eval.toy.scale: Input should be less than or equal to 10 (got 20)" in capsys.readouterr().err


def test_keys_and_results_are_one_another(toy_protocol):
    """Every key sslray writes reads back as the result it came from, and no other key does."""
    from sslray.eval.results import key, parse, tables

    keys = {"transfer/res3/top1": ("linear", "res3", "", "top1"), "untuned/res3/top1": ("linear", "res3", "untuned", "top1"),
            "transfer/res3/lr_at_edge": ("linear", "res3", "", "lr_at_edge"), "knn/res5/top1": ("knn", "res5", "", "top1"),
            "finetune/top1": ("finetune", None, "", "top1"), "lowshot/1pct/images": ("lowshot", None, "1pct", "images"),
            "lowshot/1pct/linear/res2/top1": ("lowshot", "res2", "1pct/linear", "top1"),
            "lowshot/5shot/finetune/top1": ("lowshot", None, "5shot/finetune", "top1"),
            "retrieval/conv1/shares/hue": ("retrieval", "conv1", "", "shares/hue"),
            "invariance/rotation/res4/cosine": ("invariance", "res4", "rotation", "cosine"),
            "invariance/jigsaw/chance": ("invariance", None, "jigsaw", "chance"),
            "factor/hue/res5/r2": ("invariance", "res5", "factor/hue", "r2"), "toy/res4/dim": ("toy", "res4", "", "dim")}
    for k, (protocol, layer, variant, metric) in keys.items():
        r = parse(k, 0.5)
        assert (r.protocol, r.layer, r.variant, r.metric, r.value) == (protocol, layer, variant, metric, 0.5), k
        assert key(r) == k
    for k in ("train/loss", "health/rank", "monitor/knn_top1", "at_epoch/transfer/res3/top1", "time/epoch_s"):
        assert parse(k, 1.0) is None, k
    rs = [parse(k, 0.1 * i) for i, k in enumerate(keys)]
    assert list(tables(rs)) == ["linear probe", "kNN", "linear, untuned lr", "linear, 1pct labels"]
    assert tables(rs)["linear probe"] == {"res3": 0.0}


def _coded(n: int, seed: int):
    from sslray.data import ImageSet

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = ((labels[:, None, None, None] / 3 * 0.7 + torch.rand(n, 3, 16, 16, generator=g) * 0.3) * 255)
    return ImageSet(images.to(torch.uint8), labels, list("abcd"), "coded", "train")


def test_one_protocol_gives_the_same_numbers_on_memory_and_on_streamed_data():
    """kNN, low-shot and retrieval read the scan's features whichever path runs: no second copy."""
    from sslray.data import MemorySource
    from sslray.eval import evaluate
    from sslray.models import build_trunk

    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    train, test = MemorySource(_coded(120, 0)), MemorySource(_coded(40, 1))
    got = {}
    for path in ("cached", "streamed"):
        cfg = EvalConfig(protocols=["knn", "lowshot"], layers=["conv1", "res5"], feature_dim=128, probes=path,
                         linear={"epochs": 2}, lowshot={"fractions": [0.5]})
        got[path] = evaluate(trunk, train, test, cfg).metrics
    assert got["cached"] == got["streamed"]
    assert set(got["cached"]) == {f"knn/{layer}/top1" for layer in ("conv1", "res5")} | {"lowshot/50pct/images"} | {
        f"lowshot/50pct/linear/{layer}/top1" for layer in ("conv1", "res5")}
    assert got["cached"]["lowshot/50pct/images"] == 60


def test_every_protocol_is_a_module_of_eval_protocols_with_typed_settings():
    from sslray.eval.protocols import discover

    found = discover()
    assert {"linear", "knn", "finetune", "lowshot", "retrieval", "invariance"} <= set(found)
    for name, cls in found.items():
        assert cls.__module__ == f"sslray.eval.protocols.{name}" and issubclass(cls.Settings, Strict)
    # EvalConfig keeps no protocol's settings: every old flat key is a protocol's to rename
    assert not any(old in EvalConfig.model_fields for cls in found.values() for old in cls.renamed)
