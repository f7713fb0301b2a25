"""Audio-visual correspondence (avc): the pairs of frames and sound, the config check, a training
step, and what it adds after training (the audio probe's features, correspondence, localisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslray.data.clips import ClipSet, ClipSource
from sslray.data.clips import clip_set as generated
from sslray.data.video import FPS, SAMPLE_RATE, generate_clips
from sslray.errors import UserError
from sslray.methods import DataInfo
from sslray.methods.avc import AVC, AVCSettings, pair_audio
from sslray.models import build_trunk

FRAMES = 16
LENGTH = FRAMES // FPS * SAMPLE_RATE  # samples per clip (2 s)


def clip_set(n: int, split: str) -> ClipSet:
    return generated(*generate_clips(n, frames=FRAMES, size=32, seed=0, split=split), split)


def info(**kw) -> DataInfo:
    return DataInfo(10, 8, 32, 8, ("clip", "audio", "track", "frame"), FRAMES, SAMPLE_RATE, FPS, **kw)


def test_pairs_are_the_own_window_around_the_frame_or_another_clip(clips):
    audio = torch.from_numpy(clips[2])
    n = SAMPLE_RATE  # one second
    seen_pos = seen_neg = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        frame = torch.randint(0, FRAMES, (8,), generator=g)
        frame[0], frame[1] = 0, FRAMES - 1  # the edges: the window shifts to stay inside
        seg, source, label = pair_audio(audio, frame, FPS, SAMPLE_RATE, 1.0, 0.5, g)
        assert seg.shape == (8, n) and label.dtype == torch.int64
        assert torch.equal(label == 1, source == torch.arange(8))
        for i in range(8):
            if label[i]:
                start = min(max(int(frame[i]) * SAMPLE_RATE // FPS - n // 2, 0), LENGTH - n)
                assert torch.equal(seg[i], audio[i, start:start + n])
                seen_pos += 1
            else:
                assert source[i] != i
                # a window of the other clip, placed as a positive is: around one of its frames' times
                starts = {min(max(k * SAMPLE_RATE // FPS - n // 2, 0), LENGTH - n) for k in range(FRAMES)}
                assert any(torch.equal(seg[i], audio[source[i], s:s + n]) for s in starts)
                seen_neg += 1
    assert seen_pos > 40 and seen_neg > 40
    # at frame 0 the window starts at the clip's start; at the last frame it ends at the clip's end
    edge, _, _ = pair_audio(audio, torch.tensor([0, FRAMES - 1] * 4), FPS, SAMPLE_RATE, 1.0, torch.ones(8, dtype=bool))
    assert torch.equal(edge[0], audio[0, :n]) and torch.equal(edge[1], audio[1, LENGTH - n:])
    # a frame in the middle: centred on its time, 8 / 8 fps = 1 s
    mid, _, _ = pair_audio(audio, torch.full((8,), 8), FPS, SAMPLE_RATE, 0.5, torch.ones(8, dtype=bool))
    assert torch.equal(mid[3], audio[3, SAMPLE_RATE - n // 4:SAMPLE_RATE + n // 4])


def test_the_sound_window_must_fit_the_video():
    with pytest.raises(UserError, match=r"avc: a 3-s sound clip is longer than the 2-s video \(16 frames"):
        AVC.check_config(AVCSettings(sound_seconds=3), info())
    with pytest.raises(UserError):
        AVC.check_config(AVCSettings(sound_seconds=2.01), info())
    AVC.check_config(AVCSettings(sound_seconds=2), info())  # equal: fits exactly
    AVC.check_config(AVCSettings(sound_seconds=3), DataInfo(10, 8, 32))  # nothing known: nothing to check
    with pytest.raises(UserError, match="spectrogram"):
        AVC.check_config(AVCSettings(sound_seconds=0.01), info())


def test_every_mel_band_must_hold_a_frequency_bin():
    from sslray.data.video import log_mel
    from sslray.methods.avc import mel_bands_fit

    wave = torch.randn(1, SAMPLE_RATE)
    for n_mels in (40, 121, 122, 129):  # a band without a bin reads log(1e-6) whatever the sound
        empty = int((log_mel(wave, SAMPLE_RATE, n_mels) <= np.log(2e-6)).all(-1).sum())
        assert (empty == 0) == mel_bands_fit(n_mels, SAMPLE_RATE) == (n_mels <= 121), n_mels
    AVC.check_config(AVCSettings(n_mels=121), info())
    with pytest.raises(UserError, match="avc: n_mels=122 mel bands of 4000-Hz sound leave the lowest without a "
                                        "frequency bin of the 256-sample spectrogram: use n_mels <= 121"):
        AVC.check_config(AVCSettings(n_mels=122), info())


def test_a_training_step_gives_a_finite_loss_and_gradients_everywhere(clips, monkeypatch):
    torch.manual_seed(0)
    video, labels, audio, _ = clips
    method = AVC(AVCSettings(), build_trunk("resnet18", 0.125, image_size=32), info())
    frame = torch.arange(8) % FRAMES
    x = torch.from_numpy(video)[torch.arange(8), frame].float() / 255
    seen = {}  # the step's logits and pair labels: its loss and accuracy must be their formulas
    logits_of = method.logits
    monkeypatch.setattr(method, "logits", lambda *a: seen.setdefault("logits", logits_of(*a)))
    import sslray.methods.avc as avc

    monkeypatch.setattr(avc, "pair_audio", lambda *a: seen.setdefault("pairs", pair_audio(*a)))
    out = method([x], torch.from_numpy(labels), torch.arange(8), audio=torch.from_numpy(audio), frame=frame)
    logits, label = seen["logits"].detach().float(), seen["pairs"][2]
    assert logits.shape == (8, 2) and set(label.tolist()) <= {0, 1}
    assert torch.isfinite(out["loss"]) and float(out["loss"].detach()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, label)), rel=1e-6)
    # the share of the 8 pairs told right (own sound or another clip's): a whole number of eighths
    assert float(out["acc"]) == float((logits.argmax(1) == label).float().mean()) and float(out["acc"] * 8).is_integer()
    assert float(out["loss"].detach()) == pytest.approx(np.log(2), abs=0.5)  # near chance, untrained
    out["loss"].backward()
    for part in (method.trunk, method.audio_net, method.vision_fc, method.audio_fc, method.fusion):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)


def test_after_training_gives_audio_features_metrics_in_range_and_the_figure():
    torch.manual_seed(0)
    train, test = ClipSource(clip_set(20, "train")), ClipSource(clip_set(13, "test"))
    method = AVC(AVCSettings(audio_width=0.125), build_trunk("resnet18", 0.125, image_size=32), info())
    method.train()
    after = method.after_training(train, test)
    assert method.training  # the mode is restored
    xtr, ytr, xte, yte = after.features["audio"]
    assert xtr.shape == (20, method.audio_net.out_dim) and xte.shape == (13, method.audio_net.out_dim)
    assert torch.equal(ytr, train.data.labels) and torch.equal(yte, test.data.labels)
    assert bool(torch.isfinite(xtr).all())
    m = after.metrics
    assert set(m) == {"avc/test_acc", "avc/localisation_hit", "avc/localisation_chance"}
    assert all(0 <= v <= 1 for v in m.values())
    assert m["avc/test_acc"] * 26 == pytest.approx(round(m["avc/test_acc"] * 26))  # 13 clips x 2 pairs
    assert 0 < m["avc/localisation_chance"] < 1  # the object covers some of the 7x7 cells, not all
    assert "localisation.png" in after.figures and len(after.figures["localisation.png"].axes) == 6


def test_an_occlusion_map_cell_is_the_drop_with_that_square_grey(clips):
    torch.manual_seed(0)
    video, _, audio, _ = clips
    method = AVC(AVCSettings(audio_width=0.125), build_trunk("resnet18", 0.125, image_size=32), info()).eval()
    x = torch.from_numpy(video[:3, 8]).float() / 255
    seg = torch.from_numpy(audio[:3, :SAMPLE_RATE])
    with torch.no_grad():
        drops, side, stride = method.occlusion(x, seg)
        assert drops.shape == (3, 7, 7) and (side, stride) == (8, 4)  # 32 px: 8-px square, 4-px stride
        a = method.audio_fc(method.sound_features(seg))

        def log_odds(images):
            out = method.fusion(torch.cat([method.vision_fc(method.trunk(images)), a], 1))
            return out[:, 1] - out[:, 0]

        hidden = x.clone()
        hidden[:, :, 2 * 4:2 * 4 + 8, 5 * 4:5 * 4 + 8] = 0.5
        assert torch.allclose(drops[:, 2, 5], log_odds(x) - log_odds(hidden), atol=1e-4)
