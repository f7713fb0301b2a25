"""ResNet trunks with named stages as feature taps.

Built from torchvision's own ``BasicBlock`` / ``Bottleneck`` so that at ``width=1`` with the
ImageNet stem the modules and parameter names are exactly torchvision's ``resnet18`` /
``resnet50`` (their state dicts load). ``width`` scales every stage's channels, for CPU-scale
studies. Stage names follow the lectures and Goyal et al. 2019:

========  ===============================  ==========================  ========================
tap       module                           ResNet-18 (32 px, cifar)    ResNet-50 (224 px)
========  ===============================  ==========================  ========================
conv1     stem conv + BN + ReLU            64w x 32 x 32               64w x 112 x 112
res2      layer1                           64w x 32 x 32               256w x 56 x 56
res3      layer2                           128w x 16 x 16              512w x 28 x 28
res4      layer3                           256w x 8 x 8                1024w x 14 x 14
res5      layer4                           512w x 4 x 4                2048w x 7 x 7
========  ===============================  ==========================  ========================
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .. import LAYERS
from .norm import norm_layer

_SPECS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


def resolve_width(width: float | str) -> float:
    """``auto`` means the full width on a GPU and a quarter width on a CPU (see README)."""
    if width == "auto":
        return 1.0 if torch.cuda.is_available() else 0.25
    return float(width)


def resolve_stem(stem: str, image_size: int) -> str:
    if stem == "auto":
        return "cifar" if image_size < 64 else "imagenet"
    return stem


class StridedPointwise(nn.Conv2d):
    """A strided 1x1 convolution (a residual shortcut) computed as subsampling then a stride-1 1x1
    convolution: the same function and the same parameters. Why: oneDNN 3.12's AVX-512 kernel for
    the backward pass of a strided 1x1 convolution on channels-last input crashes the process
    (SIGSEGV) for some shapes, e.g. 8 -> 16 channels at 56 x 56 (a 1/8-width ResNet at 224 px)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sy, sx = self.stride
        return nn.functional.conv2d(x[:, :, ::sy, ::sx], self.weight, self.bias)


class Trunk(nn.Module):
    """A ResNet whose forward returns the requested stages by name.

    ``trunk(x)`` returns the globally average-pooled ``res5`` vector (what heads usually take);
    ``trunk.taps(x, ["res3", "res5"])`` returns a dict of feature maps and stops after the
    deepest requested stage.
    """

    def __init__(self, arch: str = "resnet18", width: float = 1.0, stem: str = "cifar", norm: str = "batch",
                 norm_splits: int = 4):
        super().__init__()
        block, blocks = _SPECS[arch]
        self.arch, self.width, self.stem = arch, width, stem
        # trunk.norm (see .norm); norm_splits: shuffle_batch's sub-batches on one worker
        self.norm, self.norm_splits = norm, norm_splits
        base = max(8, int(round(64 * width)))
        self.inplanes = base
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, base, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = norm_layer(norm)(base)
        # inputs arrive in [0, 1]; the trunk standardises them with the training set's statistics
        self.register_buffer("input_mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("input_std", torch.full((1, 3, 1, 1), 0.25))
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, base, blocks[0], 1)
        self.layer2 = self._make_layer(block, base * 2, blocks[1], 2)
        self.layer3 = self._make_layer(block, base * 4, blocks[2], 2)
        self.layer4 = self._make_layer(block, base * 8, blocks[3], 2)
        self.channels = {
            "conv1": base,
            "res2": base * block.expansion,
            "res3": base * 2 * block.expansion,
            "res4": base * 4 * block.expansion,
            "res5": base * 8 * block.expansion,
        }
        self.out_dim = self.channels["res5"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_input_stats(self, mean, std) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_std.copy_(torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1).clamp_min(1e-3))

    def _make_layer(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample, norm = None, norm_layer(self.norm)
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                StridedPointwise(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                norm(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=norm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=norm) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def taps(self, x: torch.Tensor, layers=LAYERS) -> dict[str, torch.Tensor]:
        """Feature maps of the named stages (``conv1`` is taken before the max-pool)."""
        wanted = set(layers)
        unknown = wanted - set(LAYERS)
        if unknown:
            raise KeyError(f"unknown layer(s) {sorted(unknown)}; taps are {LAYERS}")
        out: dict[str, torch.Tensor] = {}
        x = (x - self.input_mean) / self.input_std
        x = self.relu(self.bn1(self.conv1(x)))
        if "conv1" in wanted:
            out["conv1"] = x
        x = self.maxpool(x)
        for name, stage in zip(LAYERS[1:], (self.layer1, self.layer2, self.layer3, self.layer4)):
            if len(out) == len(wanted):
                break
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.taps(x, ["res5"])["res5"], 1), 1)

    @torch.no_grad()
    def tap_shapes(self, image_size: int) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of every tap for a square input of ``image_size`` pixels."""
        was = self.training
        self.eval()
        p = next(self.parameters())
        feats = self.taps(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
        self.train(was)
        return {k: tuple(v.shape[1:]) for k, v in feats.items()}


def build_trunk(arch: str = "resnet18", width: float | str = "auto", stem: str = "auto", image_size: int = 32,
                norm: str = "batch", norm_splits: int = 4) -> Trunk:
    return Trunk(arch, resolve_width(width), resolve_stem(stem, image_size), norm, norm_splits)


def pool_size(channels: int, spatial: int, feature_dim: int) -> int:
    """Side of the adaptive average pool that keeps ``C * s * s`` at most ``feature_dim``.

    Goyal et al. 2019 (sec. 4, linear classification) resize every ResNet-50 stage to about
    9k dimensions with average pooling (conv1 -> 64x12x12, res2 -> 256x6x6, res3 -> 512x4x4,
    res4 -> 1024x3x3, res5 -> 2048x2x2). We use that rule for any trunk and image size: the
    largest square ``s <= H`` with ``C*s*s <= feature_dim`` (at least 1), which reproduces those
    five sizes for ResNet-50 at 224 px and ``feature_dim=9216``.
    """
    s = int(math.isqrt(max(1, feature_dim // channels)))
    return max(1, min(spatial, s))


def pool_features(feat: torch.Tensor, feature_dim: int) -> torch.Tensor:
    """Flattened, average-pooled features of one stage, following :func:`pool_size`."""
    s = pool_size(feat.shape[1], feat.shape[-1], feature_dim)
    return torch.flatten(nn.functional.adaptive_avg_pool2d(feat, s), 1)
