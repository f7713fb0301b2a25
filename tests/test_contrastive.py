import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_probed, free_port

from sslray import LAYERS
from sslray.cli import main
from sslray.components.losses import embedding_std, info_nce, npid_nce_loss, nt_xent, pirl_nce_loss, soft_cross_entropy
from sslray.components.memory_bank import MemoryBank
from sslray.components.queue import KeyQueue, frozen_copy, momentum_update
from sslray.methods import DataInfo, get_method
from sslray.models import build_trunk
from sslray.components.augment import cut_views


def _sims(b=5, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, generator=g, dtype=torch.float64) * 2 - 1,
            torch.rand(b, k, generator=g, dtype=torch.float64) * 2 - 1)


# ---- losses against a direct evaluation of their formulas -------------------------------------

def test_npid_nce_loss_is_the_papers_binary_nce():
    pos, neg = _sims()
    tau, log_z, n = 0.07, 3.2, 1000
    k = neg.shape[1]
    total = 0.0
    for b in range(len(pos)):
        def h(s):
            p = math.exp(float(s) / tau) / math.exp(log_z)  # P(i|v) = exp(s / tau) / Z
            return p / (p + k / n)  # noise P_n = 1/n, k noise samples
        total += -math.log(h(pos[b])) - sum(math.log(1 - h(s)) for s in neg[b])
    assert float(npid_nce_loss(pos, neg, tau, log_z, n)) == pytest.approx(total / len(pos), rel=1e-9)


def test_pirl_nce_loss_is_the_lectures_formula():
    pos, neg = _sims()
    tau = 0.5
    total = 0.0
    for b in range(len(pos)):
        noise = sum(math.exp(float(s) / tau) for s in neg[b])

        def h(s):
            return math.exp(float(s) / tau) / (math.exp(float(s) / tau) + noise)
        total += -math.log(h(pos[b])) - sum(math.log(1 - h(s)) for s in neg[b])
    assert float(pirl_nce_loss(pos, neg, tau)) == pytest.approx(total / len(pos), rel=1e-9)


def test_pirl_nce_loss_gradient_matches_autograd_of_the_formula():
    torch.manual_seed(0)
    pos = torch.randn(5, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, n: pirl_nce_loss(p, n, 0.3), (pos, neg))

    def plain(p, n, tau):  # the formula, differentiated by autograd
        noise = torch.logsumexp(n / tau, 1, keepdim=True)
        return -(p / tau - torch.logaddexp(p / tau, noise[:, 0])
                 + (noise - torch.logaddexp(n / tau, noise)).sum(1)).mean()
    ours = torch.autograd.grad(pirl_nce_loss(pos, neg * 3, 0.07), (pos, neg))
    theirs = torch.autograd.grad(plain(pos, neg * 3, 0.07), (pos, neg))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(ours, theirs))


def test_npid_nce_loss_gradient_and_large_similarities():
    pos, neg = (t.requires_grad_() for t in _sims())
    assert torch.autograd.gradcheck(lambda p, n: npid_nce_loss(p, n, 0.07, 3.2, 1000), (pos, neg))
    big = npid_nce_loss(torch.tensor([1.0]), torch.tensor([[1.0, -1.0]]), 0.01, 0.0, 2)  # s / tau = 100
    assert torch.isfinite(big)


def test_info_nce_is_the_softmax_over_positive_and_negatives():
    pos, neg = _sims()
    tau = 0.2
    total = 0.0
    for b in range(len(pos)):
        e = math.exp(float(pos[b]) / tau)
        total += -math.log(e / (e + sum(math.exp(float(s) / tau) for s in neg[b])))
    assert float(info_nce(pos, neg, tau)) == pytest.approx(total / len(pos), rel=1e-9)


def test_nt_xent_is_simclr_eq_1_over_both_orders_of_each_pair():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    tau = 0.5
    z = [v for pair in zip(z1, z2) for v in pair]  # z_{2k}, z_{2k+1} are the two views of image k

    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    def ell(i, j):
        return -math.log(math.exp(sim(z[i], z[j]) / tau) / sum(math.exp(sim(z[i], z[k]) / tau)
                                                                for k in range(len(z)) if k != i))
    expected = sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(4)) / 8
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(expected, rel=1e-9)


def test_soft_cross_entropy_and_collapse_signal():
    logits, p = torch.randn(3, 4, dtype=torch.float64), torch.softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    q = torch.softmax(logits, 1)
    assert float(soft_cross_entropy(logits, p)) == pytest.approx(float(-(p * q.log()).sum(1).mean()), rel=1e-9)
    assert float(embedding_std(torch.ones(8, 5) * 3)) == 0.0  # every image on the same point
    assert 0.05 < float(embedding_std(torch.randn(4096, 128))) < 0.1  # ~ 1/sqrt(128) spread over the sphere


# ---- memory bank and queue --------------------------------------------------------------------

def test_memory_bank_update_is_a_momentum_average_renormalised():
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.5)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(10))
    before = bank.bank.clone()
    idx, feats = torch.tensor([2, 7]), torch.randn(2, 4) * 5
    bank.update(idx, feats)
    expected = F.normalize(0.5 * before[idx] + 0.5 * F.normalize(feats, dim=1), dim=1)
    assert torch.allclose(bank.bank[idx], expected, atol=1e-6)
    others = torch.tensor([i for i in range(10) if i not in (2, 7)])
    assert torch.equal(bank.bank[others], before[others])
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(10))
    bank0 = MemoryBank(10, 4, momentum=0.0)
    bank0.update(idx, feats)
    assert torch.allclose(bank0.bank[idx], F.normalize(feats, dim=1), atol=1e-6)  # momentum 0 = overwrite
    assert "bank" in bank.state_dict()  # checkpoints with the model


def test_memory_bank_samples_k_negatives_never_the_positive():
    torch.manual_seed(0)
    bank = MemoryBank(6, 3)
    idx = torch.tensor([0, 3, 5, 3])
    s = bank.sample(idx, 500)
    assert s.shape == (4, 500) and s.min() >= 0 and s.max() < 6
    for row, own in zip(s, idx):
        assert own not in row  # never the image itself
        assert set(row.tolist()) == set(range(6)) - {int(own)}  # but every other image
    assert bank.negatives(idx, 9).shape == (4, 9, 3)
    assert (bank.sample(idx, 500, exclude_self=False) == idx[:, None]).any()


def test_shared_negative_draw_scores_other_entries_uniformly():
    torch.manual_seed(0)
    bank = MemoryBank(6, 6)
    bank.bank.copy_(torch.eye(6))  # entry j is e_j: a dot product with a one-hot query names the entry
    idx = torch.tensor([0, 3, 5, 3])
    q = torch.arange(6.).repeat(4, 1)  # dot(q, e_j) = j: the score says which entry was drawn
    dots, again = bank.negative_dots([q, q * 2], idx, 3000)
    assert dots.shape == (4, 3000) and torch.equal(again, dots * 2)  # one draw serves every query
    for row, own in zip(dots, idx):
        counts = torch.bincount(row.long(), minlength=6)
        assert counts[own] == 0  # never the image itself
        others = counts[torch.arange(6) != own].float()
        assert (others - 600).abs().max() < 90  # uniform over the 5 others (expect 600 each)
    # columns without a clash are one draw shared by the rows; the per-row path is independent
    same = (dots == dots[:1]).all(0).float().mean()
    assert same > 0.4  # no clash with rows 0, 3 or 5: half the columns
    per_row, = bank.negative_dots([q], idx, 3000, shared=False)
    assert (per_row == per_row[:1]).all(0).float().mean() < 0.1
    assert all(own not in row.long() for row, own in zip(per_row, idx))


def test_shared_negatives_carry_gradients_to_the_query():
    bank = MemoryBank(50, 8)
    q = torch.randn(4, 8, requires_grad=True)
    dots, = bank.negative_dots([q], torch.arange(4), 200)
    dots.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_key_queue_is_fifo_and_wraps():
    q = KeyQueue(5, 2)
    keys = F.normalize(torch.randn(7, 2), dim=1)
    q.enqueue(keys[:3])
    q.enqueue(keys[3:])  # 4 more: slots 3, 4, 0, 1
    assert int(q.ptr) == 2
    assert torch.allclose(q.keys, torch.stack([keys[5], keys[6], keys[2], keys[3], keys[4]]))


def test_momentum_update_moves_the_key_encoder_by_one_minus_m():
    online = torch.nn.Linear(3, 2)
    target = frozen_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    old = target.weight.clone()
    momentum_update(online, target, 0.9)
    assert torch.allclose(target.weight, 0.9 * old + 0.1 * online.weight)



def test_bank_queue_and_nt_xent_under_two_gloo_processes_match_one_process(tmp_path):
    import torch.multiprocessing as mp
    from _ddp_workers import state_worker

    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(20, generator=g)
    batches = [(perm[i : i + 4], torch.randn(4, 4, generator=g)) for i in range(0, 12, 4)]
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    mp.spawn(state_worker, args=(2, free_port(), batches, z1, z2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["bank"], r1["bank"]) and torch.equal(r0["keys"], r1["keys"])

    torch.manual_seed(0)  # the one-process run fed the union of the shards
    bank, queue = MemoryBank(20, 4, momentum=0.5), KeyQueue(7, 4)
    for idx, feats in batches:
        bank.update(idx, feats)
        queue.enqueue(feats)
    assert torch.allclose(r0["bank"], bank.bank, atol=1e-6)
    assert not torch.allclose(bank.bank, MemoryBank(20, 4).bank)  # (the updates did something)
    assert torch.allclose(r0["keys"], queue.keys) and int(r0["ptr"]) == int(queue.ptr) == 12 % 7

    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    single = nt_xent(a, b, 0.5)
    single.backward()
    # DDP averages over ranks: the mean rank loss (and gradient) is the one-process one
    assert float((r0["loss"] + r1["loss"]) / 2) == pytest.approx(float(single.detach()), rel=1e-5)
    assert torch.allclose(torch.cat([r0["grad1"], r1["grad1"]]) / 2, a.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r0["grad2"], r1["grad2"]]) / 2, b.grad, atol=1e-6)


def test_methods_train_with_the_shared_loop_under_ddp(tmp_path):
    import torch.multiprocessing as mp
    from _ddp_workers import fit_worker

    # and issue 17's: CPC's negatives gathered across ranks, the PCD chains kept the same on every
    # rank, MoCo's shuffled batch norm across the two workers; issue 16's video methods on clips
    methods = [("npid", {}), ("pirl", {"negatives": 16}), ("simclr", {}), ("moco", {}),
               ("cpc", {"grid": 4, "steps": 3}), ("ebm", {"negatives": "pcd"}),
               ("simclr-shuffled", {"trunk.norm": "shuffle_batch"}), ("moco-shuffled", {"trunk.norm": "shuffle_batch"}),
               ("shuffle_learn", {}), ("tracking", {"patch": 12, "gap": 5}), ("avc", {"sound_seconds": 0.5})]
    mp.spawn(fit_worker, args=(2, free_port(), methods, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"fit{r}.pt", weights_only=True) for r in (0, 1))
    for name, _ in methods:
        loss = r0[name]["metrics"]["loss"]
        assert math.isfinite(loss) and loss == r1[name]["metrics"]["loss"]  # reduced over both ranks
        for key, value in r0[name]["buffers"].items():
            assert torch.equal(value, r1[name]["buffers"][key]), (name, key)  # bank / queue identical on both ranks
    assert set(r0["npid"]["buffers"]) == {"bank.bank"} and set(r0["moco"]["buffers"]) == {"queue.keys", "queue.ptr"}
    assert {k.split(".")[0] for k in r0["ebm"]["buffers"]} == {"chains"}  # the PCD chains, identical above


# ---- the methods' steps -----------------------------------------------------------------------

def _method(name, **settings):
    torch.manual_seed(0)
    cls = get_method(name)
    s = cls.Settings(**settings)
    info = DataInfo(10, 40, 32)
    cls.check(s, info)
    return cls(s, build_trunk("resnet18", 0.125, image_size=32), info)


@pytest.mark.parametrize("settings", [
    dict(transform="jigsaw"), dict(transform="rotation", similarity="l2"),
    dict(transform="jigsaw+rotation", loss="softmax"), dict(transform="rotation", lam=1.0)])
def test_pirl_step_gives_every_parameter_a_gradient_and_updates_the_bank(settings):
    m = _method("pirl", negatives=8, **settings)
    before = m.bank.bank.clone()
    idx = torch.tensor([1, 5, 9, 30])
    out = m([torch.rand(4, 3, 32, 32)], None, idx)
    out["loss"].backward()
    assert math.isfinite(float(out["loss"].detach())) and 0 <= float(out["acc"]) <= 1
    # DDP (find_unused_parameters=False) needs every parameter in the graph
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    changed = (m.bank.bank != before).any(1)
    assert changed[idx].all() and changed.sum() == 4


def test_pirl_similarities_are_cosine_and_negative_squared_distance():
    m = _method("pirl", negatives=8, similarity="l2", transform="rotation")
    a, bank = torch.randn(3, 128), F.normalize(torch.randn(3, 5, 128), dim=-1)

    def sim(a, entries):  # s from the dot products of query(a), as forward computes it
        return m.similarity(a, torch.einsum("bd,b...d->b...", m.query(a), entries))

    assert torch.allclose(sim(a, bank), -((a[:, None] - bank) ** 2).sum(-1), atol=1e-4)
    assert torch.allclose(sim(a, bank[:, 0]), -((a - bank[:, 0]) ** 2).sum(-1), atol=1e-4)
    m.settings = m.Settings(negatives=8, similarity="cosine", transform="rotation")
    assert torch.allclose(sim(a, bank), F.cosine_similarity(a[:, None], bank, dim=-1), atol=1e-5)


def test_npid_estimates_z_on_the_first_batch_then_follows_it_and_moco_keys_follow_the_queries():
    for momentum in (1.0, 0.99):  # 1 = the paper's Z, estimated once
        m = _method("npid", negatives=10, z_momentum=momentum)
        assert torch.isnan(m.log_z)
        m([torch.rand(4, 3, 32, 32)], None, torch.arange(4))
        z = float(m.log_z)
        assert math.isfinite(z)
        with torch.no_grad():  # the bank now holds this image's embedding: Z's estimate on it is larger
            m.bank.bank.copy_(m.bank.bank[0].clone())
        m([torch.rand(4, 3, 32, 32)], None, torch.arange(4, 8))
        assert (float(m.log_z) == z) if momentum == 1 else (float(m.log_z) > z)

    moco = _method("moco", queue=16)
    assert moco.queue.size == 16 and not any(p.requires_grad for p in moco.key_trunk.parameters())
    moco([torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)], None, torch.arange(4))
    assert int(moco.queue.ptr) == 4
    with torch.no_grad():
        moco.trunk.conv1.weight.add_(1.0)
    old = moco.key_trunk.conv1.weight.clone()
    moco.after_step()
    assert torch.allclose(moco.key_trunk.conv1.weight, 0.999 * old + 0.001 * moco.trunk.conv1.weight, atol=1e-6)


@pytest.mark.parametrize("name,settings", [("npid", dict(negatives=8)), ("pirl", dict(negatives=8)),
                                           ("simclr", {}), ("moco", dict(queue=8))])
def test_steps_run_under_bfloat16_autocast_as_on_a_gpu(name, settings):
    m = _method(name, **settings).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's CUDA autocast, on the CPU
        out = m(cut_views(x, m.input_views()), None, torch.arange(4))
    out["loss"].backward()
    m.after_step()
    assert out["loss"].dtype == torch.float32 and math.isfinite(float(out["loss"].detach()))
    for buf in ("bank.bank", "queue.keys"):
        if buf in m.state_dict():
            assert m.state_dict()[buf].dtype == torch.float32


def test_npid_z_is_a_moving_average_of_n_mean_exp_computed_in_log_space():
    m = _method("npid", negatives=10, z_momentum=0.9, temperature=0.005)
    n = m.info.num_train
    m._track_z(torch.full((4, 10), 0.5, dtype=torch.float64))
    assert float(m.log_z) == pytest.approx(0.5 / 0.005 + math.log(n))
    # s / tau = 180: exp overflows float32 (the estimate was inf before it was taken in log space)
    m._track_z(torch.full((4, 10), 0.9))
    want = math.log(0.9 * math.exp(100) + 0.1 * math.exp(180)) + math.log(n)
    assert float(m.log_z) == pytest.approx(want, rel=1e-6)


def test_npid_nce_short_run_loss_falls_and_embeddings_do_not_collapse():
    """Issue 14: with Z estimated once, on the first batch against the random initial bank, Z was
    e^5-e^9 too small as soon as the bank held the trunk's embeddings; the NCE noise term then
    outweighed the positive hundreds of times and the loss rose (here 230 -> 1,453 in five epochs,
    embedding std 0.023 in the last two) instead of falling."""
    from sslray.train.build import build_config, build_run
    from sslray.train.loop import fit

    cfg = build_config("npid", {"data.limit": 512, "data.test_limit": 100, "trunk.width": 0.125,
                                "optim.batch_size": 64, "epochs": 5})
    assert cfg.settings["loss"] == "nce"
    built = build_run(cfg)
    hist = []
    fit(cfg, built.method, built.train, on_epoch=lambda epoch, metrics, state: hist.append(metrics), progress=False)
    loss = [h["loss"] for h in hist]
    assert loss[-1] < 0.7 * loss[0] and loss[-1] < loss[-2] < loss[-3], loss
    collapse = 0.3 / math.sqrt(built.method.settings.embed_dim)  # spread over the sphere: 1 / sqrt(D)
    assert all(h["embed_std"] > collapse for h in hist[-2:]), [h["embed_std"] for h in hist]
    assert all(math.isfinite(h["log_z"]) for h in hist)


# ---- end to end through the CLI ---------------------------------------------------------------

@pytest.mark.parametrize("method,extra", [
    ("npid", []), ("pirl", []), ("simclr", ["--set", "eval.protocols=[linear,knn,invariance]",
                                                "--set", "eval.invariance.transforms=[rotation,jigsaw,color,crop]"]), ("moco", [])])
def test_method_cli_run_logs_every_layer(method, extra, mlflow_runs):
    assert main(["train", "--method", method, "--epochs", "1", *TINY, *extra]) == 0
    _, runs = mlflow_runs()
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["method"] == method
    m = run.data.metrics
    assert_probed(m, [f"transfer/{layer}/top1" for layer in LAYERS])
    assert math.isfinite(m["train/loss"]) and m["train/embed_std"] > 0  # the collapse signal is logged
    if method in ("npid", "pirl"):
        assert run.data.params["method.negatives"] == "199"  # the paper's K capped at N - 1 = 199
    if extra:
        for t in ("rotation", "jigsaw", "color", "crop"):
            for layer in LAYERS:
                assert -1.0 <= m[f"invariance/{t}/{layer}/cosine"] <= 1.0 + 1e-6
                assert 0.0 <= m[f"invariance/{t}/{layer}/probe_top1"] <= 1.0
        assert m["invariance/rotation/chance"] == 0.25
        for f in ("hue", "x", "y", "angle", "scale"):
            assert f"factor/{f}/res5/r2" in m


BAD = {
    "npid K > N-1": (["--method", "npid", "--set", "negatives=200"], "negatives=200"),
    "pirl K > N-1": (["--method", "pirl", "--set", "negatives=4096"], "negatives=4096"),
    "moco queue > N-1": (["--method", "moco", "--set", "queue=500"], "queue=500"),
    "tau = 0": (["--method", "npid", "--set", "temperature=0"], "temperature"),
    "tau < 0": (["--method", "pirl", "--set", "temperature=-0.1"], "temperature"),
    "simclr tau < 0": (["--method", "simclr", "--set", "temperature=-1"], "temperature"),
    "lambda > 1": (["--method", "pirl", "--set", "lam=1.5"], "lam"),
    "lambda < 0": (["--method", "pirl", "--set", "lam=-0.1"], "lam"),
    "unknown transform": (["--method", "pirl", "--set", "transform=blur"], "transform"),
    "unknown invariance": (["--method", "rotation", "--set", "eval.invariance.transforms=[rotation,bogus]"], "'bogus'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_before_mlflow(case, capsys):
    args, expected = BAD[case]
    assert main(["train", *args, "--set", "data.limit=200", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and expected in err
    assert not Path("mlflow.db").exists() and not Path("runs").exists()
