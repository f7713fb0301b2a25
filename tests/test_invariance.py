import torch
from torch import nn

from sslray.data import ImageSet
from sslray.eval.invariance import apply_variant, measure_invariance, ridge_r2
from sslray.eval.protocols.linear import LinearSettings
from sslray.eval.results import metrics_of
from sslray.models import build_trunk


def _measure(trunk, images, layers, transforms, epochs):
    """The invariance measures as MLflow keys (``invariance/<t>/<layer>/cosine``, ...)."""
    return metrics_of(measure_invariance(trunk, images, layers, 256, transforms, LinearSettings(epochs=epochs)))


def _images(n=120, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)
    return ImageSet(images, torch.arange(n) % 2, ["a", "b"], "noise", "test")


class RotationInvariantTrunk(nn.Module):
    """A trunk that averages a ResNet's globally pooled taps over the 4 rotations of its input:
    rotation-invariant by construction."""

    def __init__(self):
        super().__init__()
        self.base = build_trunk("resnet18", 0.125, image_size=24)

    def taps(self, x, layers):
        feats = [self.base.taps(torch.rot90(x, k, dims=(2, 3)), layers) for k in range(4)]
        return {layer: sum(f[layer].mean((2, 3), keepdim=True) for f in feats) / 4 for layer in layers}


def test_identity_transform_is_fully_invariant_and_its_probe_is_at_chance():
    torch.manual_seed(0)
    layers = ["conv1", "res5"]
    m = _measure(build_trunk("resnet18", 0.125, image_size=24), _images(200), layers, ["identity"], 10)
    assert m["invariance/identity/chance"] == 0.5
    for layer in layers:
        assert abs(m[f"invariance/identity/{layer}/cosine"] - 1.0) < 1e-5
        assert abs(m[f"invariance/identity/{layer}/probe_top1"] - 0.5) < 0.2  # 100 held-out images


def test_a_rotation_invariant_trunk_has_cosine_one_under_rotation_and_an_ordinary_one_does_not():
    torch.manual_seed(0)
    layers = ["res3", "res5"]
    images = _images(80)
    m = _measure(RotationInvariantTrunk(), images, layers, ["rotation"], 10)
    for layer in layers:
        assert abs(m[f"invariance/rotation/{layer}/cosine"] - 1.0) < 1e-4
        assert m[f"invariance/rotation/{layer}/probe_top1"] <= 0.5  # 4 classes, no trace of the angle
    plain = _measure(build_trunk("resnet18", 0.125, image_size=24), images, layers, ["rotation"], 10)
    assert plain["invariance/rotation/res3/cosine"] < 0.999


def test_transform_variants_have_the_stated_geometry():
    x = torch.rand(4, 3, 24, 24)
    v = torch.tensor([0, 1, 2, 3])
    r = apply_variant("rotation", x, v)
    for i in range(4):
        assert torch.equal(r[i], torch.rot90(x[i], i, dims=(1, 2)))
    j = apply_variant("jigsaw", x, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(j[0], x[0]) and torch.equal(j[2], x[2])  # 24 px = 3 cells of 8: unshuffled is the image
    cells = j[1].unfold(1, 8, 8).unfold(2, 8, 8).reshape(3, 9, 8, 8)
    orig = x[1].unfold(1, 8, 8).unfold(2, 8, 8).reshape(3, 9, 8, 8)
    matched = [next(i for i in range(9) if torch.equal(cells[:, c], orig[:, i])) for c in range(9)]
    assert sorted(matched) == list(range(9)) and matched != list(range(9))  # a true shuffle of the same cells
    assert torch.equal(apply_variant("color", x, torch.zeros(4, dtype=torch.long)), x)
    assert torch.equal(apply_variant("crop", x, torch.zeros(4, dtype=torch.long)), x)
    assert not torch.equal(apply_variant("crop", x, torch.ones(4, dtype=torch.long)), x)


def test_ridge_r2_finds_a_linear_factor_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=g)
    y = x[:, 3] * 2 - x[:, 7]
    assert ridge_r2(x[:200], y[:200], x[200:], y[200:]) > 0.95
    noise = torch.randn(300, generator=g)
    assert ridge_r2(x[:200], noise[:200], x[200:], noise[200:]) < 0.2


def test_factors_of_the_synthetic_data_are_probed_per_layer():
    from sslray.data import load_synthetic

    test = load_synthetic("test", 0, 32, 60)
    m = _measure(build_trunk("resnet18", 0.125, image_size=32), test, ["conv1"], ["color"], 3)
    assert set(m) == {"invariance/color/chance", "invariance/color/conv1/cosine", "invariance/color/conv1/probe_top1",
                      *(f"factor/{f}/conv1/r2" for f in ("hue", "x", "y", "angle", "scale"))}
    assert m["factor/hue/conv1/r2"] > 0.3  # early layers keep the colour
