import pytest
import torch
import torchvision

from sslray.models import build_trunk, pool_features, pool_size


def test_resnet18_cifar_taps_have_documented_shapes():
    t = build_trunk("resnet18", width=0.25, stem="auto", image_size=32)
    feats = t.taps(torch.rand(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "conv1": (2, 16, 32, 32), "res2": (2, 16, 32, 32), "res3": (2, 32, 16, 16),
        "res4": (2, 64, 8, 8), "res5": (2, 128, 4, 4)}
    assert t(torch.rand(2, 3, 32, 32)).shape == (2, t.out_dim) == (2, 128)


def test_resnet50_imagenet_stem_taps():
    t = build_trunk("resnet50", width=0.125, stem="auto", image_size=64)
    assert t.stem == "imagenet"
    assert t.tap_shapes(64) == {"conv1": (8, 32, 32), "res2": (32, 16, 16), "res3": (64, 8, 8),
                                "res4": (128, 4, 4), "res5": (256, 2, 2)}


def test_pooling_reproduces_goyal_2019_sizes_for_resnet50_at_224():
    # (channels, spatial) of ResNet-50 stages at 224 px -> pooled side (Goyal et al. 2019)
    table = {"conv1": (64, 112, 12), "res2": (256, 56, 6), "res3": (512, 28, 4), "res4": (1024, 14, 3), "res5": (2048, 7, 2)}
    for layer, (c, h, side) in table.items():
        assert pool_size(c, h, 9216) == side, layer
    f = pool_features(torch.rand(3, 64, 112, 112), 9216)
    assert f.shape == (3, 64 * 12 * 12)


def test_full_width_imagenet_trunk_matches_torchvision_parameters():
    ours = build_trunk("resnet18", width=1.0, stem="imagenet", image_size=224).state_dict()
    ref = torchvision.models.resnet18().state_dict()
    shared = {k: v.shape for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: ours[k].shape for k in shared} == shared


def test_taps_stop_after_the_deepest_requested_stage():
    t = build_trunk("resnet18", width=0.125, image_size=32)
    called = []
    t.layer3.register_forward_hook(lambda *a: called.append("layer3"))
    out = t.taps(torch.rand(1, 3, 32, 32), ["conv1", "res3"])
    assert set(out) == {"conv1", "res3"} and called == []
    with pytest.raises(KeyError):
        t.taps(torch.rand(1, 3, 32, 32), ["fc7"])


def test_width_auto_is_quarter_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("GPU host: auto width is 1.0")
    assert build_trunk("resnet18", "auto", image_size=32).width == 0.25


def test_strided_shortcuts_compute_a_strided_1x1_convolution_and_survive_onednn_at_224px():
    import subprocess
    import sys

    from sslray.models.trunk import StridedPointwise

    conv = torch.nn.Conv2d(8, 16, 1, stride=2, bias=False)
    ours = StridedPointwise(8, 16, 1, 2, bias=False)
    ours.load_state_dict(conv.state_dict())  # the same parameters, by name and shape
    x = torch.rand(3, 8, 57, 57)
    assert torch.allclose(ours(x), conv(x), atol=1e-6)
    # the shape that crashed oneDNN's channels-last backward (SIGSEGV): in a child process
    code = ("import torch; from sslray.models import build_trunk; "
            "t = build_trunk('resnet18', 0.125, 'imagenet', 224).to(memory_format=torch.channels_last); "
            "x = torch.rand(32, 3, 224, 224).contiguous(memory_format=torch.channels_last); t(x).sum().backward()")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300).returncode == 0
