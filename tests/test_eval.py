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
