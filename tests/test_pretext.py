"""Pretext-task methods: jigsaw, relative position, colorization, inpainting and their multi-task mix.

Targets are checked against geometry and formulas; each method then runs once through the CLI."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_probed

from sslray import LAYERS
from sslray.cli import main
from sslray.components.lab import ab_bins, lab_to_rgb, rebalancing_weights, rgb_to_lab, soft_cross_entropy, \
    soft_encode
from sslray.components.permutations import hamming_permutations, hamming_stats
from sslray.components.tiles import assemble, drop_channels, shuffle_tiles, tile_grid, unshuffle_tiles
from sslray.methods import DataInfo, get_method
from sslray.methods.colorization import colour_targets
from sslray.methods.inpainting import inpainting_loss, mask_image, square_mask
from sslray.methods.relpos import OFFSETS, relpos_pairs
from sslray.models import build_trunk
from sslray.components.augment import cut_views


# --- tiles and permutations -------------------------------------------------------------------

def test_tile_shuffle_then_inverse_restores_tiles_and_image():
    x = torch.rand(4, 3, 30, 30)
    tiles = tile_grid(x, 3, tile=10, jitter=False)  # tiles fill their cells: assembling gives x back
    assert torch.equal(assemble(tiles, 3), x)
    perms = torch.as_tensor(hamming_permutations(10, cache=False)).long()[torch.tensor([3, 7, 0, 9])]
    shuffled = shuffle_tiles(tiles, perms)
    assert torch.equal(shuffled[1, 0], tiles[1, perms[1, 0]])  # position i holds tile perms[i]
    assert not torch.equal(shuffled, tiles)
    assert torch.equal(unshuffle_tiles(shuffled, perms), tiles)
    assert torch.equal(assemble(unshuffle_tiles(shuffled, perms), 3), x)


def test_jittered_tiles_stay_inside_their_cells():
    # 10-px cells of a lattice centred in the 32-px image (rows and columns 1 .. 30); -1 outside it
    pos = torch.arange(32) - 1
    cell_of = torch.where((pos >= 0) & (pos < 30), pos.div(10, rounding_mode="floor"), torch.tensor(-9))
    x = (cell_of[:, None] * 3 + cell_of[None, :]).float().expand(5, 3, 32, 32)
    tiles = tile_grid(x, 3, tile=8)
    for k in range(9):
        assert (tiles[:, k] == k).all()
    assert torch.equal(tile_grid(x, 3, tile=10, jitter=False)[0, 4], x[0, :, 11:21, 11:21])  # the cells themselves


def test_hamming_permutations_are_distinct_seeded_and_far_apart():
    a = hamming_permutations(100, cache=False)
    assert a.shape == (100, 9) and len(np.unique(a, axis=0)) == 100
    assert all(sorted(p) == list(range(9)) for p in a.tolist())
    assert np.array_equal(a, hamming_permutations(100, seed=0, cache=False))
    assert not np.array_equal(a, hamming_permutations(100, seed=1, cache=False))
    rng = np.random.default_rng(0)
    random = np.stack([rng.permutation(9) for _ in range(100)])
    stats = hamming_stats(a)
    assert stats["hamming_min"] >= hamming_stats(random)["hamming_min"] and stats["hamming_min"] >= 6
    assert hamming_permutations(100).tolist() == a.tolist()  # the on-disk cache returns the same set
    big = hamming_permutations(50, n_tiles=16, cache=False)  # 4x4 grid: a seeded random pool, not 16!
    assert len(np.unique(big, axis=0)) == 50 and hamming_stats(big)["hamming_min"] >= 12


def test_channel_drop_keeps_one_channel_and_noise_elsewhere():
    x = torch.rand(6, 3, 8, 8)
    out = drop_channels(x, p=1.0)
    same = [(out[i] == x[i]).flatten(1).all(1) for i in range(6)]
    assert all(int(s.sum()) == 1 for s in same)  # exactly one channel kept per image
    assert float(drop_channels(x, p=0.0).sub(x).abs().max()) == 0


# --- relative position ------------------------------------------------------------------------

def test_relpos_labels_match_the_neighbour_offsets():
    pos = torch.arange(32) - 1  # the 10-px cells of the lattice centred in the image: pixels 1 .. 30
    cell_of = torch.where((pos >= 0) & (pos < 30), pos.div(10, rounding_mode="floor"), torch.tensor(-9))
    rows, cols = cell_of[:, None].expand(32, 32), cell_of[None, :].expand(32, 32)
    x = torch.stack([rows, cols, torch.zeros(32, 32)]).float().expand(2, 3, 32, 32)  # pixel = its cell
    tiles = tile_grid(x, 3, tile=6)
    labels = torch.arange(8).repeat_interleave(2)  # every label for both images
    anchor, query = relpos_pairs(tiles, labels)
    for a, q, k in zip(anchor, query, labels.tolist()):
        assert (a[0] == 1).all() and (a[1] == 1).all()  # the anchor is the centre cell
        dy, dx = OFFSETS[k]
        assert (q[0] == 1 + dy).all() and (q[1] == 1 + dx).all()
    assert OFFSETS[0] == (-1, -1) and OFFSETS[1] == (-1, 0) and OFFSETS[4] == (0, 1) and OFFSETS[7] == (1, 1)


# --- Lab and colorization ---------------------------------------------------------------------

def _colour(r, g, b, size=1):
    return torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size)


def test_lab_round_trip_and_known_values():
    x = torch.rand(3, 3, 16, 16)
    assert float((lab_to_rgb(rgb_to_lab(x)) - x).abs().max()) < 1e-3
    known = {(1, 1, 1): (100, 0, 0), (0, 0, 0): (0, 0, 0), (1, 0, 0): (53.2408, 80.0925, 67.2032),
             (0, 1, 0): (87.7347, -86.1827, 83.1793), (0, 0, 1): (32.2970, 79.1875, -107.8602),
             (0.5, 0.5, 0.5): (53.3889, 0, 0)}
    for rgb, lab in known.items():
        got = rgb_to_lab(_colour(*rgb)).flatten()
        assert torch.allclose(got, torch.tensor(lab, dtype=torch.float32), atol=2e-3), (rgb, got)


def test_colorization_targets_for_a_known_colour():
    centres = ab_bins(10)
    assert 250 < len(centres) < 320 and (centres % 10 == 0).all()
    grey, (bins, weights) = colour_targets(_colour(1, 0, 0, size=8), out_size=2)
    assert grey.shape == (1, 3, 8, 8) and torch.allclose(grey, torch.full_like(grey, 0.532408), atol=1e-5)
    assert bins.shape == weights.shape == (1, 5, 2, 2)
    assert centres[bins[0, 0, 0, 0]].tolist() == [80, 70]  # red: a = 80.09, b = 67.20
    w = weights[0, :, 0, 0]
    d = (centres[bins[0, :, 0, 0]] - torch.tensor([80.0925, 67.2032])).norm(dim=1)
    assert torch.allclose(w, torch.softmax(-d**2 / 50, 0), atol=1e-5) and (w[:-1] >= w[1:]).all()
    _, (grey_bins, _) = colour_targets(_colour(0.3, 0.3, 0.3, size=4), out_size=1)
    assert centres[grey_bins[0, 0, 0, 0]].tolist() == [0, 0]
    # the soft cross-entropy is sum_k w_k (-log p_k)
    logits = torch.randn(1, len(centres), 2, 2)
    ce = soft_cross_entropy(logits, bins, weights)
    logp = logits.log_softmax(1)[0, :, 0, 0]
    assert torch.allclose(ce[0, 0, 0], -(w * logp[bins[0, :, 0, 0]]).sum(), atol=1e-5)


def test_rebalancing_weights_follow_eq4():
    prior = torch.tensor([0.7, 0.2, 0.1])
    w = rebalancing_weights(prior, 0.5)
    assert torch.allclose((prior * w).sum(), torch.tensor(1.0)) and w[2] > w[1] > w[0]
    assert torch.allclose(rebalancing_weights(prior, 1.0), torch.ones(3))


# --- inpainting -------------------------------------------------------------------------------

def test_inpainting_masks_the_centre_and_the_target_is_the_masked_pixels():
    x = torch.rand(2, 3, 32, 32)
    mask = square_mask(2, 32, 16, random=False)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 8:24] = True
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[1, 0], expected)
    fill = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    ctx = mask_image(x, mask, fill)
    outside = ~mask.expand_as(x)
    assert torch.equal(ctx[:, :, 8:24, 8:24], fill.expand(2, 3, 16, 16)) and torch.equal(ctx[outside], x[outside])
    pred = torch.rand(2, 3, 32, 32)
    assert torch.allclose(inpainting_loss(pred, x, mask), ((pred - x)[:, :, 8:24, 8:24] ** 2).mean())
    pred[:, :, 8:24, 8:24] = x[:, :, 8:24, 8:24]  # the context is not part of the loss
    assert float(inpainting_loss(pred, x, mask)) == 0
    rand = square_mask(50, 32, 10, random=True)
    assert (rand.flatten(1).sum(1) == 100).all() and not torch.equal(rand[0], rand[1:].all(0))


# --- every method's step, at 32 and 64 px -----------------------------------------------------

SMALL = {"jigsaw": {"permutations": 24, "tile_dim": 16, "head_hidden": 32},
         "relpos": {"pairs": "all", "head_hidden": 32, "tile_resize": 12}, "colorization": {"decoder_dim": 16},
         "inpainting": {"decoder_dim": 16},
         "multitask": {"tasks": {"rotation": 1, "relpos": 1}, "task_settings": {"relpos": {"head_hidden": 32}}}}


@pytest.mark.parametrize("size,amp", [(32, False), (64, False), (32, True)])
def test_every_pretext_step_gives_a_finite_loss_near_chance(size, amp):
    """At 32 px (CIFAR stem), 64 px (ImageNet stem), and under bfloat16 autocast as on a GPU."""
    torch.manual_seed(0)
    for name, settings in SMALL.items():
        cls = get_method(name)
        s = cls.Settings(**settings)
        info = DataInfo(10, 8, size)
        cls.check(s, info)
        m = cls(s, build_trunk("resnet18", 0.125, image_size=size), info).to(memory_format=torch.channels_last)
        x = torch.rand(4, 3, size, size).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = m(cut_views(x, m.input_views()), None, None)
        assert out["loss"].dtype == torch.float32, name
        out["loss"].backward()
        assert math.isfinite(float(out["loss"].detach())), name
        assert m.trunk.conv1.weight.grad is not None, name
        if name == "jigsaw":
            assert abs(float(out["loss"].detach()) - math.log(24)) < 1.5
        if name == "relpos":
            assert abs(float(out["loss"].detach()) - math.log(8)) < 1.0


def test_multitask_draws_one_task_per_batch_by_the_mix_and_shares_the_trunk():
    cls = get_method("multitask")
    s = cls.Settings(tasks={"rotation": 3, "inpainting": 1}, task_settings={"inpainting": {"decoder_dim": 16}})
    m = cls(s, build_trunk("resnet18", 0.125, image_size=32), DataInfo(10, 8, 32))
    assert all(sub.trunk is m.trunk for sub in m.pretexts.values())
    def draws():
        out = []
        for step in range(400):
            m.step = step
            out.append(m.draw())
        m.step = 0
        return out

    first = draws()
    assert 0.65 < first.count("rotation") / 400 < 0.85
    assert draws() == first  # a function of (seed, step) only: the same on every worker
    out = m(cut_views(torch.rand(4, 3, 32, 32), m.input_views()), None, None)
    task = first[0]
    assert set(out) == {"loss", f"{task}/loss", *([f"{task}/acc"] if task == "rotation" else [f"{task}/psnr"])}
    assert m.step == 1 and m.state_dict()["_extra_state"] == {"step": 1}


def test_multitask_under_ddp_gives_every_head_a_gradient(tmp_path):
    """DDP without find_unused_parameters fails on the step after one that left a head unused."""
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/pg")
    try:
        cls = get_method("multitask")
        s = cls.Settings(tasks={"rotation": 1, "inpainting": 1}, task_settings={"inpainting": {"decoder_dim": 16}})
        m = cls(s, build_trunk("resnet18", 0.125, image_size=32), DataInfo(10, 8, 32))
        ddp = torch.nn.parallel.DistributedDataParallel(m)
        seen = set()
        for _ in range(4):
            out = ddp(cut_views(torch.rand(4, 3, 32, 32), m.input_views()), None, None)
            out["loss"].backward()
            seen.add(m.last)
        assert seen == {"rotation", "inpainting"}
    finally:
        dist.destroy_process_group()


# --- through the CLI --------------------------------------------------------------------------

RUNS = {
    "jigsaw": ["--set", "permutations=100"],
    "relpos": [],
    "colorization": [],
    "inpainting": [],
    "multitask": ["--set", "tasks={rotation: 0.5, jigsaw: 0.5}",
                  "--set", "task_settings={jigsaw: {permutations: 100}}"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One folder (one MLflow store) for the CLI runs: creating a SQLite store costs more than a tiny run."""
    return tmp_path_factory.mktemp("pretext-runs")


@pytest.mark.parametrize("method", sorted(RUNS))
def test_cli_run_logs_every_layer_and_the_plot(method, mlflow_runs, store, monkeypatch):
    monkeypatch.chdir(store)
    assert main(["train", "--method", method, "--epochs", "1", *RUNS[method], *TINY]) == 0
    c, runs = mlflow_runs()
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["method"] == method
    assert_probed(run.data.metrics, [f"transfer/{layer}/top1" for layer in LAYERS])
    assert math.isfinite(run.data.metrics["train/loss"])
    plot = Path(c.download_artifacts(run.info.run_id, "plots/per_layer.png", "."))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = run.data.params
    if method == "jigsaw":
        assert float(p["method.hamming_min"]) >= 6 and 7.5 < float(p["method.hamming_mean"]) < 9
        assert p["settings.permutations"] == "100" and p["method.tile_px"] == "8"
    if method == "multitask":
        assert float(p["method.jigsaw.hamming_min"]) >= 6
        assert {"train/rotation/loss", "train/jigsaw/loss"} <= set(run.data.metrics)  # both tasks trained
    if method == "colorization":
        assert 0 <= run.data.metrics["train/acc"] <= 1
    if method == "inpainting":
        assert run.data.metrics["train/psnr"] > 0


def test_methods_lists_the_pretext_tasks(capsys):
    assert main(["methods"]) == 0
    out = "\n" + capsys.readouterr().out
    for name in RUNS:
        assert f"\n{name} " in out


BAD = {
    "too many permutations": (["--method", "jigsaw", "--set", "permutations=10001"],
                              "permutations: Input should be less than or equal to 10000"),
    "too few permutations": (["--method", "jigsaw", "--set", "permutations=1"], "permutations"),
    "grid does not fit": (["--method", "jigsaw", "--set", "grid=8"], "a 8x8 tile grid does not fit 32px images"),
    "more permutations than a 2x2 grid has": (["--method", "jigsaw", "--set", "grid=2", "--set", "permutations=25"],
                                              "4! = 24"),
    "unknown task": (["--method", "multitask", "--set", "tasks={rotation: 0.5, nope: 0.5}"], "unknown task 'nope'"),
    "multitask in the mix": (["--method", "multitask", "--set", "tasks={multitask: 1}"], "multitask itself"),
    "untrained task": (["--method", "multitask", "--set", "tasks={random: 1}"], "'random' is not trained"),
    "bad task setting": (["--method", "multitask", "--set", "task_settings={rotation: {rotations: some}}"],
                         "task_settings.rotation.rotations"),
    "negative mix": (["--method", "multitask", "--set", "tasks={rotation: -1}"], "tasks"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pretext_settings_are_one_line_exit_2_and_start_nothing(case, capsys):
    args, expected = BAD[case]
    small = ["--set", "data.limit=50", "--set", "data.test_limit=20", "--set", "optim.batch_size=25"]
    assert main(["train", *args, *small]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and expected in err, err
    assert not Path("mlflow.db").exists() and not Path("runs").exists()
