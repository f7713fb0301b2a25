"""Nearest neighbours in feature space: what a layer retrieves, as numbers and as a picture.

For every layer, each test image queries the training split by cosine similarity of its pooled
features (the kNN probe's features):

- ``retrieval/<layer>/recall_at_1`` and ``recall_at_8``: the share of queries with at least one
  image of their own class among the nearest 1 / 8 (Recall@k of metric learning);
- ``retrieval/<layer>/precision_at_8``: the share of the 8 nearest that are of the query's class;
- ``retrieval/<layer>/floor_precision_at_8``: the same for an untrained trunk of the same shape
  (seeded by ``eval.seed``): the floor beside the number;
- on data that records nuisance factors (the embedded shapes), ``retrieval/<layer>/shares/<factor>``:
  how much more the 8 nearest share each factor with the query than random training images do —
  1 - (mean factor distance to the neighbours) / (mean distance to random images) for hue, position,
  scale, angle, lighting, brightness (hue on its circle); (same-texture rate - chance) / (1 - chance)
  for the background texture; on clips (``synthetic_video``) also the pose: ``swing`` (where the limb
  is in its swing, sin of its phase) and ``limb`` (its angle, on the circle). 0 = no more than
  chance, 1 = always the same: the lecture's "what does
  it look at", as a number.

And a figure per layer, ``retrieval_<layer>.png``: eight fixed queries (one per class, drawn by
``eval.seed``), each with its 8 nearest training images from the trained trunk and, to the right,
from the untrained one.
"""

from __future__ import annotations

import numpy as np
import torch

from .protocols.base import Result

K = 8
CIRCULAR = {"hue", "bg_hue", "limb"}
CATEGORICAL = {"texture"}
SHARED = ("hue", "bg_hue", "x", "y", "scale", "angle", "texture", "light", "brightness", "swing", "limb")


def neighbours(train_x: torch.Tensor, query_x: torch.Tensor, k: int) -> torch.Tensor:
    """``(queries, k)`` indices of the nearest training features by cosine similarity (faiss)."""
    from ..components.faiss import faiss

    xtr = np.ascontiguousarray(train_x.float().numpy())
    xq = np.ascontiguousarray(query_x.float().numpy())
    faiss.normalize_L2(xtr)
    faiss.normalize_L2(xq)
    index = faiss.IndexFlatIP(xtr.shape[1])
    index.add(xtr)
    _, nn = index.search(xq, min(k, len(xtr)))
    return torch.from_numpy(nn).long()


def class_metrics(nn: torch.Tensor, train_labels: torch.Tensor, query_labels: torch.Tensor) -> dict[str, float]:
    same = train_labels[nn] == query_labels[:, None]
    return {"recall_at_1": float(same[:, :1].any(1).float().mean()),
            "recall_at_8": float(same[:, :K].any(1).float().mean()),
            "precision_at_8": float(same[:, :K].float().mean())}


def _distance(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name in CATEGORICAL:
        return (a != b).double()
    d = (a - b).abs().double()
    return torch.minimum(d, 1 - d) if name in CIRCULAR else d


def shared_factors(nn: torch.Tensor, train_factors: dict, query_factors: dict, seed: int = 0) -> dict[str, float]:
    """``{factor: share}`` (see the module docstring): 0 = neighbours share it no more than random
    training images, 1 = always identical."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in SHARED:
        if name not in train_factors or name not in query_factors:
            continue
        ftr, fq = train_factors[name], query_factors[name]
        near = _distance(name, ftr[nn], fq[:, None]).mean()
        rand = _distance(name, ftr[torch.randint(len(ftr), nn.shape, generator=g)], fq[:, None]).mean()
        out[name] = float(1 - near / rand) if rand > 0 else 0.0
    return out


def queries(labels: torch.Tensor, seed: int = 0, n: int = 8) -> torch.Tensor:
    """One test image of each of the first ``n`` classes present, drawn by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(labels)[:n]:
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randint(len(idx), (1,), generator=g)])
    return torch.cat(out)


def grid_figure(query_images: torch.Tensor, train_images: torch.Tensor, nn_trained: torch.Tensor,
                nn_random: torch.Tensor, title: str = ""):
    """Rows: queries; columns: the query, its 8 nearest (trained trunk), a gap, its 8 nearest
    (untrained trunk). Images are uint8 (N, 3, S, S)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(query_images), 2 + 2 * K  # query, K trained, a gap, K untrained
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.75 + 0.6), squeeze=False)
    for r in range(rows):
        tiles = [query_images[r], *train_images[nn_trained[r, :K]], None, *train_images[nn_random[r, :K]]]
        for ax, img in zip(axes[r], tiles):
            ax.axis("off")
            if img is not None:
                ax.imshow(img.permute(1, 2, 0).numpy())
    axes[0][0].set_title("query", fontsize=7)
    axes[0][1 + K // 2].set_title("nearest 8, trained", fontsize=7)
    axes[0][2 + K + K // 2].set_title("nearest 8, untrained", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, top=1 - 0.5 / (rows * 0.75 + 0.6))
    return fig


def retrieval(trunk, train_set, test_set, feats: dict, layers, feature_dim: int, seed: int = 0, device=None,
              title: str = "", protocol: str = "retrieval") -> tuple[list[Result], dict]:
    """Results per layer (metrics as in the module docstring; ``shares/<factor>``) and figures
    ``{retrieval_<layer>.png: figure}`` from the trained trunk's pooled features ``feats``
    (``{"train"|"test": {layer: (N, D)}}``)."""
    from ..models import build_trunk, extract_features

    torch.manual_seed(seed)
    floor = build_trunk(trunk.arch, trunk.width, trunk.stem, train_set.image_size,
                        getattr(trunk, "norm", "batch")).to(device or "cpu")
    floor.input_mean.copy_(trunk.input_mean)
    floor.input_std.copy_(trunk.input_std)
    floor_feats = {split: extract_features(floor, data.images, layers, feature_dim, device=device,
                                           desc=f"untrained features {split}")
                   for split, data in (("train", train_set), ("test", test_set))}
    picked = queries(test_set.labels, seed)
    out: list[Result] = []
    figures = {}
    n = len(test_set)
    for layer in layers:
        nn = neighbours(feats["train"][layer], feats["test"][layer], K)
        nn_floor = neighbours(floor_feats["train"][layer], floor_feats["test"][layer], K)
        for key, value in class_metrics(nn, train_set.labels, test_set.labels).items():
            out.append(Result(protocol, key, value, layer, n=n))
        out.append(Result(protocol, "floor_precision_at_8", class_metrics(
            nn_floor, train_set.labels, test_set.labels)["precision_at_8"], layer, n=n))
        for name, share in shared_factors(nn, train_set.factors, test_set.factors, seed).items():
            out.append(Result(protocol, f"shares/{name}", share, layer, n=n))
        figures[f"retrieval_{layer}.png"] = grid_figure(
            test_set.images[picked], train_set.images, nn[picked], nn_floor[picked],
            title=f"{title.split(':')[0]}, {layer}: queries and their nearest training images".lstrip(", "))
    return out, figures
