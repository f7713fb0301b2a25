"""Issue 27: the negative-free methods (SimSiam, Barlow Twins, VICReg, BYOL, DINO): each loss against
a value worked out by hand, stop-gradients and EMA targets that take no gradient, the EMA
schedule, the global-batch losses under two processes, and one epoch of each through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, free_port

from sslray.cli import main
from sslray.components.negative_free import (barlow_twins_loss, cosine_rise, dino_loss, linear_warmup,
                                             negative_cosine, normalized_mse, vicreg_terms)
from sslray.methods import DataInfo, get_method
from sslray.models import build_trunk

METHODS = ["simsiam", "barlow", "vicreg", "byol", "dino"]


# ---- the losses, by hand ----------------------------------------------------------------------

def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_simsiam_negative_cosine_by_hand():
    p, z = [[1.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [1.0, 1.0]]
    # cos = 1 and 2 / (2 sqrt 2) = 1/sqrt 2
    assert float(negative_cosine(torch.tensor(p), torch.tensor(z))) == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2)


def test_byol_normalised_mse_by_hand():
    p, z = [[3.0, 4.0], [1.0, 0.0]], [[4.0, 3.0], [0.0, 2.0]]
    # |p/|p| - z/|z||^2: (0.6 - 0.8)^2 + (0.8 - 0.6)^2 = 0.08; orthogonal unit vectors: 2
    assert float(normalized_mse(torch.tensor(p), torch.tensor(z))) == pytest.approx((0.08 + 2) / 2, rel=1e-6)


def _bn(col):
    m = sum(col) / len(col)
    v = sum((x - m) ** 2 for x in col) / len(col)
    return [(x - m) / math.sqrt(v + 1e-5) for x in col]


Z1 = [[1.0, 0.0], [2.0, 1.0], [4.0, 5.0]]
Z2 = [[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]]


def test_barlow_twins_loss_by_hand():
    a = list(zip(*[_bn(c) for c in zip(*Z1)]))  # rows of the column-normalised embeddings
    b = list(zip(*[_bn(c) for c in zip(*Z2)]))
    c = [[sum(a[n][i] * b[n][j] for n in range(3)) / 3 for j in range(2)] for i in range(2)]
    want = (1 - c[0][0]) ** 2 + (1 - c[1][1]) ** 2 + 0.5 * (c[0][1] ** 2 + c[1][0] ** 2)
    assert float(barlow_twins_loss(torch.tensor(Z1), torch.tensor(Z2), 0.5)) == pytest.approx(want, rel=1e-5)
    # identical, decorrelated views: C is the identity, the loss 0
    same = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    assert float(barlow_twins_loss(same, same, 0.5)) == pytest.approx(0.0, abs=1e-4)


def test_vicreg_terms_by_hand():
    inv = sum((x - y) ** 2 for r1, r2 in zip(Z1, Z2) for x, y in zip(r1, r2)) / 6
    variance, covariance = 0.0, 0.0
    for z in (Z1, Z2):
        cols = list(zip(*z))
        means = [sum(c) / 3 for c in cols]
        var = [sum((x - m) ** 2 for x in c) / 2 for c, m in zip(cols, means)]  # unbiased
        variance += sum(max(0.0, 1 - math.sqrt(v + 1e-4)) for v in var) / 2 / 2
        cov01 = sum((x - means[0]) * (y - means[1]) for x, y in zip(*cols)) / 2
        covariance += 2 * cov01 ** 2 / 2  # two off-diagonal entries, over d = 2
    t = vicreg_terms(torch.tensor(Z1), torch.tensor(Z2))
    assert float(t["invariance"]) == pytest.approx(inv)
    assert float(t["covariance"]) == pytest.approx(covariance, rel=1e-5)
    # Z1's and Z2's columns all have std >= 1: no variance penalty; a shrunken copy pays it
    assert float(t["variance"]) == pytest.approx(variance, abs=1e-6) and variance == 0
    small = torch.tensor(Z1) * 0.1
    stds = [math.sqrt(sum((x - sum(c) / 3) ** 2 for x in c) / 2 * 0.01 + 1e-4) for c in zip(*Z1)]
    assert float(vicreg_terms(small, small)["variance"]) == pytest.approx(sum(1 - s for s in stds) / 2, rel=1e-5)


def test_barlow_and_vicreg_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # the losses compute in float32 (autocast-proof): compare autograd with float32 central differences
    for fn in (lambda x, y: barlow_twins_loss(x, y, 0.3), lambda x, y: sum(vicreg_terms(x, y).values())):
        loss = fn(a, b)
        ga, = torch.autograd.grad(loss, a)
        h = 2e-3  # small for the truncation error, large against the float32 rounding of the loss
        for i, j in ((0, 0), (3, 2), (5, 1)):
            e = torch.zeros_like(a)
            e[i, j] = h
            fd = (float(fn(a + e, b).detach()) - float(fn(a - e, b).detach())) / (2 * h)
            assert float(ga[i, j]) == pytest.approx(fd, rel=2e-2, abs=2e-3)


def test_dino_loss_by_hand():
    t = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    s = [torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    center = torch.tensor([0.5, 0.0])

    def soft(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    pt = [soft([(1 - 0.5) / 0.5, 0.0]), soft([(0 - 0.5) / 0.5, 1 / 0.5])]
    ls = [[math.log(q) for q in soft([x / 0.1 for x in v])] for v in ([0.0, 0.0], [2.0, 0.0], [0.0, 1.0])]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # teacher view i against every other student view
    want = sum(-sum(p * q for p, q in zip(pt[i], ls[j])) for i, j in pairs) / 4
    assert float(dino_loss(s, t, center, 0.1, 0.5)) == pytest.approx(want, rel=1e-5)


def test_schedules_at_start_middle_and_end():
    assert cosine_rise(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_rise(0.99, 50, 100) == pytest.approx(0.995)  # 1 - 0.01 (cos(pi/2) + 1) / 2
    assert cosine_rise(0.99, 100, 100) == pytest.approx(1.0) and cosine_rise(0.99, 120, 100) == pytest.approx(1.0)
    assert linear_warmup(0.04, 0.07, 0, 30) == pytest.approx(0.04)
    assert linear_warmup(0.04, 0.07, 15, 30) == pytest.approx(0.055)
    assert linear_warmup(0.04, 0.07, 30, 30) == pytest.approx(0.07)


# ---- the methods' steps -----------------------------------------------------------------------

def _method(name, info=None, **settings):
    torch.manual_seed(0)
    cls = get_method(name)
    s = cls.Settings(**settings)
    return cls(s, build_trunk("resnet18", 0.125, image_size=16), info or DataInfo(10, 40, 16, 8, epochs=2))


def _views(method, n=8):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(n, 3, v.size, v.size, generator=g) for v in method.input_views()]


def test_byol_ema_schedule_rises_from_ema_to_one_over_the_run():
    m = _method("byol", DataInfo(10, 200, 16, 50, epochs=2))  # 4 steps an epoch, 8 in all
    assert m.info.total_steps == 8
    assert m.tau(0) == pytest.approx(0.99) and m.tau(4) == pytest.approx(0.995) and m.tau(8) == pytest.approx(1.0)
    assert _method("byol", ema_schedule="constant", ema=0.9).tau(5) == pytest.approx(0.9)


class _DetachIn(torch.nn.Module):
    """A predictor that lets no gradient back into its input: what remains is the target branch's."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.detach())


@pytest.mark.parametrize("stop", [True, False])
def test_simsiam_stop_gradient_blocks_the_target_branch(stop):
    m = _method("simsiam", stop_gradient=stop, proj_dim=16, proj_hidden=16, pred_hidden=8)
    m.predictor = _DetachIn(m.predictor)
    m(_views(m), None, None)["loss"].backward()
    grads = [p.grad for p in m.trunk.parameters()]
    if stop:  # only the (cut) predictor path could reach the trunk: no gradient at all
        assert all(g is None or not g.any() for g in grads)
    else:  # without the stop-gradient the target branch carries gradient to the trunk
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_byol_target_takes_no_gradient_and_moves_by_one_minus_tau():
    m = _method("byol", proj_dim=16, proj_hidden=32, pred_hidden=32)
    m(_views(m), None, None)["loss"].backward()
    target = list(m.target_trunk.parameters()) + list(m.target_projection.parameters())
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trunk.parameters())
    with torch.no_grad():
        for p in m.trunk.parameters():
            p.add_(1.0)  # as an optimiser step would move it
    old = [p.clone() for p in m.target_trunk.parameters()]
    tau = m.tau()
    m.after_step()
    for o, p, t in zip(m.trunk.parameters(), old, m.target_trunk.parameters()):
        assert torch.allclose(t, tau * p + (1 - tau) * o, atol=1e-6)
    assert int(m.step) == 1 and "step" in m.state_dict() and "target_trunk.conv1.weight" in m.state_dict()


def test_dino_teacher_takes_no_gradient_and_views_have_two_sizes():
    m = _method("dino", out_dim=32, hidden=32, proj_dim=16, local_crops=2)
    sizes = [v.size for v in m.input_views()]
    assert sizes == [16, 16, 8, 8]
    out = m(_views(m), None, None)
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher_trunk.parameters())
    assert all(p.grad is None for p in m.teacher_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trunk.parameters())
    assert not torch.equal(m.center, torch.zeros_like(m.center))  # the centre moved towards the teacher's mean


# ---- two processes ----------------------------------------------------------------------------

def test_barlow_and_vicreg_over_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    import torch.multiprocessing as mp
    from _negative_free_workers import loss_worker

    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    mp.spawn(loss_worker, args=(2, free_port(), z1, z2, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"loss{k}.pt", weights_only=True) for k in (0, 1)]
    for name, fn in (("barlow", lambda a, b: barlow_twins_loss(a, b, 0.1)),
                     ("vicreg", lambda a, b: sum(vicreg_terms(a, b).values()))):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        single = fn(a, b)
        single.backward()
        # DDP averages the ranks' losses and gradients: that average is the one-process one on the union
        assert float((r[0][name]["loss"] + r[1][name]["loss"]) / 2) == pytest.approx(float(single.detach()), rel=1e-5)
        assert torch.allclose(torch.cat([r[0][name]["grad1"], r[1][name]["grad1"]]) / 2, a.grad, atol=1e-5), name
        assert torch.allclose(torch.cat([r[0][name]["grad2"], r[1][name]["grad2"]]) / 2, b.grad, atol=1e-5), name


def test_negative_free_methods_train_under_ddp_with_identical_targets(tmp_path):
    import torch.multiprocessing as mp
    from _negative_free_workers import fit_worker

    methods = [("byol", {"proj_hidden": 64, "pred_hidden": 64}), ("barlow", {"proj_hidden": 64, "proj_dim": 64}),
               ("vicreg", {"proj_hidden": 64, "proj_dim": 64}), ("simsiam", {"proj_hidden": 64, "proj_dim": 64}),
               ("dino", {"out_dim": 64, "hidden": 64, "proj_dim": 16, "local_crops": 2})]
    mp.spawn(fit_worker, args=(2, free_port(), methods, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"fit{k}.pt", weights_only=True) for k in (0, 1))
    for name, _ in methods:
        loss = r0[name]["metrics"]["loss"]
        assert math.isfinite(loss) and loss == r1[name]["metrics"]["loss"]
        for key, value in r0[name]["state"].items():
            assert torch.equal(value, r1[name]["state"][key]), (name, key)  # the target is the same on both ranks
    assert int(r0["byol"]["state"]["step"]) == 4 and "target_trunk.conv1.weight" in r0["byol"]["state"]
    assert "center" in r0["dino"]["state"]


# ---- the CLI ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_one_epoch_of_each_through_the_cli_logs_the_health_metrics(name, mlflow_runs):
    small = {"simsiam": ["proj_dim=256", "proj_hidden=256"], "barlow": ["proj_dim=256", "proj_hidden=256"],
             "vicreg": ["proj_dim=256", "proj_hidden=256"], "byol": ["proj_hidden=256", "pred_hidden=256"],
             "dino": ["out_dim=256", "hidden=256", "local_crops=2"]}[name]
    sets = [a for kv in small for a in ("--set", kv)]
    assert main(["train", "--method", name, "--epochs", "1", "--no-eval", *TINY, *sets]) == 0
    c, runs = mlflow_runs()
    m = runs[0].data.metrics
    assert runs[0].data.params["method"] == name
    assert math.isfinite(m["train/loss"]) and math.isfinite(m["train/embed_std"]) and m["train/embed_std"] > 0
    assert m["health/rank"] > 1 and m["health/std"] > 0  # one epoch: not collapsed
    if name == "vicreg":  # the raw spread against the variance term's gamma = 1, far from shrunk after one epoch
        assert 0.1 < m["train/embed_scale"] < 10
