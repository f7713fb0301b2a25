import pytest
import torch

from sslray.config import EvalConfig
from sslray.data import ImageSet
from sslray.eval import knn_top1, linear_probe, probe_layers, probe_protocol
from sslray.models import build_trunk


def _label_coded_images(n: int, seed: int) -> ImageSet:
    """Images whose colour encodes the class: any trunk that keeps colour encodes the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    hue = torch.stack([labels / 9, 1 - labels / 9, (labels % 3) / 2], 1)
    noise = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    images = ((hue[:, :, None, None] * 0.7 + noise) * 255).to(torch.uint8)
    return ImageSet(images, labels, [str(i) for i in range(10)], "coded", "train")


def test_probes_on_a_trunk_that_encodes_the_label_beat_chance_and_shuffled_labels_do_not():
    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    train, test = _label_coded_images(400, 0), _label_coded_images(200, 1)
    cfg = EvalConfig(probe_epochs=20, feature_dim=512, layers=["conv1", "res3", "res5"])
    m = probe_layers(trunk, train, test, cfg)
    assert set(m) == {f"{kind}/{layer}/top1" for kind in ("transfer", "knn") for layer in cfg.layers}
    assert m["transfer/conv1/top1"] > 0.9 and m["knn/conv1/top1"] > 0.9  # chance is 0.1
    shuffled = ImageSet(train.images, train.labels[torch.randperm(400)], train.classes, "x", "train")
    m2 = probe_layers(trunk, shuffled, test, EvalConfig(probe_epochs=20, feature_dim=512, layers=["conv1"]))
    assert m2["transfer/conv1/top1"] < 0.35


def test_knn_is_the_weighted_vote_of_the_nearest_neighbours():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_top1(train, labels, test, torch.tensor([0, 1]), 2, k=1) == 1.0
    # with k=3 both test points see all neighbours; the exp(s/0.07) weights still favour the nearest
    assert knn_top1(train, labels, test, torch.tensor([0, 1]), 2, k=3) == 1.0
    # a very high temperature makes it a plain majority vote: class 0 wins everywhere
    assert knn_top1(train, labels, test, torch.tensor([0, 1]), 2, k=3, temperature=1e6) == 0.5


def test_linear_probe_separates_separable_features():
    torch.manual_seed(0)
    x = torch.randn(1300, 5)
    y = (x[:, 0] > 0).long()
    assert linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], 2, epochs=30) > 0.95


def test_probe_protocol_states_pooling_and_dims():
    trunk = build_trunk("resnet18", 0.25, image_size=32)
    proto = probe_protocol(trunk, 32, EvalConfig())
    assert proto["probe/conv1/pool"] == "avg 16x32x32 -> 16x24x24" and proto["probe/conv1/dim"] == 9216
    assert proto["probe/res5/dim"] == 128 * 4 * 4


def test_health_tells_a_spread_representation_from_a_collapsed_one():
    import math

    from sslray.eval.health import collapse, effective_rank, representation_health

    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    h = representation_health(spread, spread)
    assert 0.9 < h["health/std"] < 1.1  # isotropic: std of normalised features ~ 1/sqrt(D)
    assert 40 < h["health/rank"] <= 64 and h["health/alignment"] == pytest.approx(0, abs=1e-6)
    assert h["health/uniformity"] < -3  # pairs far apart on the sphere
    one_point = torch.ones(512, 64) + 1e-6 * torch.randn(512, 64, generator=g)
    c = representation_health(one_point, one_point.flip(0))
    assert c["health/std"] < 1e-3 and c["health/rank"] < 1.01 and c["health/uniformity"] > -1e-3
    assert effective_rank(torch.eye(8)) == pytest.approx(8, rel=1e-6)  # equal singular values: full rank
    two = torch.cat([torch.randn(256, 1, generator=g) * torch.eye(64)[0], torch.randn(256, 1, generator=g) * torch.eye(64)[1]])
    assert effective_rank(two) == pytest.approx(2, rel=0.1)  # dimensional collapse onto 2 directions
    # the rule: rank below eval.collapse_rank, or an embedding's std x sqrt(D) below eval.collapse_std
    assert collapse(c, None, 1.5, 0.1).startswith("effective rank of pooled res5 features 1.00")
    assert collapse(h, 128, 1.5, 0.1) is None
    assert "std of the normalised embeddings" in collapse({**h, "train/embed_std": 0.005}, 128, 1.5, 0.1)
    assert collapse({**h, "train/embed_std": 0.5 / math.sqrt(128)}, 128, 1.5, 0.1) is None
