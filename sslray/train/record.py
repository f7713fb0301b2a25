"""Evaluate a trained trunk and record what the evaluation returns: metrics to MLflow and the run
folder, figures as artifacts, the per-layer table on the console. Used at the end of training
(rank 0) and by ``sslray eval``."""

from __future__ import annotations

from ..eval import evaluate
from ..table import layer_table
from ..tracking import RunDir, Tracker


def evaluate_and_record(trunk, train, test, cfg, run_dir: RunDir, tracker: Tracker,
                        progress: bool = True) -> dict[str, float]:
    result = evaluate(trunk, train, test, cfg.eval, seed=cfg.eval.seed,
                      title=f"{cfg.method} on {cfg.data.name}: top-1 by layer ({cfg.epochs} epochs)",
                      cache_dir=run_dir.features, cache_key=f"{tracker.run_id}|{cfg.epochs}")
    tracker.log_metrics(result.metrics)
    run_dir.write_transfer(result.metrics)
    for name, fig in result.figures.items():
        tracker.log_artifact(run_dir.save_figure(fig, name), "plots")
    for name, record in result.records.items():
        tracker.log_artifact(run_dir.write_json(name, record))
    tracker.log_artifact(run_dir.file(RunDir.TRANSFER))
    if progress:
        print(layer_table(list(result.tables().items())))
        for line in result.lines():
            print(line)
    return result.metrics
