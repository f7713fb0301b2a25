"""CPC, the denoising autoencoder, the energy-based model and trunk.norm: geometry, dynamics and
buffers checked against what they should be, on tiny trunks (issue 17)."""

import pytest
import torch

from sslray.components.langevin import langevin
from sslray.components.replay_buffer import ReplayBuffer
from sslray.components.shuffle import shuffled
from sslray.methods import DataInfo, get_method
from sslray.methods.cpc import patch_grid, positive_index
from sslray.methods.dae import corrupt
from sslray.models import build_trunk


def _position_image(n: int = 2, size: int = 32) -> torch.Tensor:
    """Pixel (r, c) of image b holds 1000 b + 32 r + c in every channel."""
    r = torch.arange(size)
    img = (r[:, None] * size + r[None, :]).float()
    return torch.stack([img + 1000 * b for b in range(n)])[:, None].expand(n, 3, size, size)


def test_cpc_positives_are_the_patches_k_rows_below():
    g, patch, stride, n = 7, 8, 4, 2
    x = _position_image(n)
    patches = patch_grid(x, g, patch, stride)  # (N, 49, 3, 8, 8)
    assert patches.shape == (n, g * g, 3, patch, patch)
    # patch (i, j) starts at pixel (4 i, 4 j): the 7x7 lattice of 8-px patches at stride 4 spans all 32 px
    assert patches[1, 3 * g + 5, 0, 0, 0] == 1000 + 32 * 12 + 20
    assert torch.equal(patch_grid(_position_image(1, 36), g, patch, stride)[0, 0, 0, 0, :2], torch.tensor([74., 75.]))
    flat = patches.flatten(0, 1)
    for k in (2, 5):
        target = positive_index(n, g, k)
        assert len(target) == n * (g - k) * g
        # prediction q = (image b, row i, column j) in order; its positive starts k * stride rows lower
        q = torch.arange(len(target))
        b, i, j = q // ((g - k) * g), q % ((g - k) * g) // g, q % g
        own_corner = 1000 * b + 32 * stride * i + stride * j
        assert torch.equal(flat[target, 0, 0, 0], (own_corner + 32 * stride * k).float())
    assert torch.equal(positive_index(1, g, 2, offset=98)[:2], torch.tensor([98 + 14, 98 + 15]))


def test_cpc_negatives_settings_mask_the_candidates():
    info = DataInfo(10, 40, 32, 8)
    cls = get_method("cpc")
    for negatives, allowed in (("same_image", 49), ("other_images", 49 + 1), ("all", 98)):
        m = cls(cls.Settings(negatives=negatives), build_trunk("resnet18", 0.125, image_size=32), info)
        target = positive_index(2, 7, 2)
        keep = m.allowed(2, 7, 2, 98, 0, target)
        assert keep[torch.arange(len(target)), target].all()  # the positive always
        assert (keep.sum(1) == allowed).all(), negatives


def test_cpc_step_trains_and_its_context_sees_no_row_below():
    cls = get_method("cpc")
    m = cls(cls.Settings(grid=4, steps=2, min_step=1), build_trunk("resnet18", 0.125, image_size=16), DataInfo(10, 8, 16))
    out = m([torch.rand(4, 3, 16, 16)], None, torch.arange(4))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in m.parameters() if p.requires_grad)
    z = torch.randn(1, m.trunk.out_dim, 4, 4)
    changed = z.clone()
    changed[:, :, 2:] += 1  # rows 2 and 3 change: context of rows 0 and 1 must not
    a, b = m.context(z), m.context(changed)
    assert torch.allclose(a[:, :, :2], b[:, :, :2]) and not torch.allclose(a[:, :, 2:], b[:, :, 2:])


@pytest.mark.parametrize("kind", ["gaussian", "mask", "salt_pepper"])
def test_dae_corruption_has_its_level(kind):
    torch.manual_seed(0)
    x = torch.full((8, 3, 32, 32), 0.5)
    y = corrupt(x, kind, 0.3)
    assert y.min() >= 0 and y.max() <= 1
    if kind == "gaussian":
        assert abs(float((y - x).std()) - 0.3) < 0.03
    elif kind == "mask":
        assert abs(float((y == 0).float().mean()) - 0.3) < 0.02 and set(y.unique().tolist()) == {0.0, 0.5}
    else:
        hit = y != 0.5
        assert abs(float(hit.float().mean()) - 0.3) < 0.02 and abs(float(y[hit].mean()) - 0.5) < 0.05


def test_langevin_steps_lower_the_energy_on_average():
    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16, norm="group")
    head = torch.nn.Linear(trunk.out_dim, 1)

    def energy(v):
        return head(trunk(v)).squeeze(1)

    x = torch.rand(16, 3, 16, 16)
    chains, start = langevin(energy, x, steps=5, step_size=10.0, noise=0.005, clip=0.01)
    assert torch.allclose(start, energy(x).detach())
    with torch.no_grad():
        after = energy(chains)
    assert chains.min() >= 0 and chains.max() <= 1 and not torch.equal(chains, x)
    assert float(after.mean()) < float(start.mean()) - 1e-3
    assert float((after < start).float().mean()) > 0.8


def test_pcd_buffer_persists_across_steps_and_resets_at_its_rate():
    torch.manual_seed(0)
    buf = ReplayBuffer(1000, (3, 4, 4), reset=0.0)
    slots, starts, fresh = buf.draw(50)
    assert len(set(slots.tolist())) == 50 and not fresh.any()
    assert torch.equal(starts, buf.chains[slots].float())  # reset 0: the chains as kept
    before = buf.chains.clone()
    new = torch.rand(50, 3, 4, 4)
    buf.store(slots, new)
    assert torch.allclose(buf.chains[slots].float(), new, atol=1e-3)  # float16
    others = torch.ones(1000, dtype=torch.bool)
    others[slots] = False
    assert torch.equal(buf.chains[others], before[others])
    assert "chains" in dict(buf.named_buffers())  # checkpoints with the model
    buf.reset = 0.2
    counts = [buf.draw(100)[2].float().mean() for _ in range(50)]
    assert abs(float(torch.stack(counts).mean()) - 0.2) < 0.03
    slots, starts, fresh = buf.draw(100)
    kept = buf.chains[slots].float()
    assert torch.equal(starts[~fresh], kept[~fresh]) and not torch.equal(starts[fresh], kept[fresh])


def test_ebm_pcd_step_writes_its_negatives_back_and_logs_energies():
    cls = get_method("ebm")
    info = DataInfo(10, 64, 16, 8)
    m = cls(cls.Settings(langevin_steps=2), build_trunk("resnet18", 0.125, image_size=16), info)
    assert m.chains.size == 64
    energies, drawn = [], []  # every energy the step computes, and the chains it drew
    energy_of, draw = m.energy_of, m.chains.draw
    m.energy_of = lambda f: energies.append(energy_of(f)) or energies[-1]
    m.chains.draw = lambda n: drawn.append(draw(n)) or drawn[-1]
    out = m([torch.rand(8, 3, 16, 16)], None, torch.arange(8))
    out["loss"].backward()
    assert {"energy_data", "energy_neg", "energy_start", "acc"} <= set(out)
    # two Langevin steps on the chains, then one pass over images and negatives together
    assert [len(e) for e in energies] == [8, 8, 16] and m.trunk.conv1.weight.grad is not None
    e_pos, e_neg = energies[-1].detach().chunk(2)
    assert float(out["energy_data"]) == pytest.approx(float(e_pos.mean()))
    assert float(out["energy_neg"]) == pytest.approx(float(e_neg.mean()))
    assert float(out["energy_start"]) == pytest.approx(float(energies[0].detach().mean()))
    assert float(out["acc"]) == float((e_pos < e_neg).float().mean()) and float(out["acc"] * 8).is_integer()
    assert float(out["loss"].detach()) == pytest.approx(float(e_pos.mean() - e_neg.mean() + e_pos.pow(2).mean()
                                                     + e_neg.pow(2).mean()), rel=1e-5)  # alpha 1
    (slots, _, _), = drawn  # the negatives went back to the slots they were drawn from
    assert torch.allclose(m.chains.chains[slots].float(), m.last_negatives.float(), atol=1e-3)
    fig = m.figures()["negatives.png"]
    assert len([a for a in fig.axes if a.images]) == 8


def test_group_norm_has_no_cross_sample_dependence():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    other = x.clone()
    other[2] = torch.rand(3, 16, 16)
    for norm, independent in (("group", True), ("batch", False)):
        t = build_trunk("resnet18", 0.125, image_size=16, norm=norm).train()
        a, b = t.taps(x), t.taps(other)
        rest = [0, 1, 3, 4, 5]
        for layer in a:
            assert torch.allclose(a[layer][rest], b[layer][rest], atol=1e-6) == independent, (norm, layer)
            assert not torch.allclose(a[layer][2], b[layer][2])


def test_shuffle_batch_normalises_random_sub_batches_and_restores_the_order():
    torch.manual_seed(0)
    t = build_trunk("resnet18", 0.125, image_size=16, norm="shuffle_batch", norm_splits=2).train()
    ref = build_trunk("resnet18", 0.125, image_size=16, norm="batch").train()
    ref.load_state_dict(t.state_dict())  # the same parameters and buffers as a batch-norm trunk
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(1)
    out = shuffled(t, x)
    torch.manual_seed(1)
    perm = torch.randperm(8)
    halves = torch.cat([ref(x[perm[:4]]), ref(x[perm[4:]])])  # each half with its own statistics
    assert torch.allclose(out, halves[torch.argsort(perm)], atol=1e-5)
    assert not torch.allclose(out, ref(x), atol=1e-3)
    ref.load_state_dict(t.state_dict())
    t.eval(), ref.eval()
    assert torch.allclose(shuffled(t, x), ref(x), atol=1e-5)  # evaluation: running statistics, no shuffle
