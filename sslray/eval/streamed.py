"""Linear probes on every layer at once, trained on a stream (VISSL's multi-head protocol): each
probe epoch passes the training split once through the frozen trunk, and every layer's pooled
features update that layer's own linear head; no feature is kept beyond its batch. The same
protocol as the cached probes (AdamW, cosine schedule, standardised features, top-1 on the test
split), except that the standardisation comes from a stated sample of the training split.
"""

from __future__ import annotations

import torch

from ..components.inputs import batch_inputs
from ..data.views import CENTRE
from ..models import pool_features
from ..progress import bar
from .probes import LinearHeads, grid_of, tuned_metrics


@torch.no_grad()
def _features(trunk, batch, view, layers, feature_dim, device) -> dict[str, torch.Tensor]:
    x, = batch_inputs(batch, [view], device)
    taps = trunk.taps(x, layers)
    return {layer: pool_features(f.float(), feature_dim) for layer, f in taps.items()}


def streamed_linear_probes(trunk, train, test, layers, feature_dim: int, s, seed: int = 0, device=None,
                           stats_images: int = 4096, grid: dict | None = None) -> dict[str, dict[str, tuple]]:
    """``{layer: {metric: (value, images)}}`` for every layer of ``layers``, from data sources, with
    the linear protocol's settings ``s`` (metrics as :func:`~sslray.eval.probes.tuned_metrics`'s;
    untuned: ``top1`` alone).

    Tuned (``s.tune``), every layer trains the whole ``(lr, weight_decay)`` grid at once; a seeded
    ``s.val_fraction`` of the training split (by global index) is held out, scored in one more pass
    after training, and picks each layer's head; ``grid`` receives the record."""
    device = device or next(trunk.parameters()).device
    layers = list(layers)
    view = CENTRE.at(train.image_size)
    was = trunk.training
    trunk.eval()
    settings = grid_of(s) if s.tune else [(s.lr, s.weight_decay)]
    held = torch.zeros(len(train), dtype=torch.bool)
    if s.tune:
        g = torch.Generator().manual_seed(seed)
        held[torch.randperm(len(train), generator=g)[: max(1, round(s.val_fraction * len(train)))]] = True
    # standardisation from the first training images of a seeded order: sums in float64, one pass
    sums, sq, n = {}, {}, 0
    for batch in train.epoch(0, min(s.batch_size, len(train)), seed, views=[view]):
        keep = ~held[batch.index]
        feats = _features(trunk, batch, view, layers, feature_dim, device)
        for layer, f in feats.items():
            f = f[keep.to(f.device)].double().cpu()
            sums[layer] = sums.get(layer, 0) + f.sum(0)
            sq[layer] = sq.get(layer, 0) + (f * f).sum(0)
        n += int(keep.sum())
        if n >= stats_images:
            break
    n = max(n, 1)
    mean = {layer: (sums[layer] / n).float().to(device) for layer in layers}
    std = {layer: ((sq[layer] / n - (sums[layer] / n) ** 2).clamp_min(0).sqrt().clamp_min(1e-4)).float().to(device)
           for layer in layers}
    torch.manual_seed(seed)
    heads = {layer: LinearHeads(len(mean[layer]), train.num_classes, settings).to(device) for layer in layers}
    steps = train.steps(s.batch_size) if len(train) >= s.batch_size else 1
    opts = [h.optimizer(s.epochs * steps) for h in heads.values()]
    batch_size = min(s.batch_size, len(train))
    for epoch in bar(range(s.epochs), desc="streamed probes", unit="epoch"):
        for batch in train.epoch(epoch, batch_size, seed + 1, views=[view]):
            keep = ~held[batch.index]
            if not keep.any():
                continue
            keep = keep.to(device)
            feats = _features(trunk, batch, view, layers, feature_dim, device)
            y = batch.labels.to(device)[keep]
            loss = sum(heads[layer].loss((f[keep] - mean[layer]) / std[layer], y) for layer, f in feats.items())
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:
                o.step()

    def score(batches, pick=None):
        out = {layer: [torch.zeros(len(settings), dtype=torch.long), torch.zeros(len(settings), dtype=torch.float64)]
               for layer in layers}
        total = 0
        for batch in batches:
            rows = torch.ones(len(batch.index), dtype=torch.bool) if pick is None else pick[batch.index]
            if not rows.any():
                continue
            rows = rows.to(device)
            feats = _features(trunk, batch, view, layers, feature_dim, device)
            y = batch.labels.to(device)[rows]
            for layer, f in feats.items():
                c, lo = heads[layer].scores((f[rows] - mean[layer]) / std[layer], y)
                out[layer][0] += c
                out[layer][1] += lo
            total += len(y)
        return out, total

    with torch.no_grad():
        test_scores, n_test = score(test.scan(256, [view]))
        if s.tune:
            val_scores, n_val = score(train.scan(256, [view]), held)
    trunk.train(was)
    if not s.tune:
        return {layer: {"top1": (float(test_scores[layer][0][0]) / max(n_test, 1), n_test)} for layer in layers}
    metrics: dict[str, dict[str, tuple]] = {}
    for layer in layers:
        metrics[layer], record = tuned_metrics(layer, settings, val_scores[layer], test_scores[layer], n_val, n_test)
        if grid is not None:
            grid[layer] = record
    return metrics
