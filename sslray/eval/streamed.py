"""Linear probes on every layer at once, trained on a stream (VISSL's multi-head protocol): each
probe epoch passes the training split once through the frozen trunk, and every layer's pooled
features update that layer's own linear head; no feature is kept beyond its batch. The same
protocol as the cached probes (AdamW, cosine schedule, standardised features, top-1 on the test
split), except that the standardisation comes from a stated sample of the training split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..components.augment import cut_views
from ..data.views import CENTRE
from ..models import pool_features
from ..progress import bar


@torch.no_grad()
def _features(trunk, batch, view, layers, feature_dim, device) -> dict[str, torch.Tensor]:
    x = batch.views[0].to(device).float().div_(255)
    if not batch.cut:
        x = cut_views(x, [view])[0]
    taps = trunk.taps(x.contiguous(memory_format=torch.channels_last), layers)
    return {layer: pool_features(f.float(), feature_dim) for layer, f in taps.items()}


def streamed_linear_probes(trunk, train, test, cfg, seed: int = 0, device=None,
                           stats_images: int = 4096) -> dict[str, float]:
    """``{"transfer/<layer>/top1": ...}`` for every layer of ``cfg.layers``, from data sources."""
    device = device or next(trunk.parameters()).device
    layers = list(cfg.layers)
    view = CENTRE.at(train.image_size)
    was = trunk.training
    trunk.eval()
    # standardisation from the first images of a seeded order: sums in float64, one pass
    sums, sq, n = {}, {}, 0
    for batch in train.epoch(0, min(cfg.probe_batch_size, len(train)), seed, views=[view]):
        feats = _features(trunk, batch, view, layers, cfg.feature_dim, device)
        for layer, f in feats.items():
            f = f.double().cpu()
            sums[layer] = sums.get(layer, 0) + f.sum(0)
            sq[layer] = sq.get(layer, 0) + (f * f).sum(0)
        n += len(batch.index)
        if n >= stats_images:
            break
    mean = {layer: (sums[layer] / n).float().to(device) for layer in layers}
    std = {layer: ((sq[layer] / n - (sums[layer] / n) ** 2).clamp_min(0).sqrt().clamp_min(1e-4)).float().to(device)
           for layer in layers}
    torch.manual_seed(seed)
    heads = {layer: torch.nn.Linear(len(mean[layer]), train.num_classes).to(device) for layer in layers}
    params = [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay)
    steps = train.steps(cfg.probe_batch_size) if len(train) >= cfg.probe_batch_size else 1
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.probe_epochs * steps)
    batch_size = min(cfg.probe_batch_size, len(train))
    for epoch in bar(range(cfg.probe_epochs), desc="streamed probes", unit="epoch"):
        for batch in train.epoch(epoch, batch_size, seed + 1, views=[view]):
            feats = _features(trunk, batch, view, layers, cfg.feature_dim, device)
            y = batch.labels.to(device)
            # one optimiser over all heads: each head's loss only reaches its own parameters
            loss = sum(F.cross_entropy(heads[layer]((f - mean[layer]) / std[layer]), y) for layer, f in feats.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    correct, total = {layer: 0 for layer in layers}, 0
    with torch.no_grad():
        for batch in test.scan(256, [view]):
            feats = _features(trunk, batch, view, layers, cfg.feature_dim, device)
            y = batch.labels.to(device)
            for layer, f in feats.items():
                correct[layer] += int((heads[layer]((f - mean[layer]) / std[layer]).argmax(1) == y).sum())
            total += len(y)
    trunk.train(was)
    return {f"transfer/{layer}/top1": correct[layer] / max(total, 1) for layer in layers}
