"""Evaluate a trained trunk and record what the evaluation returns: metrics to MLflow and the run
folder, figures as artifacts, the per-layer table on the console. Used at the end of training
(rank 0) and by ``sslray eval``."""

from __future__ import annotations

from ..config import RunConfig
from ..eval import evaluate
from ..table import layer_table
from ..tracking import RunDir, Tracker


def evaluate_and_record(trunk, train, test, cfg: RunConfig, run_dir: RunDir, tracker: Tracker,
                        progress: bool = True) -> dict[str, float]:
    for source in (train, test):  # count what the evaluation's own passes replace, not training's
        getattr(source, "corrupt_seen", []).clear()
    result = evaluate(trunk, train, test, cfg.eval, seed=cfg.eval.seed,
                      title=f"{cfg.method} on {cfg.data.name}: top-1 by layer ({cfg.epochs} epochs)"
                            + (f", evaluated on {cfg.eval.data.name}" if cfg.eval.data else ""),
                      cache_dir=run_dir.features, cache_key=f"{tracker.run_id}|{cfg.epochs}")
    check_corrupt(train, test, cfg.eval.data or cfg.data, tracker, result.metrics, progress)
    tracker.log_metrics(result.metrics)
    run_dir.write_transfer(result.metrics)
    for name, fig in result.figures.items():
        tracker.log_artifact(run_dir.save_figure(fig, name), "plots")
    for name, record in result.records.items():
        tracker.log_artifact(run_dir.write_json(name, record))
    tracker.log_artifact(run_dir.file(RunDir.TRANSFER))
    if progress:
        if result.tables():
            print(layer_table(list(result.tables().items())))
        for line in result.lines():
            print(line)
    return result.metrics


def record_afterwards(after, cfg: RunConfig, run_dir: RunDir, tracker: Tracker, progress: bool = True) -> dict[str, float]:
    """Record what a method adds after training (:class:`~sslray.methods.Afterwards`): its figures,
    its metrics, and a linear probe (``<name>/top1``) on each set of features it returns (e.g. the
    audio subnetwork of audio-visual correspondence on sound classification)."""
    from ..eval.probes import fixed_probe

    metrics = dict(after.metrics)
    for name, (xtr, ytr, xte, yte) in after.features.items():
        metrics[f"{name}/top1"] = fixed_probe(xtr, ytr, xte, yte, int(max(ytr.max(), yte.max())) + 1, cfg.eval,
                                              seed=cfg.eval.seed)
    for name, fig in after.figures.items():
        tracker.log_artifact(run_dir.save_figure(fig, name), "plots")
    if metrics:
        tracker.log_metrics(metrics)
        if progress:
            print("  ".join(f"{k} {100 * v:.1f}%" if k.endswith("top1") else f"{k} {v:.3f}"
                            for k, v in sorted(metrics.items())), flush=True)
    return metrics


def evaluate_over_epochs(trunk, train, test, cfg: RunConfig, run_dir: RunDir, tracker: Tracker, final: dict[str, float],
                         progress: bool = True) -> dict[int, dict[str, float]]:
    """Evaluate the trunks kept after each of ``cfg.eval.at_epochs`` (the cheap per-layer protocols
    only: linear probe and kNN) and log ``at_epoch/<key>`` of their per-layer top-1
    (``at_epoch/transfer/<layer>/top1``, ``at_epoch/knn/<layer>/top1``) with the epoch as step — the
    final evaluation (``final``) too, at the last epoch — and ``over_epochs.png``: transfer by layer
    against pretext epochs beside the pretext accuracy (``train/acc``)."""
    import copy

    from ..eval import over_epochs, per_layer
    from ..eval.plots import plot_over_epochs
    from ..eval.results import metrics_of, over_epochs_results, results_of

    quick = over_epochs(cfg.eval)

    def kept(metrics: dict[str, float]) -> dict[str, float]:
        return metrics_of(over_epochs_results(results_of(metrics)))

    by_epoch = {cfg.epochs: kept(final)}
    snapshot = copy.deepcopy(trunk)
    for epoch in sorted(set(cfg.eval.at_epochs) - {cfg.epochs}):
        snapshot.load_state_dict(run_dir.load_trunk_at(epoch))
        if progress:
            print(f"evaluating the trunk after epoch {epoch}", flush=True)
        by_epoch[epoch] = kept(evaluate(snapshot, train, test, quick, seed=cfg.eval.seed).metrics)
    for epoch, metrics in sorted(by_epoch.items()):
        tracker.log_metrics({f"at_epoch/{k}": v for k, v in metrics.items()}, step=epoch)
    pretext = {step + 1: value for step, value in tracker.history("train/acc").items()}  # step = epoch - 1
    fig = plot_over_epochs({e: per_layer(m) for e, m in by_epoch.items()}, pretext,
                           title=f"{cfg.method} on {cfg.data.name}: how long to pretrain")
    tracker.log_artifact(run_dir.save_figure(fig, "over_epochs.png"), "plots")
    if progress:
        print(layer_table([(f"after {e} epochs", per_layer(m)) for e, m in sorted(by_epoch.items())]))
    return by_epoch


def check_corrupt(train, test, data, tracker: Tracker, metrics: dict, progress: bool) -> None:
    """Unreadable images a streamed evaluation replaced: counted (``eval/corrupt_images``), named
    (tag ``sslray.eval.corrupt_first``) and said, as training's are; past ``data.max_corrupt`` of the
    images evaluated, the evaluation's numbers are refused (one line, the run FAILED)."""
    from ..errors import UserError

    bad = list(dict.fromkeys(p for s in (train, test) for p in getattr(s, "corrupt_seen", [])))
    if not bad:
        return
    metrics["eval/corrupt_images"] = float(len(bad))
    tracker.set_tags({"sslray.eval.corrupt_first": "; ".join(bad[:5])[:5000]})
    total = len(train) + len(test)
    if len(bad) > data.max_corrupt * total:
        raise UserError(f"{len(bad)} unreadable images in the evaluation (more than data.max_corrupt="
                        f"{data.max_corrupt:g} of {total}), e.g. {bad[0]}")
    if progress:
        print(f"evaluation: {len(bad)} unreadable image(s) replaced, e.g. {bad[0]}", flush=True)
