"""Tracking (Wang & Gupta 2015): patches on the recorded object, the ranking loss against its
formula, a training step for both losses, and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslray.data.synthetic import _hsv_to_rgb
from sslray.components.losses import info_nce
from sslray.errors import UserError
from sslray.methods import DataInfo
from sslray.methods.tracking import (Tracking, TrackingSettings, crop_boxes, pair_similarities, patch_boxes,
                                     ranking_loss, tracked_pairs)
from sslray.models import build_trunk


@pytest.fixture(scope="module")
def clip_tensors(clips):
    """The shared clips as ``(video float in [0, 1], labels, track (x, y, scale) per frame, fields)``."""
    video, labels, _, f = clips
    track = torch.from_numpy(np.stack([f["x"], f["y"], f["scale"]], -1))
    return torch.from_numpy(video).float() / 255, torch.from_numpy(labels), track, f


def test_patch_boxes_are_centred_on_the_recorded_object_and_clamped_at_the_border(clip_tensors):
    _, _, track, _ = clip_tensors
    centres = track[:, :, :2].reshape(-1, 2)
    pixel = (centres + 1) / 2 * 32
    small = patch_boxes(centres, 16, 32)  # the generator keeps centres in [-0.35, 0.35]: 10.4..21.6 px
    assert torch.allclose((small[:, :2] + small[:, 2:]) / 2, pixel, atol=1e-5)
    assert torch.allclose(small[:, 2:] - small[:, :2], torch.full_like(pixel, 16.0))
    big = patch_boxes(centres, 24, 32)
    assert torch.allclose(big[:, 2:] - big[:, :2], torch.full_like(pixel, 24.0))
    assert (big[:, :2] >= 0).all() and (big[:, 2:] <= 32).all()
    inside = ((pixel - 12 >= 0) & (pixel + 12 <= 32)).all(1)
    assert 0 < inside.sum() < len(inside)  # both cases occur
    assert torch.allclose((big[inside, :2] + big[inside, 2:]) / 2, pixel[inside], atol=1e-5)
    # at the border the box is shifted just enough to fit
    edge = patch_boxes(torch.tensor([[-1.0, 1.0], [0.9, -0.95]]), 24, 32)
    assert edge.tolist() == [[0, 8, 24, 32], [8, 0, 32, 24]]


def test_the_centre_of_a_cut_patch_is_the_object_more_often_than_a_random_pixel(clip_tensors):
    video, _, track, f = clip_tensors
    b, t = video.shape[:2]
    frames, centres = video.reshape(b * t, 3, 32, 32), track[:, :, :2].reshape(-1, 2)
    # a 16-px box at pixels 6..22 x 10..26, resized to 32: the crop upsampled by 2 (inside its
    # border row, where the cut also reads the pixels just outside the box)
    box = patch_boxes(torch.tensor([[14 / 16 - 1, 18 / 16 - 1]]), 16, 32)
    assert box.tolist() == [[6, 10, 22, 26]]
    upsampled = torch.nn.functional.interpolate(frames[:1, :, 10:26, 6:22], 32, mode="bilinear")
    assert torch.allclose(crop_boxes(frames[:1], box, 32)[..., 1:-1, 1:-1], upsampled[..., 1:-1, 1:-1], atol=1e-5)
    # the object's colour (as tests/test_video_data.py: the foreground's hue, whatever the lighting)
    fg = torch.from_numpy(_hsv_to_rgb(f["hue"].astype(float), np.full(b, 0.85), np.full(b, 0.95))).float()
    fg = (fg / fg.amax(1, keepdim=True)).repeat_interleave(t, 0)[:, :, None, None]

    def on_object(img):
        return ((img / img.amax(1, keepdim=True).clamp(min=1e-3)) - fg).abs().amax(1) < 0.25

    anywhere = on_object(frames).float().mean()  # 9% of the frames' pixels
    for patch, seen in ((16, 0.99), (24, 0.95)):
        crops = crop_boxes(frames, patch_boxes(centres, patch, 32), 32)
        at_centre = on_object(crops)[:, 15:17, 15:17].float().mean()  # 100% and 98% measured
        assert at_centre > seen and anywhere < 0.15
        assert on_object(crops).float().mean() > anywhere + 0.05  # the crop holds more object than the frame


def test_tracked_pairs_take_frames_gap_apart(clip_tensors):
    video, _, track, _ = clip_tensors
    torch.manual_seed(0)
    query, tracked = tracked_pairs(video, track, gap=15, patch=32)  # gap = T - 1: frames 0 and 15, whole
    assert torch.allclose(query, video[:, 0], atol=1e-5) and torch.allclose(tracked, video[:, 15], atol=1e-5)
    with pytest.raises(ValueError, match="a gap of 16 frames does not fit clips of 16 frames"):
        tracked_pairs(video, track, gap=16, patch=32)  # never capped silently: the config check refuses it first


def test_ranking_loss_is_zero_for_identical_positives_and_orthogonal_negatives():
    z = torch.eye(6)  # six orthogonal embeddings: every negative is at cosine 0
    pos, neg = pair_similarities(z, z.clone())
    assert pos.tolist() == [1.0] * 6 and neg.shape == (6, 5) and (neg == 0).all()
    assert ranking_loss(pos, neg, 0.5, 4).item() == 0.0
    # a negative equal to the query: hinge D(+) - D(-) + M = 0 - 0 + 0.5 on that one of the 4 hardest
    keys = z.clone()
    keys[1] = z[0]  # clip 1's tracked patch looks like clip 0's query
    pos, neg = pair_similarities(z, keys)
    loss = ranking_loss(pos, neg, 0.5, 4)
    # query 0: one negative at cos 1 (hinge 0.5) and three at 0; query 1: positive at cos 0,
    # every negative at 0 (hinge 0.5 each); the others: 0
    assert loss.item() == pytest.approx((0.5 / 4 + 0.5) / 6)
    assert loss > 0


def test_ranking_loss_takes_the_hardest_negatives():
    pos = torch.tensor([0.9])
    neg = torch.tensor([[0.8, -1.0, 0.7, 0.1]])
    assert ranking_loss(pos, neg, 0.5, 2).item() == pytest.approx(((0.8 - 0.9 + 0.5) + (0.7 - 0.9 + 0.5)) / 2)
    assert ranking_loss(pos, neg, 0.5, 10).item() == pytest.approx((0.4 + 0 + 0.3 + 0) / 4)


@pytest.mark.parametrize("loss", ["ranking", "infonce"])
def test_a_training_step_gives_a_finite_loss_and_gradients(clip_tensors, loss, monkeypatch):
    import sslray.methods.tracking as tracking

    video, labels, track, _ = clip_tensors
    torch.manual_seed(0)
    info = DataInfo(10, 8, 32, 8, ("clip", "track"), frames=16, fps=8)
    settings = TrackingSettings(loss=loss)
    method = Tracking(settings, build_trunk("resnet18", 0.125, image_size=32), info)
    seen = []  # the step's similarities: its loss and accuracy must be their formulas
    monkeypatch.setattr(tracking, "pair_similarities", lambda q, k: seen.append(pair_similarities(q, k)) or seen[-1])
    out = method([video[:, 8]], labels, torch.arange(8), clip=video, track=track)
    (pos, neg), = seen
    assert pos.shape == (8,) and neg.shape == (8, 7)  # every other clip of the batch is a negative
    want = ranking_loss(pos, neg, settings.margin, settings.hard_negatives) if loss == "ranking" else \
        info_nce(pos, neg, settings.temperature)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0 and float(out["loss"].detach()) == pytest.approx(float(want.detach()))
    # the share of queries whose tracked patch beats every other clip: a whole number of the 8
    assert float(out["acc"]) == float((pos > neg.amax(1)).float().mean()) and float(out["acc"] * 8).is_integer()
    out["loss"].backward()
    # DDP (find_unused_parameters=False) needs every parameter in the graph
    grads = [p.grad for p in method.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_negatives_are_the_global_batch_as_two_ranks_see_it(monkeypatch):
    """Two ranks simulated in one process: each has half the queries and keys and gathers every
    key (the keys of the other rank at their place in the global batch); the mean of the ranks'
    losses, as DDP averages them, is the loss of one process over the whole batch, gradients too."""
    import sslray.methods.tracking as tracking

    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, 6, generator=g).requires_grad_(), torch.randn(8, 6, generator=g).requires_grad_()

    def both(pos, neg):
        return ranking_loss(pos, neg, 0.5, 4) + info_nce(pos, neg, 0.1)

    single = both(*pair_similarities(q, k))
    want = torch.autograd.grad(single, (q, k))
    ranks = []
    for r in (0, 1):
        monkeypatch.setattr(tracking, "rank", lambda r=r: r)
        # what all_gather gives rank r: its own (normalised) keys at its place, the other rank's around them
        monkeypatch.setattr(tracking, "gather_with_grad", lambda mine, r=r: torch.cat(
            [mine if i == r else torch.nn.functional.normalize(k[i * 4:(i + 1) * 4], dim=1) for i in (0, 1)]))
        ranks.append(both(*pair_similarities(q[r * 4:(r + 1) * 4], k[r * 4:(r + 1) * 4])))
    mean = (ranks[0] + ranks[1]) / 2
    assert mean.item() == pytest.approx(single.item(), rel=1e-6)
    for got, expected in zip(torch.autograd.grad(mean, (q, k)), want):
        assert torch.allclose(got, expected, atol=1e-6)


def _info(size=32, frames=16, batch=128):
    return DataInfo(0, 0, size, batch, ("clip", "track"), frames=frames, fps=8)


@pytest.mark.parametrize("settings, info, says", [
    (dict(patch=40), _info(), "a 40-px patch is larger than the 32-px frames"),
    (dict(patch=4), _info(), "a 4-px patch is too small"),
    (dict(), _info(frames=1), "clips of 1 frame"),
    (dict(), _info(batch=1), "a batch of one clip"),
    (dict(gap=16), _info(), "a gap of 16 frames does not fit clips of 16 frames: use gap <= 15"),
    (dict(gap=3), _info(frames=3), "a gap of 3 frames does not fit clips of 3 frames: use gap <= 2"),
    (dict(hard_negatives=8), _info(batch=8), "hard_negatives=8 is more than the 7 other clips of a batch of 8"),
])
def test_config_check_refuses_what_cannot_work(settings, info, says):
    with pytest.raises(UserError, match=says) as e:
        Tracking.check_config(TrackingSettings(**settings), info)
    assert "\n" not in str(e.value)


def test_config_check_accepts_the_defaults_and_data_without_clips():
    assert Tracking.check_config(TrackingSettings(), _info()) is None
    assert Tracking.check_config(TrackingSettings(), _info(frames=0)) is None  # no clips: refused elsewhere
    assert Tracking.check_config(TrackingSettings(patch=32), _info(batch=0)) is None
    # each bound is accepted exactly at its edge and refused one step past it
    from sslray.methods.tracking import MIN_PATCH

    for ok, bad, says in [((dict(patch=32), _info()), (dict(patch=33), _info()), "33-px patch is larger"),
                          ((dict(patch=MIN_PATCH), _info()), (dict(patch=MIN_PATCH - 1), _info()), "too small"),
                          ((dict(gap=1), _info(frames=2)), (dict(gap=1), _info(frames=1)), "clips of 1 frame"),
                          ((dict(hard_negatives=1), _info(batch=2)), (dict(hard_negatives=1), _info(batch=1)), "a batch of one clip")]:
        assert Tracking.check_config(TrackingSettings(**ok[0]), ok[1]) is None
        with pytest.raises(UserError, match=says):
            Tracking.check_config(TrackingSettings(**bad[0]), bad[1])
    assert Tracking.check_config(TrackingSettings(gap=15, hard_negatives=7), _info(batch=8)) is None  # the last frame
    assert Tracking.check_config(TrackingSettings(loss="infonce", hard_negatives=8), _info(batch=8)) is None  # unused
