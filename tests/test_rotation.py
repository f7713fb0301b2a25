import math

import torch

from sslray.train.build import build_config
from sslray.methods import DataInfo, get_method
from sslray.methods.rotation import rotate_batch
from sslray.models import build_trunk


def test_rotation_labels_match_the_geometry_of_each_angle():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 0] = 1.0  # a marker in the top-left corner
    rotated, labels = rotate_batch(x)
    assert labels.tolist() == [0, 1, 2, 3]
    corner = {tuple(torch.nonzero(img[0])[0].tolist()): int(k) for img, k in zip(rotated, labels)}
    # counter-clockwise by k*90 degrees: top-left -> bottom-left -> bottom-right -> top-right
    assert corner == {(0, 0): 0, (4, 0): 1, (4, 4): 2, (0, 4): 3}


def test_rotation_batch_is_rotation_major_and_invertible():
    x = torch.rand(3, 3, 8, 8)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 3, 8, 8) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        assert torch.equal(torch.rot90(rotated[3 * k : 3 * k + 3], -k, dims=(2, 3)), x)


def test_rotation_step_starts_near_chance_and_learns_a_fixed_batch():
    torch.manual_seed(0)
    cfg = build_config("rotation")
    method = get_method("rotation")(get_method("rotation").Settings(**cfg.settings),
                                    build_trunk("resnet18", 0.125, image_size=32), DataInfo(10, 16, 32))
    x = torch.rand(16, 3, 32, 32)
    out = method([x], torch.zeros(16, dtype=torch.long), torch.arange(16))
    assert abs(float(out["loss"].detach()) - math.log(4)) < 0.5
    opt = torch.optim.Adam(method.parameters(), 1e-3)
    for _ in range(40):
        out = method([x], None, None)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(out["acc"]) > 0.9  # 4 rotations of 16 random images can be memorised
