"""How invariant is each layer to a transform, and what nuisance factors does it keep?

For every transform ``t`` of ``eval.invariance.transforms`` and every layer of ``eval.layers``, on the
(limited) test set, with the evaluation's pooling (:func:`~sslray.eval.features.extract_features`):

- ``invariance/<t>/<layer>/cosine``: mean cosine similarity of the pooled features of ``I`` and
  ``t(I)``, each image under a random non-identity variant of ``t`` (1 = invariant).
- ``invariance/<t>/<layer>/probe_top1``: a linear probe (:func:`~sslray.eval.probes.linear_probe`,
  the linear protocol's epochs / lr / weight decay) predicts which variant of ``t`` was applied, each
  image shown once under a variant drawn class-balanced (identity included); trained on a seeded
  half of the test set, scored on the other half. High = covariant; ``invariance/<t>/chance`` =
  invariant (the layer keeps no trace of ``t``).

Variants: ``rotation`` 0/90/180/270 deg (4 classes); ``jigsaw`` the 3x3 cells in place or shuffled
by a random permutation (2; both reassembled the same way, so only the order differs); ``color``
none or colour jitter (2); ``crop`` none or a random resized crop of 20-60% of the area (2);
``identity`` two identical variants (2; the sanity check: cosine 1, probe at chance).

On the synthetic data, the recorded nuisance factors are also read off each layer's features of
the untransformed images by ridge regression (same split; ridge strength picked on a held-out
fifth of the training half): ``factor/<name>/<layer>/r2`` for hue (as cos/sin of the hue angle),
x, y, angle and scale — the held-out R^2 (1 = linearly encoded, <= 0 = absent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..components.rotation import rotate
from ..components.tiles import assemble, shuffle_tiles, tile_grid
from ..components.augment import color_jitter, random_resized_crop
from ..models import extract_features
from .probes import linear_probe, standardize
from .protocols.base import Result
from .transforms import TRANSFORMS, VARIANTS

FACTORS = ("hue", "x", "y", "angle", "scale")



def _jigsaw(x: torch.Tensor, shuffled: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """Cut the central ``grid x grid`` lattice into its cells, permute the cells of the ``shuffled``
    images (never the identity), put them back and resize to the original size."""
    n, s, k = len(x), x.shape[-1], grid * grid
    cells = tile_grid(x, grid, tile=s // grid, jitter=False)
    perm = torch.argsort(torch.rand(n, k), dim=1)
    ident = torch.arange(k).expand(n, k)
    perm = torch.where((perm == ident).all(1, keepdim=True), perm.roll(1, dims=1), perm)
    perm = torch.where(shuffled[:, None], perm, ident)
    out = assemble(shuffle_tiles(cells, perm), grid)
    return F.interpolate(out, size=(s, s), mode="bilinear", align_corners=False) if out.shape[-1] != s else out


def apply_variant(name: str, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Images ``x`` in [0, 1] under variant ``v[i]`` of transform ``name`` (0 = the reference)."""
    on = (v > 0)[:, None, None, None]
    if name == "identity":
        return x
    if name == "rotation":
        return rotate(x, v)
    if name == "jigsaw":
        return _jigsaw(x, v > 0)
    if name == "color":
        return torch.where(on, color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=1.0), x)
    if name == "crop":
        return torch.where(on, random_resized_crop(x, scale=(0.2, 0.6)), x)
    raise KeyError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")


def _transformed(name: str, images: torch.Tensor, v: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    out = torch.empty_like(images)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk].float() / 255
        out[s : s + chunk] = apply_variant(name, x, v[s : s + chunk]).mul(255).round().clamp(0, 255).to(torch.uint8)
    return out


def ridge_r2(train_x, train_y, test_x, test_y, alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> float:
    """Held-out R^2 of ridge regression on standardised features (dual form: n x n Gram).

    The ridge strength (``alpha * D``) is chosen on the last fifth of the training rows."""
    xtr, xte = (t.double() for t in standardize(train_x, test_x))
    ytr, yte = train_y.double().reshape(len(train_y), -1), test_y.double().reshape(len(test_y), -1)

    def fit_predict(x, y, xq, alpha):
        gram = x @ x.T
        coef = torch.linalg.solve(gram + alpha * x.shape[1] * torch.eye(len(x), dtype=x.dtype), y - y.mean(0))
        return xq @ (x.T @ coef) + y.mean(0)

    def r2(pred, y):
        return 1 - float(((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp_min(1e-12))

    cut = max(1, int(0.8 * len(xtr)))
    best = max(alphas, key=lambda a: r2(fit_predict(xtr[:cut], ytr[:cut], xtr[cut:], a), ytr[cut:]))
    return r2(fit_predict(xtr, ytr, xte, best), yte)


def _factor_targets(factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name in FACTORS:
        if name in factors:
            f = factors[name].double()
            out[name] = torch.stack([torch.cos(2 * math.pi * f), torch.sin(2 * math.pi * f)], 1) if name == "hue" else f
    return out


def measure_invariance(trunk, test_set, layers, dim: int, transforms, probe, seed: int = 0,
                       protocol: str = "invariance") -> list[Result]:
    """Per transform ``t`` (variant ``t``): ``cosine`` and ``probe_top1`` per layer and its
    ``chance``; when the data records nuisance factors, ``r2`` per layer (variant ``factor/<name>``)
    — see the module docstring. ``probe``: the linear protocol's settings (epochs, lr, weight decay,
    batch size)."""
    layers = list(layers)
    device = next(trunk.parameters()).device
    n = len(test_set)
    if n < 4:
        return []
    images = test_set.images
    out: list[Result] = []
    with torch.random.fork_rng(devices=[]):  # seeded transforms; the caller's RNG stream is untouched
        torch.manual_seed(seed)
        split = torch.randperm(n)
        tr, te = split[: n // 2], split[n // 2 :]

        def features(imgs, desc):
            return extract_features(trunk, imgs, layers, dim, device=device, desc=desc)

        ref = features(images, "invariance: reference")
        for name in transforms:
            k = VARIANTS[name]
            label = torch.arange(n) % k
            label = label[torch.randperm(n)]  # class-balanced variant per image for the probe
            shown = torch.where(label > 0, label, torch.randint(1, k, (n,)))  # non-identity variant for the cosine
            base = ref if name != "jigsaw" else features(_transformed(name, images, torch.zeros(n, dtype=torch.long)),
                                                         f"invariance: {name} reference")
            moved = features(_transformed(name, images, shown), f"invariance: {name}")
            out.append(Result(protocol, "chance", 1 / k, None, name))
            for layer in layers:
                a, b = base[layer].float(), moved[layer].float()
                out.append(Result(protocol, "cosine", float(F.cosine_similarity(a, b, dim=1).mean()), layer, name, n))
                probe_x = torch.where((label > 0)[:, None], b, a)
                out.append(Result(protocol, "probe_top1", linear_probe(
                    probe_x[tr], label[tr], probe_x[te], label[te], k, probe.epochs, probe.lr, probe.weight_decay,
                    probe.batch_size, seed), layer, name, len(te)))
    for fname, target in _factor_targets(test_set.factors).items():
        for layer in layers:
            out.append(Result(protocol, "r2", ridge_r2(ref[layer][tr], target[tr], ref[layer][te], target[te]), layer,
                              f"factor/{fname}", len(te)))
    return out
