"""Transfer evaluation of a frozen trunk: the protocols of ``eval.protocols``, each a registered
module of :mod:`sslray.eval.protocols` (linear probe and kNN per layer, fine-tuning, low-shot,
retrieval, invariance), run on one :class:`~sslray.eval.protocols.Scan` of the data whether it is
held in memory or streamed.

Protocol (logged beside every number): features of each layer are average-pooled to at most
``feature_dim`` values (Goyal et al. 2019, see :func:`sslray.models.pool_size`), extracted once
per layer with the trunk in eval mode and cached; a linear classifier is trained on the
standardised training features and scored top-1 on the test split; a weighted kNN vote
(k, temperature) on cosine similarity is scored on the same split.

Evaluation is a pure step: :func:`evaluate` returns results (and their metrics) and figures; the
caller logs them. Keys, tables and figures come from the results in :mod:`sslray.eval.results`.
"""

from __future__ import annotations

from importlib import import_module

from .protocols import Result, Scan, discover, over_epochs, settings_of

# Loaded when first used: reading results back (reports, compare) must not import torch.
_LAZY = {"Evaluation": "evaluation", "evaluate": "evaluation", "per_layer": "evaluation", "probe_layers": "evaluation",
         "probe_protocol": "evaluation", "run_protocols": "evaluation", "knn_top1": "probes",
         "linear_probe": "probes"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name == "extract_features":
        from ..models import extract_features

        return extract_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Result", "Scan", "discover", "over_epochs", "settings_of", *_LAZY, "extract_features"]
