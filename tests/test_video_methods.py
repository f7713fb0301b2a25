"""Issue 16: the clip source (``synthetic_video``), Shuffle & Learn's tuples, and a video method run
end to end through the CLI, the shared loop and MLflow."""

from __future__ import annotations

import torch

from conftest import TINY, assert_probed
from sslray.cli import main
from sslray.data.clips import ClipSet, ClipSource, load_clips
from sslray.data.source import epoch_order
from sslray.methods.shuffle_learn import in_order, make_tuples, motion


def test_clip_source_serves_random_frames_with_their_clips_and_scans_middle_frames():
    data = load_clips("train", 0, 32, 24, 8)
    assert isinstance(data, ClipSet) and data.clips.shape == (24, 8, 3, 32, 32)
    assert torch.equal(data.images, data.clips[:, 4])  # the still of a clip: its middle frame
    assert data.audio.shape == (24, 4000) and data.track.shape == (24, 8, 3)
    assert torch.equal(data.track[:, 4, 0], data.factors["x"])
    assert data.factors["swing"].abs().max() <= 1 and 0 <= data.factors["limb"].min() <= data.factors["limb"].max() < 1
    src = ClipSource(data)
    batches = list(src.epoch(1, 8, seed=3))
    assert len(batches) == 3
    assert torch.equal(torch.cat([b.index for b in batches]), epoch_order(24, 3, 1))  # the memory source's order
    frames = torch.cat([b.extra["frame"] for b in batches])
    assert len(set(frames.tolist())) > 1  # random frames, not always the middle one
    for b in batches:
        assert torch.equal(b.views[0], data.clips[b.index, b.extra["frame"]])
        assert torch.equal(b.extra["clip"], data.clips[b.index]) and torch.equal(b.extra["audio"], data.audio[b.index])
    again = torch.cat([b.extra["frame"] for b in src.epoch(1, 8, seed=3)])
    other = torch.cat([b.extra["frame"] for b in src.epoch(2, 8, seed=3)])
    assert torch.equal(frames, again) and not torch.equal(frames, other)  # by (seed, epoch)
    scanned = list(src.scan(10))
    assert torch.equal(torch.cat([b.views[0] for b in scanned]), data.images)
    assert all((b.extra["frame"] == 4).all() for b in scanned)


def test_shuffle_learn_tuples_are_labelled_by_their_frame_order():
    g = torch.Generator().manual_seed(0)
    for frames, gap in ((16, 3), (16, 1), (9, 2), (5, 3), (4, 3), (3, 1)):
        moving = torch.rand(400, frames - 1, generator=g)
        tuples, label = make_tuples(moving, gap, 0.5, generator=g)
        assert tuples.shape == (400, 3) and tuples.min() >= 0 and tuples.max() < frames
        assert torch.equal(label.bool(), in_order(tuples)), (frames, gap)
        assert 0.4 < label.float().mean() < 0.6
        assert (tuples[:, 0] != tuples[:, 2]).all()
        if frames >= 5:  # five-frame windows: the outer two are 2 x gap apart, the middle one of a, c, e
            g_eff = min(gap, (frames - 1) // 4)
            assert ((tuples[:, 0] - tuples[:, 2]).abs() == 2 * g_eff).all()
        backwards = tuples[:, 0] > tuples[:, 2]
        assert 0.4 < backwards.float().mean() < 0.6  # read either way


def test_shuffle_learn_draws_windows_where_the_clip_moves():
    moving = torch.zeros(300, 15)
    moving[:, 11:] = 1.0  # only the last four steps move
    tuples, _ = make_tuples(moving, 1, 0.5, weighted=True, generator=torch.Generator().manual_seed(1))
    assert (tuples.min(1).values >= 8).all()  # every window (4 steps from its start) overlaps the motion
    flat, _ = make_tuples(moving, 1, 0.5, weighted=False, generator=torch.Generator().manual_seed(1))
    assert (flat.min(1).values < 8).float().mean() > 0.5  # uniform starts 0..11: most windows miss it


def test_motion_is_the_mean_absolute_frame_difference():
    clip = torch.zeros(2, 4, 3, 8, 8)
    clip[:, 2:] = 0.5
    assert torch.allclose(motion(clip), torch.tensor([[0.0, 0.5, 0.0]] * 2))


def test_shuffle_learn_runs_from_the_cli_on_clips_and_logs_every_layer_and_the_pose(mlflow_runs):
    assert main(["train", "--method", "shuffle_learn", "--data", "synthetic_video", "--epochs", "1",
                 "--set", "data.frames=6", "--set", "eval.protocols=[linear,knn,retrieval]",
                 "--set", "eval.layers=[res4,res5]", *TINY]) == 0
    _, runs = mlflow_runs()
    m = runs[0].data.metrics
    assert runs[0].data.params["data.name"] == "synthetic_video"
    assert_probed(m, ["transfer/res4/top1", "transfer/res5/top1"])
    for layer in ("res4", "res5"):
        for factor in ("swing", "limb", "bg_hue", "x"):
            assert f"retrieval/{layer}/shares/{factor}" in m
    assert 0 <= m["train/acc"] <= 1


def test_what_a_method_adds_after_training_is_probed_logged_and_saved(tmp_path):
    """``Afterwards``: its metrics are logged, each feature set gets a linear probe (``<name>/top1``),
    each figure is saved and logged under plots/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sslray.methods import Afterwards
    from sslray.tracking import RunDir
    from sslray.train.build import build_config
    from sslray.train.record import record_afterwards

    class Tracker:
        def __init__(self):
            self.metrics, self.artifacts = {}, []

        def log_metrics(self, metrics, step=None):
            self.metrics.update(metrics)

        def log_artifact(self, path, where=None):
            self.artifacts.append((path, where))

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.1 * torch.randn(200, 4, generator=g)  # separable
    noise = torch.randn(200, 4, generator=g)  # nothing to find
    (tmp_path / "run").mkdir()
    tracker = Tracker()
    features = {"sound": (x[:100], y[:100], x[100:], y[100:]), "noise": (noise[:100], y[:100], noise[100:], y[100:])}
    after = Afterwards({"avc/test_acc": 0.5}, {"extra.png": plt.figure()}, features)
    got = record_afterwards(after, build_config("rotation"), RunDir(tmp_path / "run"), tracker, progress=False)
    assert got["sound/top1"] > 0.8 and got["noise/top1"] < 0.5  # chance 0.25; a 30-epoch probe on 100 images
    assert got["avc/test_acc"] == 0.5
    assert tracker.metrics == got
    figure = tmp_path / "run" / "extra.png"
    assert tracker.artifacts == [(figure, "plots")] and figure.stat().st_size > 0
