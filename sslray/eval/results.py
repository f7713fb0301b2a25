"""Results as data: the one place where an evaluation's :class:`Result` s become MLflow keys,
tables and figures, and where MLflow keys are read back into results.

A result's key is ``<head>/[<variant>/][<layer>/]<metric>``, the head being its protocol's
(``Protocol.head``, else its name). The keys are those sslray always wrote — ``transfer/res3/top1``
(the linear probe), ``knn/res3/top1``, ``lowshot/1pct/linear/res3/top1``, ``finetune/top1``,
``retrieval/res3/shares/hue``, ``invariance/rotation/res3/cosine``; a variant a protocol spells in
place of its head (``untuned/res3/top1``, ``factor/hue/res3/r2``) is named by ``Protocol.own_heads``.
"""

from __future__ import annotations

from .. import LAYERS
from .protocols import Result, discover


def key(r: Result) -> str:
    """The MLflow key of a result."""
    cls = discover().get(r.protocol)
    first = r.variant.split("/")[0]
    if cls is not None and first in cls.own_heads:
        parts = [r.variant]
    else:
        parts = [cls.key_head() if cls else r.protocol] + ([r.variant] if r.variant else [])
    return "/".join(parts + ([r.layer] if r.layer else []) + [r.metric])


def _heads() -> dict[str, tuple[str, bool]]:
    """``{first part of a key: (protocol, is the variant's own head)}``."""
    out = {}
    for name, cls in discover().items():
        out[cls.key_head()] = (name, False)
        for h in cls.own_heads:
            out[h] = (name, True)
    return out


def parse(k: str, value: float) -> Result | None:
    """The result an MLflow key spells (None: a key of no protocol: ``train/loss``, ``health/rank``)."""
    parts = k.split("/")
    got = _heads().get(parts[0])
    if got is None or len(parts) < 2:
        return None
    protocol, own = got
    rest = parts[1:]
    at = next((i for i, p in enumerate(rest) if p in LAYERS), None)
    if at is None:
        variant, layer, metric = rest[:-1], None, rest[-1]
    else:
        variant, layer, metric = rest[:at], rest[at], "/".join(rest[at + 1:])
        if not metric:
            return None
    variant = ([parts[0]] if own else []) + variant
    return Result(protocol, metric, value, layer, "/".join(variant))


def results_of(metrics: dict[str, float]) -> list[Result]:
    """Every result among a run's metrics (its MLflow metrics or ``transfer.json``)."""
    return [r for r in (parse(k, v) for k, v in metrics.items()) if r is not None]


def metrics_of(results: list[Result]) -> dict[str, float]:
    return {key(r): r.value for r in results}


def of(results: list[Result], protocol: str, metric: str, variant: str = "") -> dict[str, float]:
    """``{layer: value}`` of one metric of one protocol (and variant)."""
    return {r.layer: r.value for r in results
            if r.protocol == protocol and r.metric == metric and r.variant == variant and r.layer}


def tables(results: list[Result]) -> dict[str, dict[str, float]]:
    """``{title: {layer: top1}}``: every per-layer ``top1`` a protocol titles (``Protocol.title_of``),
    in the order the protocols and variants first appear."""
    out: dict[str, dict[str, float]] = {}
    for r in sorted(results, key=lambda r: bool(r.variant)):  # each protocol's own table before its variants'
        cls = discover().get(r.protocol)
        title = cls.title_of(r.variant) if cls and r.layer and r.metric == "top1" else None
        if title:
            out.setdefault(title, {})[r.layer] = r.value
    return out


def lines(results: list[Result]) -> list[str]:
    """The numbers that belong to no table, one line each (each protocol's ``lines``, in the order
    the protocols registered; the per-layer probes' warnings last)."""
    known = discover()
    order = list(known)
    protocols = sorted({r.protocol for r in results if r.protocol in known},
                       key=lambda p: (known[p].over_epochs, order.index(p)))
    return [line for p in protocols for line in known[p].lines(results)]


# What the reports read, by what it means (no caller spells a protocol's name or key)

def linear_top1(metrics: dict[str, float]) -> dict[str, float]:
    """``{layer: top1}`` of the linear probe among a run's metrics."""
    return of(results_of(metrics), "linear", "top1")


def knn_top1(metrics: dict[str, float]) -> dict[str, float]:
    return of(results_of(metrics), "knn", "top1")


def linear_key(layer: str) -> str:
    """The key of a layer's linear probe top-1 (a study's default objective)."""
    return key(Result("linear", "top1", 0.0, layer))


def objective_layer(k: str) -> str | None:
    """The layer of a per-layer linear probe key (``transfer/res4/top1`` -> ``res4``), else None."""
    r = parse(k, 0.0)
    return r.layer if r and r.protocol == "linear" and r.metric == "top1" and not r.variant else None


def layer_of(k: str) -> str | None:
    """The layer of any result's key, else None."""
    r = parse(k, 0.0)
    return r.layer if r else None


def invariance(metrics: dict[str, float]) -> dict[tuple[str, str | None, str], float]:
    """``{(transform, layer or None, metric): value}`` of the invariance measures among a run's
    metrics (``cosine``, ``probe_top1`` per layer; ``chance`` of no layer)."""
    return {(r.variant, r.layer, r.metric): r.value for r in results_of(metrics)
            if r.protocol == "invariance" and not r.variant.startswith("factor/")}


def transforms(inv: dict) -> list[str]:
    """The transforms of :func:`invariance`'s output, sorted."""
    return sorted({t for t, _, _ in inv})


def finetune_top1(metrics: dict[str, float]) -> float | None:
    return next((r.value for r in results_of(metrics) if r.protocol == "finetune" and r.metric == "top1"
                 and not r.variant and r.layer is None), None)


def lowshot(metrics: dict[str, float]) -> dict[str, dict]:
    """``{subset: {"images": n, "whole_trunk": top1 fine-tuned, "per_layer": {layer: linear top1}}}``
    (what a run measured)."""
    out: dict[str, dict] = {}
    for r in results_of(metrics):
        if r.protocol != "lowshot":
            continue
        name, _, probe = r.variant.partition("/")
        got = out.setdefault(name, {})
        if r.metric == "images":
            got["images"] = r.value
        elif probe == "finetune":
            got["whole_trunk"] = r.value
        elif probe == "linear" and r.layer:
            got.setdefault("per_layer", {})[r.layer] = r.value
    return out


def retrieval(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{layer: {metric: value}}`` of the retrieval protocol (``precision_at_8``, ``shares/<factor>``, ...)."""
    out: dict[str, dict[str, float]] = {}
    for r in results_of(metrics):
        if r.protocol == "retrieval" and r.layer:
            out.setdefault(r.layer, {})[r.metric] = r.value
    return out


def over_epochs_results(results: list[Result]) -> list[Result]:
    """The per-layer ``top1`` of the protocols run on kept trunks (``at_epoch/...``)."""
    known = discover()
    return [r for r in results if r.protocol in known and known[r.protocol].over_epochs
            and r.metric == "top1" and not r.variant and r.layer]


AT_EPOCH = "at_epoch/"


def at_epoch_key(layer: str) -> str:
    """The key of a layer's linear probe top-1 on a trunk kept during training (``eval.at_epochs``)."""
    return AT_EPOCH + linear_key(layer)


def is_at_epoch(k: str) -> bool:
    """Whether a key is a per-layer probe's top-1 on a trunk kept during training."""
    return k.startswith(AT_EPOCH) and objective_layer(k[len(AT_EPOCH):]) is not None


def draws_invariance(families) -> bool:
    """Whether a study's report families ask for the invariance measures."""
    return any(FAMILIES.get(f) == "invariance" for f in families)


#: the families a study's report draws unless it names others
DEFAULT_FAMILIES = ("transfer", "knn")
#: what a study's report can draw, ``{family: protocol}``: a per-layer top-1 family or the
#: invariance measures (``report.families`` in a study file)
FAMILIES = {"transfer": "linear", "knn": "knn", "invariance": "invariance"}
