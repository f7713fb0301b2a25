import pytest
import torch

from sslray.config import EvalConfig
from sslray.data import ImageSet
from sslray.eval import Evaluation, evaluate, knn_top1, linear_probe, probe_layers, probe_protocol
from sslray.eval.probes import LinearHeads, carve, tuned_linear_probe
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
    cfg = EvalConfig(linear={"epochs": 20}, feature_dim=512, layers=["conv1", "res3", "res5"])
    grid = {}
    m = probe_layers(trunk, train, test, cfg, grid=grid)
    assert set(m) == {f"{kind}/{layer}/top1" for kind in ("transfer", "knn", "untuned") for layer in cfg.layers} | {
        f"transfer/{layer}/{k}" for layer in cfg.layers for k in ("lr", "weight_decay", "val_top1", "lr_at_edge")}
    assert set(grid) == set(cfg.layers) and len(grid["res3"]["heads"]) == 7  # fixed + 3 lrs x 2 weight decays
    for layer in cfg.layers:  # the reported head is the one best on validation, and its lr is logged
        best = max(grid[layer]["heads"], key=lambda h: h["val_top1"])
        assert m[f"transfer/{layer}/val_top1"] == best["val_top1"]
        assert m[f"transfer/{layer}/lr"] == grid[layer]["chosen"]["lr"]
    assert m["transfer/conv1/top1"] > 0.9 and m["knn/conv1/top1"] > 0.9  # chance is 0.1
    shuffled = ImageSet(train.images, train.labels[torch.randperm(400)], train.classes, "x", "train")
    m2 = probe_layers(trunk, shuffled, test, EvalConfig(linear={"epochs": 20, "tune": False}, feature_dim=512,
                                                        layers=["conv1"]))
    assert set(m2) == {"transfer/conv1/top1", "knn/conv1/top1"}  # untuned: one head, no grid
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


def test_carve_holds_out_a_seeded_stratified_share_of_every_class():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 1)
    tr, va = carve(labels, 0.1, seed=0)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(81))  # disjoint, together the whole split
    assert torch.bincount(labels[va], minlength=3).tolist() == [5, 3, 0]  # a lone image stays in training
    assert torch.equal(va, carve(labels, 0.1, seed=0)[1]) and not torch.equal(va, carve(labels, 0.1, seed=1)[1])


def test_heads_trained_side_by_side_match_torch_adamw_head_by_head():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 20, generator=g), torch.randint(0, 3, (300,), generator=g)
    grid = [(0.01, 5e-4), (0.5, 0.05)]
    torch.manual_seed(1)
    heads = LinearHeads(20, 3, grid)
    start = {k: v.clone() for k, v in heads.state_dict().items()}
    opt = heads.optimizer(steps=8)
    # the reference: each head alone, as a torch.nn.Linear under torch's AdamW and CosineAnnealingLR
    refs = []
    for h, (lr, wd) in enumerate(grid):
        lin = torch.nn.Linear(20, 3)
        lin.weight.data, lin.bias.data = start["weight"][h].clone(), start["bias"][h].clone()
        ref_opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=wd)
        refs.append((lin, ref_opt, torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, 8)))
    for s in range(0, 300, 64):  # 5 steps of the 8 planned
        xb, yb = x[s : s + 64], y[s : s + 64]
        opt.zero_grad()
        heads.loss(xb, yb).backward()
        opt.step()
        for lin, ref_opt, sched in refs:
            ref_opt.zero_grad()
            torch.nn.functional.cross_entropy(lin(xb), yb).backward()
            ref_opt.step()
            sched.step()
    for h, (lin, _, _) in enumerate(refs):
        assert torch.allclose(heads.weight[h], lin.weight, atol=1e-6) and torch.allclose(heads.bias[h], lin.bias, atol=1e-6)
    assert not torch.allclose(heads.weight[0] - start["weight"][0], heads.weight[1] - start["weight"][1], atol=1e-2)


def test_a_tuned_probe_rescues_a_layer_that_the_fixed_lr_understates():
    """At a far too small fixed lr the probe barely moves from its initialisation; tuned on a
    validation split, it picks the lr that learns and reports that head's test top-1."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(1200) % 4
    x = torch.randn(1200, 16, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 16).float()
    from sslray.eval.protocols.linear import LinearSettings, results_of
    from sslray.eval.results import metrics_of

    s = LinearSettings(epochs=5, lr=1e-6, lrs=[1e-6, 0.05], weight_decays=[0.0])
    got, record = tuned_linear_probe("res5", x[:1000], y[:1000], x[1000:], y[1000:], 4, s)
    results = results_of("res5", got)
    m = metrics_of(results)
    assert got["top1"][1] == 200 and got["val_top1"][1] == 100  # each number's images: test, and a tenth held out
    assert m["transfer/res5/lr"] == 0.05 and m["transfer/res5/weight_decay"] == 0.0
    assert m["untuned/res5/top1"] < 0.6 < 0.9 < m["transfer/res5/top1"]
    assert [(h["lr"], h["weight_decay"]) for h in record["heads"]] == [(1e-6, 5e-4), (1e-6, 0.0), (0.05, 0.0)]
    assert record["heads"][2]["test_top1"] == m["transfer/res5/top1"]
    assert m["transfer/res5/lr_at_edge"] == 1.0  # 0.05 is the grid's largest: the best may lie beyond
    assert "probe lr at the edge of its grid (res5 0.05)" in Evaluation(results).lines()[0]


def test_streamed_probes_tune_like_the_cached_ones():
    from sslray.data import MemorySource

    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    train, test = _label_coded_images(400, 0), _label_coded_images(200, 1)
    cfg = EvalConfig(linear={"epochs": 10}, feature_dim=512, layers=["conv1", "res5"], probes="streamed", subset=200)
    result = evaluate(trunk, MemorySource(train), MemorySource(test), cfg)
    m, grid = result.metrics, result.records["probe_grid.json"]
    assert m["transfer/conv1/top1"] > 0.9 and set(grid) == {"conv1", "res5"}
    held = 40  # a tenth of the training split
    for layer in ("conv1", "res5"):
        chosen = next(h for h in grid[layer]["heads"] if h["lr"] == grid[layer]["chosen"]["lr"]
                      and h["weight_decay"] == grid[layer]["chosen"]["weight_decay"])
        assert m[f"transfer/{layer}/val_top1"] == chosen["val_top1"] == max(h["val_top1"] for h in grid[layer]["heads"])
        assert chosen["test_top1"] == m[f"transfer/{layer}/top1"]
        # every score is a count over the held-out 40 training images or the 200 test images
        assert all(round(h["val_top1"] * held, 6).is_integer() and round(h["test_top1"] * 200, 6).is_integer()
                   for h in grid[layer]["heads"])
    assert "linear, untuned lr" in result.tables()


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
    assert "std of the normalised 128-d embeddings 0.0050 x sqrt(128) = 0.057 < eval.collapse_std=0.1" in collapse(
        {**h, "train/embed_std": 0.005}, 128, 1.5, 0.1)
    assert collapse({**h, "train/embed_std": 0.5 / math.sqrt(128)}, 128, 1.5, 0.1) is None
    # a shrinking embedding (VICReg without its variance term): its raw spread, as a share of the one
    # the loss asks for, below eval.collapse_scale; the directions may stay spread
    shrunk = collapse({**h, "train/embed_std": 0.5 / math.sqrt(128), "train/embed_scale": 0.035}, 128, 1.5, 0.1, 0.1)
    assert shrunk.startswith("raw embedding std 0.035 of the spread its loss asks for < eval.collapse_scale=0.1")
    assert collapse({**h, "train/embed_scale": 0.24}, 128, 1.5, 0.1, 0.1) is None  # VICReg as trained here


# ---- protocols beyond frozen features: fine-tuning and low-shot (issue 15) -----------------------

def test_label_subsets_are_class_balanced_reproducible_and_named():
    from sslray.eval.finetune import label_subset, subset_name

    labels = torch.arange(1000) % 10
    for fraction, per_class in ((0.01, 1), (0.1, 10), (0.001, 1)):  # at least one image of every class
        idx = label_subset(labels, fraction, seed=0)
        assert torch.bincount(labels[idx], minlength=10).tolist() == [per_class] * 10
    idx = label_subset(labels, shots=3, seed=4)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [3] * 10
    assert torch.equal(idx, label_subset(labels, shots=3, seed=4)) and not torch.equal(idx, label_subset(labels, shots=3, seed=5))
    assert [subset_name(0.01), subset_name(0.1), subset_name(0.005), subset_name(1.0), subset_name(shots=5)] == \
        ["1pct", "10pct", "0.5pct", "100pct", "5shot"]


def test_finetuning_learns_the_labels_and_leaves_the_pretrained_trunk_alone():
    from sslray.data import MemorySource
    from sslray.eval.finetune import finetune

    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    train, test = _label_coded_images(300, 0), _label_coded_images(100, 1)
    from sslray.eval.protocols.finetune import FinetuneSettings

    cfg = FinetuneSettings(epochs=4, batch_size=32, lr=0.05)
    acc = finetune(trunk, MemorySource(train), MemorySource(test), cfg)
    shuffled = ImageSet(train.images, train.labels[torch.randperm(300)], train.classes, "x", "train")
    noise = finetune(trunk, MemorySource(shuffled), MemorySource(test), cfg)
    assert acc > 0.8 and noise < 0.4  # chance 0.1
    assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())


def test_evaluate_runs_exactly_the_protocols_asked_for():
    from sslray.data import MemorySource

    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    train, test = MemorySource(_label_coded_images(400, 0)), MemorySource(_label_coded_images(100, 1))
    cfg = EvalConfig(protocols=["finetune", "lowshot"], layers=["conv1", "res5"], feature_dim=256, linear={"epochs": 5},
                     finetune={"epochs": 1}, lowshot={"fractions": [0.1], "shots": [2]})
    result = evaluate(trunk, train, test, cfg)
    m = result.metrics
    assert set(m) == {"finetune/top1", "lowshot/10pct/images", "lowshot/2shot/images"} | {
        f"lowshot/{s}/linear/{layer}/top1" for s in ("10pct", "2shot") for layer in cfg.layers} | {
        f"lowshot/{s}/finetune/top1" for s in ("10pct", "2shot")}
    assert m["lowshot/10pct/images"] == 40 and m["lowshot/2shot/images"] == 20
    assert m["lowshot/10pct/linear/conv1/top1"] > 0.5  # colour codes the class: few labels suffice
    assert set(result.tables()) == {"linear, 10pct labels", "linear, 2shot labels"}
    assert result.lines()[0].startswith("fine-tune (whole trunk)")


def test_retrieval_measures_class_recall_and_what_neighbours_share():
    from sslray.eval.retrieval import class_metrics, shared_factors

    train_labels, query_labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 2]), torch.tensor([0, 1])
    nn = torch.tensor([[0, 2, 4, 5, 6, 7, 8, 9], [4, 5, 6, 7, 8, 9, 0, 1]])  # query 1 never finds class 1
    m = class_metrics(nn, train_labels, query_labels)
    assert m == {"recall_at_1": 0.5, "recall_at_8": 0.5, "precision_at_8": pytest.approx(1 / 16)}
    g = torch.Generator().manual_seed(0)
    hue, texture = torch.rand(1000, generator=g), torch.randint(0, 4, (1000,), generator=g)
    qhue, qtex = torch.rand(200, generator=g), torch.randint(0, 4, (200,), generator=g)
    d = (hue[None] - qhue[:, None]).abs()
    by_hue = torch.minimum(d, 1 - d).argsort(1)[:, :8]  # each query's 8 closest hues, on the hue circle
    same = shared_factors(by_hue, {"hue": hue, "texture": texture}, {"hue": qhue, "texture": qtex})
    assert same["hue"] > 0.95 and abs(same["texture"]) < 0.1  # sharing hue says nothing about texture
    by_tex = torch.stack([torch.nonzero(texture == t).flatten()[:8] for t in qtex.tolist()])
    assert shared_factors(by_tex, {"texture": texture}, {"texture": qtex})["texture"] == 1.0
    rand = shared_factors(torch.randint(1000, (200, 8), generator=g), {"hue": hue}, {"hue": qhue})
    assert abs(rand["hue"]) < 0.1  # random neighbours share no more than chance


def test_retrieval_logs_metrics_and_a_grid_per_layer_beside_an_untrained_trunk():
    from sslray.data import MemorySource, load_synthetic

    torch.manual_seed(0)
    trunk = build_trunk("resnet18", 0.125, image_size=16)
    train, test = load_synthetic("train", 0, 16, 300), load_synthetic("test", 0, 16, 100)
    cfg = EvalConfig(protocols=["retrieval"], layers=["conv1", "res5"], feature_dim=256)
    result = evaluate(trunk, MemorySource(train), MemorySource(test), cfg)
    m = result.metrics
    for layer in cfg.layers:
        assert 0 <= m[f"retrieval/{layer}/recall_at_1"] <= m[f"retrieval/{layer}/recall_at_8"] <= 1
        assert 0 <= m[f"retrieval/{layer}/floor_precision_at_8"] <= 1
        assert {f"retrieval/{layer}/shares/{f}" for f in ("hue", "x", "texture")} <= set(m)
        fig = result.figures[f"retrieval_{layer}.png"]
        assert len(fig.axes) == 8 * 18  # 8 queries x (query, 8 trained, gap, 8 untrained)
    # conv1 of any trunk keeps colour: its neighbours share the foreground hue well above chance
    assert m["retrieval/conv1/shares/hue"] > 0.2
    assert "per_layer.png" not in result.figures  # no per-layer probe was asked for
    assert result.lines() == [f"retrieval precision@8 (untrained): conv1 {100 * m['retrieval/conv1/precision_at_8']:.1f} "
                              f"({100 * m['retrieval/conv1/floor_precision_at_8']:.1f})  res5 "
                              f"{100 * m['retrieval/res5/precision_at_8']:.1f} ({100 * m['retrieval/res5/floor_precision_at_8']:.1f})"]
