"""Audio-visual correspondence (Arandjelović & Zisserman 2017, "Look, Listen and Learn", the L³-Net):
does this sound go with this frame?

Each item pairs its frame (``views[0]``, the still of frame ``frame`` of a clip) with a window of
``sound_seconds`` of sound (:func:`pair_audio`): with probability ``positive_fraction`` the window
of its own clip centred on the frame's time (label 1), else a window of another clip of the batch
at a random time (label 0). The vision subnetwork is the trunk, its pooled res5 projected to
``embed_dim``; the audio subnetwork (:class:`~sslray.components.audio.AudioNet`) reads the window's
log-mel spectrogram, max-pools and projects to ``embed_dim``; the fusion network is the paper's
fc ``fusion_dim`` - ReLU - fc 2 on the two concatenated, and the loss cross-entropy.

After training: a linear probe of the audio subnetwork's max-pooled conv features (before its fc)
of the middle ``sound_seconds`` of every clip (``audio/top1``, sound classification); the
correspondence accuracy on the test clips, each once with its own sound and once with another's
(``avc/test_acc``, balanced, seeded); and where the net looks: occlusion maps of the middle frame
of up to 64 test clips (a grey square of a quarter of the side at an eighth-side stride; the drop
of the correspondence log-odds, logit 1 - logit 0, with the clip's own sound), ``avc/localisation_hit``
the share whose strongest-drop cell centre lies on the object (within scale x half-width of its
recorded centre) beside ``avc/localisation_chance``, the share of cells on it (a random cell's hit
rate); ``localisation.png`` shows six.

Departures from the paper: the paper concatenates the two subnetworks' 512-d max-pooled conv
features; here each is projected to ``embed_dim`` first, so neither side outweighs the other
whatever the widths. The vision features are the trunk's average-pooled res5 (the paper: a VGG-style
net, max-pooled). The paper's audio input is a 257-bin log spectrogram of 48-kHz sound; here a
log-mel spectrogram of the data's 4-kHz sound. The paper picks the frame at random within a
one-second clip; here the sound is centred on the frame, shifted to stay inside the clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..components.audio import AudioNet, spectrogram
from ..components.inputs import batch_inputs
from ..components.occlusion import heat_map, localisation_figure, occlusion_map, pointing_game
from ..config import MAX_DIM, MAX_FRAMES, MAX_WIDTH
from ..data.video import FPS
from ..errors import UserError
from . import register
from .base import Afterwards, Method, Strict, accuracy

N_FFT = 256  # the window of log_mel's STFT: a shorter sound has no spectrogram
LOCALISATION_CLIPS = 64
SHOWN = 6


class AVCSettings(Strict):
    sound_seconds: float = Field(1.0, gt=0, le=MAX_FRAMES / FPS,
                                 description="length of the sound window (s): the paper's one-second clip; at most "
                                             "the longest clip")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="share of items paired with their own sound "
                                     "(label 1); the rest get another clip's (the paper: half)")
    embed_dim: int = Field(128, ge=1, le=MAX_DIM, description="each subnetwork's output: the pooled features "
                                                              "projected to this size before fusion")
    fusion_dim: int = Field(128, ge=1, le=MAX_DIM, description="hidden size of the fusion network fc - ReLU - fc 2 "
                                                               "(the paper: 128)")
    n_mels: int = Field(40, ge=8, le=N_FFT // 2 + 1, description="mel bands of the audio subnetwork's log-mel "
                                                                 f"spectrogram: at most the {N_FFT}-sample STFT's "
                                                                 f"{N_FFT // 2 + 1} frequency bins, and every band "
                                                                 "must hold one (at 4 kHz: 121)")
    audio_width: float | None = Field(None, gt=0, le=MAX_WIDTH,
                                      description="channel multiplier of the audio subnetwork (1 = the paper's "
                                                  "64-128-256-512); default the trunk's width")


def mel_bands_fit(n_mels: int, sample_rate: int, n_fft: int = N_FFT) -> bool:
    """Whether every band of the log-mel filter bank (:func:`~sslray.data.video.log_mel`) holds a
    frequency bin of the ``n_fft``-sample STFT. Bands widen with frequency, so the lowest, from 0 Hz
    to the mel edge two steps up, is the one that can fall between bins: it holds one when that
    edge lies above the first bin, ``sample_rate / n_fft``."""
    top = 2595 * math.log10(1 + sample_rate / 2 / 700)
    return 700 * (10 ** (2 * top / (n_mels + 1) / 2595) - 1) > sample_rate / n_fft


def windows(audio: torch.Tensor, clip: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """``audio[clip[i], start[i] : start[i] + length]`` for every ``i``: ``(B, length)``."""
    return audio[clip[:, None], start[:, None] + torch.arange(length, device=audio.device)]


def pair_audio(audio: torch.Tensor, frame: torch.Tensor, fps: int, sample_rate: int, seconds: float,
               positive: float | torch.Tensor, generator: torch.Generator | None = None):
    """The sound of each item's pair: ``(segments (B, L), source_clip (B,), label (B,))``.

    A positive (label 1) is the item's own waveform, ``seconds`` long, centred on its frame's time
    ``frame / fps`` and shifted to stay inside the clip; a negative (label 0) a window of a random
    other clip of the batch at a random time, placed alike (around a random frame's time: a window
    at the clip's edge says nothing of the label). ``positive`` is the probability of a positive, or a
    boolean mask saying which items are. A batch of one clip has no other: all its pairs are positive.
    Randomness from ``generator`` (CPU), the same draws whatever the labels."""
    b, total = audio.shape
    n = int(round(seconds * sample_rate))
    if not 0 < n <= total:
        raise ValueError(f"a window of {n} samples does not fit clips of {total}")

    def around(f: torch.Tensor) -> torch.Tensor:  # the window centred on frame f's time, inside the clip
        return (f.long() * sample_rate // fps - n // 2).clamp(0, total - n)

    draw = torch.rand(b, generator=generator)
    label = positive.cpu().bool() if torch.is_tensor(positive) else draw < positive
    other = (torch.arange(b) + torch.randint(1, max(b, 2), (b,), generator=generator)) % b
    frames = max(1, round(total * fps / sample_rate))
    at = around(torch.randint(0, frames, (b,), generator=generator))  # placed as a positive is: no cue in where
    own = around(frame.cpu())
    if b < 2:
        label = torch.ones(b, dtype=torch.bool)
    source = torch.where(label, torch.arange(b), other).to(audio.device)
    start = torch.where(label, own, at).to(audio.device)
    return windows(audio, source, start, n), source, label.long().to(audio.device)


@register
class AVC(Method):
    """Tell whether a sound and a frame come from the same clip (audio-visual correspondence; Arandjelović 2017)."""

    name = "avc"
    Settings = AVCSettings
    needs = ("audio", "frame")

    @classmethod
    def check_config(cls, settings, info):
        s = settings.sound_seconds
        if info.frames and info.fps and s > info.frames / info.fps:
            raise UserError(f"avc: a {s:g}-s sound clip is longer than the {info.frames / info.fps:g}-s video "
                            f"({info.frames} frames at {info.fps} frames/s): use sound_seconds <= "
                            f"{info.frames / info.fps:g} or more frames (data.frames)")
        if info.sample_rate and round(s * info.sample_rate) < N_FFT:
            raise UserError(f"avc: a {s:g}-s sound clip is {round(s * info.sample_rate)} samples at "
                            f"{info.sample_rate} Hz, shorter than the spectrogram's {N_FFT}-sample window: "
                            f"use sound_seconds >= {N_FFT / info.sample_rate:g}")
        if info.sample_rate and not mel_bands_fit(settings.n_mels, info.sample_rate):
            most = max(n for n in range(1, N_FFT // 2 + 2) if mel_bands_fit(n, info.sample_rate))
            raise UserError(f"avc: n_mels={settings.n_mels} mel bands of {info.sample_rate}-Hz sound leave the lowest "
                            f"without a frequency bin of the {N_FFT}-sample spectrogram: use n_mels <= {most}")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.embed_dim
        s = settings
        self.vision_fc = nn.Linear(trunk.out_dim, s.embed_dim)
        self.audio_net = AudioNet(s.audio_width or getattr(trunk, "width", 1.0))
        self.audio_fc = nn.Linear(self.audio_net.out_dim, s.embed_dim)
        self.fusion = nn.Sequential(nn.Linear(2 * s.embed_dim, s.fusion_dim), nn.ReLU(inplace=True),
                                    nn.Linear(s.fusion_dim, 2))

    def describe(self):
        return {"audio_channels": self.audio_net.out_dim}

    def sound_features(self, segments: torch.Tensor) -> torch.Tensor:
        """The audio subnetwork's max-pooled conv features of waveforms ``(B, L)``."""
        return self.audio_net(spectrogram(segments, self.info.sample_rate, self.settings.n_mels))

    def logits(self, image_embedding: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        a = self.audio_fc(self.sound_features(segments))
        return self.fusion(torch.cat([image_embedding, a.to(image_embedding.dtype)], 1))

    def forward(self, views, y, idx, audio, frame):
        s = self.settings
        segments, _, label = pair_audio(audio, frame, self.info.fps, self.info.sample_rate, s.sound_seconds,
                                        s.positive_fraction)
        logits = self.logits(self.vision_fc(self.trunk(views[0])), segments)
        return {"loss": F.cross_entropy(logits.float(), label), "acc": accuracy(logits, label)}

    # ---- after training: the audio probe's features, correspondence on the test clips, localisation

    def _batches(self, source, batch_size: int = 256):
        """``(images float (B, 3, S, S), labels, audio, frame, track)`` of every clip, on this device."""
        device = next(self.parameters()).device
        for batch in source.scan(batch_size):
            x, = batch_inputs(batch, self.input_views(), device)
            e = batch.extra
            yield x, batch.labels, e["audio"].to(device), e["frame"], e["track"]

    def audio_features(self, source) -> tuple[torch.Tensor, torch.Tensor]:
        """The :meth:`sound_features` of the middle ``sound_seconds`` of every clip, and the labels."""
        feats, labels = [], []
        n = int(round(self.settings.sound_seconds * self.info.sample_rate))
        for _, y, audio, _, _ in self._batches(source):
            start = (audio.shape[1] - n) // 2
            feats.append(self.sound_features(audio[:, start:start + n]).float().cpu())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def correspondence_accuracy(self, source, seed: int = 0) -> float:
        """Every clip's frame once with its own sound, once with another's (seeded): the share right.
        A last batch of a single clip is left out (no other clip to pair it with)."""
        g, right, seen = torch.Generator().manual_seed(seed), 0, 0
        s = self.settings
        for x, _, audio, frame, _ in self._batches(source):
            if len(x) < 2:
                continue
            v = self.vision_fc(self.trunk(x))
            for positive in (True, False):
                seg, _, label = pair_audio(audio, frame, self.info.fps, self.info.sample_rate, s.sound_seconds,
                                           torch.full((len(x),), positive), g)
                right += int((self.logits(v, seg).argmax(1) == label).sum())
                seen += len(x)
        return right / max(seen, 1)

    def occlusion(self, x: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The drop of the correspondence log-odds, logit 1 - logit 0, with ``segments`` when a grey
        square hides each cell (:func:`~sslray.components.occlusion.occlusion_map`): ``(drops (B, n,
        n), square side, stride)``."""
        a = self.audio_fc(self.sound_features(segments))

        def log_odds(images):  # k * B images, cell-major: item i's sound pairs with every k-th block's row i
            out = self.fusion(torch.cat([self.vision_fc(self.trunk(images)), a.repeat(len(images) // len(a), 1)], 1))
            return out[:, 1] - out[:, 0]

        return occlusion_map(log_odds, x)

    def localisation(self, source) -> tuple[dict[str, float], object]:
        """The pointing game of the occlusion maps of the middle frame of up to ``LOCALISATION_CLIPS``
        test clips with their own sound, and the figure of the first ``SHOWN``."""
        x, _, audio, frame, track = next(self._batches(source, LOCALISATION_CLIPS))
        s, size = self.settings, x.shape[-1]
        segments, _, _ = pair_audio(audio, frame, self.info.fps, self.info.sample_rate, s.sound_seconds,
                                    torch.ones(len(x), dtype=torch.bool))
        drops, side, stride = self.occlusion(x, segments)
        drops = drops.float().cpu()
        at = track[torch.arange(len(x)), frame.long()].float()  # x, y, scale of the shown frame
        centre = (at[:, :2] + 1) / 2 * size  # pixels (column, row)
        radius = at[:, 2] * size / 2
        hit, inside = pointing_game(drops, side, stride, centre, radius)
        metrics = {"avc/localisation_hit": hit.float().mean().item(),
                   "avc/localisation_chance": inside.flatten(1).float().mean(1).mean().item()}
        heat = heat_map(drops, side, stride, size)
        title = ("avc: occlusion drop of the correspondence log-odds with the clip's own sound "
                 "(+: the object's recorded centre)")
        return metrics, localisation_figure(x[:SHOWN].float().cpu(), heat[:SHOWN], centre, radius, hit, title, SHOWN)

    @torch.no_grad()
    def after_training(self, train, test) -> Afterwards:
        was = self.training
        self.eval()
        try:
            features = {"audio": (*self.audio_features(train), *self.audio_features(test))}
            metrics = {"avc/test_acc": self.correspondence_accuracy(test)}
            located, fig = self.localisation(test)
        finally:
            self.train(was)
        return Afterwards({**metrics, **located}, {"localisation.png": fig}, features)
