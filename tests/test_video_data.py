"""The generated clips of issue 16: deterministic, positions and poses as recorded, sound tied to
the class and to the motion."""

from __future__ import annotations

import numpy as np
import pytest

from sslray.data.synthetic import _hsv_to_rgb
from sslray.data.video import FPS, SAMPLE_RATE, generate_clips, log_mel, onsets, pitch


@pytest.fixture(scope="module")
def many_clips():
    """120 clips, 12 of each class: more than conftest's eight, for what holds per class."""
    return generate_clips(120, frames=16, size=32, seed=3)


def test_clips_are_deterministic_by_seed_and_split_and_shaped_as_documented(many_clips):
    video, labels, audio, f = many_clips
    assert video.shape == (120, 16, 3, 32, 32) and video.dtype == np.uint8
    assert audio.shape == (120, 16 // FPS * SAMPLE_RATE) and labels.shape == (120,)
    assert f["x"].shape == f["phase"].shape == (120, 16) and f["hue"].shape == (120,)
    again = generate_clips(120, frames=16, size=32, seed=3, threads=1)  # one frame after another
    assert np.array_equal(video, again[0]) and np.array_equal(audio, again[2])
    assert all(np.array_equal(f[k], again[3][k]) for k in f if k != "onsets")
    threaded = generate_clips(120, frames=16, size=32, seed=3, threads=5)
    assert np.array_equal(video, threaded[0]) and np.array_equal(audio, threaded[2])
    other = generate_clips(120, frames=16, size=32, seed=3, split="test")
    assert not np.array_equal(video, other[0])
    assert (np.abs(np.diff(f["x"], axis=1)) > 0).any()  # things move


def test_the_recorded_centre_is_on_the_shape_in_every_frame(many_clips):
    """Ground truth a tracker can trust: for the filled classes (circle, square) the pixel at the
    recorded centre has the clip's foreground colour, not its background's, in every frame."""
    video, labels, _, f = many_clips
    fg = _hsv_to_rgb(f["hue"].astype(float), np.full(120, 0.85), np.full(120, 0.95)) * 255
    checked = 0
    for i in np.flatnonzero(np.isin(labels, [0, 1])):
        for t in range(16):
            col = int((f["x"][i, t] + 1) / 2 * 32)
            row = int((f["y"][i, t] + 1) / 2 * 32)
            pixel = video[i, t, :, row, col].astype(float)
            hue_pixel = pixel / max(pixel.max(), 1)
            hue_fg = fg[i] / fg[i].max()
            assert np.abs(hue_pixel - hue_fg).max() < 0.25, (i, t)
            checked += 1
    assert checked >= 16 * 10


def test_onsets_are_the_extremes_of_the_limb_swing(many_clips):
    *_, f = many_clips
    times = onsets(f["phase"])
    assert sum(len(t) for t in times) > 60
    for p, hits in zip(f["phase"], times):
        frame_t = np.arange(16) / FPS
        for hit in hits:
            assert 0 <= hit <= frame_t[-1]
            assert abs(np.sin(np.interp(hit, frame_t, p))) == pytest.approx(1, abs=1e-6)


def test_the_sound_carries_the_class_pitch_and_is_loudest_at_the_onsets(many_clips):
    _, labels, audio, f = many_clips
    times = onsets(f["phase"])
    freqs = np.fft.rfftfreq(audio.shape[1], 1 / SAMPLE_RATE)
    done = 0
    for i in range(len(labels)):
        if not len(times[i]):
            continue
        peak = freqs[np.argmax(np.abs(np.fft.rfft(audio[i])))]
        assert peak == pytest.approx(pitch(labels[i]), abs=3.0)  # classes are a whole tone (>= 24 Hz) apart
        window = int(0.05 * SAMPLE_RATE)
        hit = int(times[i][0] * SAMPLE_RATE)
        loud = np.abs(audio[i, hit : hit + window]).mean()
        before = np.abs(audio[i, max(0, hit - 2 * window) : hit]).mean() if hit >= window else None
        assert before is None or loud > 2 * before
        done += 1
    assert done > 100


def test_log_mel_puts_a_higher_pitch_in_a_higher_band(many_clips):
    """At a clip's first onset (where the tone is loudest, above the noise), the loudest mel band
    of the highest-pitched class lies above that of the lowest-pitched one."""
    _, labels, audio, f = many_clips
    mel = log_mel(audio, hop=64)
    assert mel.shape[:2] == (120, 40) and bool(mel.isfinite().all())
    times = onsets(f["phase"])

    def band(i):
        frame = int(times[i][0] * SAMPLE_RATE / 64)
        return int(mel[i, :, frame : frame + 3].mean(-1).argmax())

    low = [band(i) for i in np.flatnonzero(labels == 0) if len(times[i])]
    high = [band(i) for i in np.flatnonzero(labels == 9) if len(times[i])]
    assert len(low) >= 3 and len(high) >= 3 and min(high) > max(low)
