"""Generated clips with a sound track: the embedded shapes in motion (issue 16, the data step).

A clip is ``frames`` frames of one of the ten shape classes of :mod:`.synthetic`, moving along a
smooth trajectory, rotating and breathing in scale, with a two-part "limb" (a bar hinged at the
shape's centre) that swings back and forth: a pose whose phase a frame-order task can read. The
background and lighting of a clip are drawn once and drift slowly over its frames. Each clip has
a sound track at a low sample rate: a tone whose pitch and timbre depend on the class, struck at
every extreme of the limb's swing (an onset event tied to the motion), over background noise.

Recorded per frame: ``x``, ``y`` (centre, as in :mod:`.synthetic`), ``scale``, ``angle``,
``phase`` (the limb's pose phase, radians) and ``limb_angle`` (degrees); per clip: ``label``,
``hue``, ``bg_hue``, ``texture``, ``light``, ``noise`` (the sound's noise level) and the onset
times. Everything is deterministic in ``(seed, split)``.

Sound becomes log-mel spectrograms with ``torch.stft`` and a triangular mel filter bank
(:func:`log_mel`); torchaudio is not needed.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .synthetic import CLASSES, _factors, _hsv_to_rgb, _render

FPS = 8  # frames per second of a clip: 16 frames = 2 s
SAMPLE_RATE = 4000  # Hz of the sound track
_SPLIT_STREAM = {"train": 0, "test": 1}
_LIMB_SWING = 50.0  # degrees either side of the limb's rest angle


def _motion(rng: np.random.Generator, n: int, frames: int) -> dict[str, np.ndarray]:
    """Per-frame factors (N, T): a smooth path inside the frame, rotation, scale, the limb's phase."""
    t = np.arange(frames)[None] / FPS  # seconds
    def smooth(lo, hi, amp):
        start = rng.uniform(lo, hi, (n, 1))
        drift = rng.uniform(-amp, amp, (n, 1)) * t
        wobble = rng.uniform(0, amp / 2, (n, 1)) * np.sin(2 * np.pi * rng.uniform(0.2, 0.6, (n, 1)) * t
                                                       + rng.uniform(0, 2 * np.pi, (n, 1)))
        return np.clip(start + drift + wobble, -0.35, 0.35)

    rate = rng.uniform(0.6, 1.4, (n, 1))  # limb swings per second (one swing: one extreme to the other)
    return {
        "x": smooth(-0.25, 0.25, 0.12),
        "y": smooth(-0.25, 0.25, 0.12),
        "scale": rng.uniform(0.35, 0.5, (n, 1)) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5, (n, 1)) * t)),
        "angle": rng.uniform(-20, 20, (n, 1)) + rng.uniform(-10, 10, (n, 1)) * t,
        "phase": np.pi * rate * t + rng.uniform(0, 2 * np.pi, (n, 1)),
        "limb_rest": np.repeat(rng.uniform(0, 360, (n, 1)), frames, 1),
    }


def _limb(frames: np.ndarray, m: dict, t: int, hue: np.ndarray, size: int) -> None:
    """Draw each clip's limb at frame ``t`` in place: a capsule from the shape's centre, darker than it."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    py, px = np.meshgrid(c, c, indexing="ij")
    ang = np.deg2rad(m["limb_angle"][:, t])[:, None, None]
    cx, cy = m["x"][:, t][:, None, None], m["y"][:, t][:, None, None]
    length = 1.3 * m["scale"][:, t][:, None, None]
    dx, dy = px[None] - cx, py[None] - cy
    along = np.clip(dx * np.cos(ang) + dy * np.sin(ang), 0, length)
    dist = np.hypot(dx - along * np.cos(ang), dy - along * np.sin(ang))
    width = 0.12 * m["scale"][:, t][:, None, None]
    alpha = np.clip(0.5 - (dist - width) / (2.0 / size), 0, 1)[:, None]
    colour = _hsv_to_rgb(hue, np.full(len(hue), 0.9), np.full(len(hue), 0.55))[:, :, None, None] * 255
    frames[:, t] = (alpha * colour + (1 - alpha) * frames[:, t]).round().astype(np.uint8)


def onsets(phase: np.ndarray) -> list[np.ndarray]:
    """The frame times (s) at which each clip's limb reaches an extreme of its swing: where
    ``sin(phase)`` passes +-1, i.e. ``phase`` crosses pi/2 + k pi."""
    out = []
    for p in phase:
        k0, k1 = math.ceil((p[0] - np.pi / 2) / np.pi), math.floor((p[-1] - np.pi / 2) / np.pi)
        crossings = np.pi / 2 + np.pi * np.arange(k0, k1 + 1)
        rate = (p[-1] - p[0]) / ((len(p) - 1) / FPS)  # radians per second
        out.append((crossings - p[0]) / rate)
    return out


def pitch(label: np.ndarray) -> np.ndarray:
    """A class's fundamental (Hz): ten steps of a whole tone from 220 Hz (the class's pitch family)."""
    return 220.0 * 2 ** (np.asarray(label) * 2 / 12)


def _sound(rng: np.random.Generator, labels: np.ndarray, times: list[np.ndarray], samples: int) -> tuple:
    """Per clip: the class's tone (pitch from :func:`pitch`, a timbre of harmonics by class) struck
    at every onset with an exponential decay, over white noise at a per-clip level."""
    t = np.arange(samples) / SAMPLE_RATE
    noise_level = rng.uniform(0.02, 0.1, len(labels))
    wave = noise_level[:, None] * rng.standard_normal((len(labels), samples))
    for i, (label, hits) in enumerate(zip(labels, times)):
        f0 = pitch(label)
        tone = sum((1 / h) ** (1 + (label % 3)) * np.sin(2 * np.pi * h * f0 * t) for h in (1, 2, 3))
        env = np.zeros(samples)
        for hit in hits:
            after = t - hit
            env += np.where(after >= 0, np.exp(-np.clip(after, 0, None) / 0.08), 0.0)
        wave[i] += 0.5 * env * tone
    return wave.astype(np.float32), noise_level.astype(np.float32)


def generate_clips(n: int, frames: int = 16, size: int = 32, seed: int = 0, split: str = "train",
                   threads: int | None = None):
    """``n`` clips, deterministic in ``(seed, split)``: ``(frames uint8 (N, T, 3, S, S), labels int64
    (N,), audio float32 (N, T / FPS * SAMPLE_RATE), factors)``; ``factors`` maps per-clip names to
    (N,) arrays, per-frame names to (N, T) arrays, and ``onsets`` to a list of per-clip times (s).
    ``threads`` render frames side by side (default: the CPUs this process may use); the bytes do
    not depend on it."""
    if frames < 1 or size < 8:
        raise ValueError("a clip needs at least one frame of at least 8 px")
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], 0x5552])
    clip = _factors(rng, n)
    clip["texture"] = np.where(clip["texture"] == 3, 2, clip["texture"])  # no per-frame noise texture
    m = _motion(rng, n, frames)
    m["limb_angle"] = m["limb_rest"] + _LIMB_SWING * np.sin(m["phase"])
    drift = np.linspace(0, 1, frames)[None]
    bg_hue = (clip["bg_hue"][:, None] + 0.03 * drift) % 1.0  # the background drifts slowly
    light = np.clip(clip["light"][:, None] + 0.1 * drift, 0, 0.7)
    video = np.empty((n, frames, 3, size, size), np.uint8)

    def frame(t: int) -> None:  # frames are independent: each writes its own video[:, t]
        f = {**clip, "x": m["x"][:, t], "y": m["y"][:, t], "scale": m["scale"][:, t], "angle": m["angle"][:, t],
             "bg_hue": bg_hue[:, t], "light": light[:, t]}
        video[:, t] = _render(f, np.random.default_rng(0), size)
        _limb(video, m, t, clip["hue"], size)

    # numpy's array work releases the GIL, so threads render the frames (and make the sound) side by
    # side: 5,000 clips of 16 frames at 32 px took 21 s one after another and 11 s on 2 cores here
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, min(frames, threads))) as pool:
        times = onsets(m["phase"])  # the sound is the only user of ``rng`` from here on
        sound = pool.submit(_sound, rng, clip["label"], times, int(round(frames / FPS * SAMPLE_RATE)))
        list(pool.map(frame, range(frames)))
        audio, noise = sound.result()
    factors = {k: clip[k].astype(np.float32) for k in ("hue", "texture")}
    factors.update(bg_hue=bg_hue.astype(np.float32), light=light.astype(np.float32), noise=noise, onsets=times)
    factors.update({k: m[k].astype(np.float32) for k in ("x", "y", "scale", "angle", "phase", "limb_angle")})
    return video, clip["label"].astype(np.int64), audio, factors


def log_mel(wave, sample_rate: int = SAMPLE_RATE, n_mels: int = 40, n_fft: int = 256, hop: int = 64):
    """Log-mel spectrograms ``(N, n_mels, frames)`` of waveforms ``(N, L)`` (``torch.stft``, Hann
    window, a triangular mel filter bank from 0 Hz to Nyquist, log of power + 1e-6), on the waves' device."""
    import torch

    wave = torch.as_tensor(wave, dtype=torch.float32)
    dev = wave.device
    spec = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft, device=dev), return_complex=True).abs() ** 2
    def mel(f):
        return 2595 * math.log10(1 + f / 700)
    edges = torch.linspace(0, mel(sample_rate / 2), n_mels + 2, device=dev)
    hz = 700 * (10 ** (edges / 2595) - 1)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, device=dev)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    bank = torch.clamp(torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), min=0)  # (M, F)
    return torch.log(bank @ spec + 1e-6)


__all__ = ["CLASSES", "FPS", "SAMPLE_RATE", "generate_clips", "log_mel", "onsets", "pitch"]
