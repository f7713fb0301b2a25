"""``sslray`` command line: train, evaluate, compare runs, sweep, report, list methods, open the MLflow UI.

Every user mistake ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import Interrupted, UserError
from .paths import check_output


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + error otherwise)
        raise UserError(message if self.prog == "sslray" else f"{self.prog.removeprefix('sslray ')}: {message}")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting: method settings by name (permutations=100), others dotted "
                        "(optim.lr=0.05, trunk.width=0.5, data.limit=5000, eval.layers=[res3,res4])")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sslray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="pretrain a trunk with a method, then evaluate every layer")
    t.add_argument("--method", help="a method name (see `sslray methods`)")
    t.add_argument("--data", help="a data source, data.name (default: the embedded shapes; `sslray data sources` "
                                   "lists them)")
    t.add_argument("--root", help="its data folder or file, data.root")
    t.add_argument("--epochs", type=int, help="pretraining epochs (default 10)")
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN",
                   help="continue a run from its last checkpoint: a run folder, an MLflow run id, "
                        "or nothing for the newest run of --method")
    t.add_argument("--no-eval", action="store_true", help="skip the per-layer evaluation")
    t.add_argument("--seeds", type=int, default=1,
                   help="train the same configuration N times, run.seed, run.seed+1, ...: one MLflow run each, "
                        "tagged with one sslray.group; ends with the mean ± 95%% interval per layer (1)")
    t.add_argument("--workers", type=int, help="data-parallel Ray Train workers (default 1: in-process)")
    t.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (NCCL); 0 = CPU (gloo)")
    t.add_argument("--address", help="Ray cluster to run on (auto, HOST:PORT); default: a local one")
    t.add_argument("--storage", help="where Ray Train keeps checkpoints (folder, NFS or s3://...)")
    t.add_argument("--max-failures", type=int, help="restart a failed worker group this often")
    _add_run_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="(re-)evaluate a finished run's trunk on every layer")
    e.add_argument("run", help="a run folder or MLflow run id")
    _add_run_options(e)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sweep", help="run an ablation study: Ray Tune + Optuna (TPE) + ASHA, MLflow parent/children")
    s.add_argument("study", help="a study YAML (ablations/X.yaml) or its name")
    s.add_argument("--address", help="Ray cluster address (auto, HOST:PORT); default: a local one")
    s.add_argument("--samples", type=int, help="number of trials (overrides budget.trials)")
    s.add_argument("--resume", action="store_true", help="finish the missing trials of an interrupted sweep")
    s.add_argument("--output-dir", default="runs", help="where trial folders and sweep state go")
    _add_run_options(s)
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="answer a study's question from its MLflow runs: table, plots, best config")
    r.add_argument("study", help="the study name (its MLflow experiment)")
    r.add_argument("--out", default="reports", help="folder for the figures")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="finished runs side by side: per-layer probe/kNN tables (Markdown), "
                                       "invariance per transform, one plot")
    c.add_argument("runs", nargs="+", help="run folders (or MLflow run ids of runs under --runs-dir)")
    c.add_argument("--runs-dir", default="runs", help="where to look up run ids")
    c.add_argument("--plot", metavar="PNG", help="also draw every run's per-layer probe curve in one figure")
    c.add_argument("--no-invariance", action="store_true", help="leave out the invariance tables")
    c.add_argument("--confidence", type=float, default=0.95,
                   help="level of the intervals over seeds of runs that differ only by seed (0.95)")
    c.set_defaults(func=cmd_compare)

    dp = sub.add_parser("data", help="data tools: `sslray data prepare ROOT --out DIR` (Parquet shards)")
    dsub = dp.add_subparsers(dest="data_command", required=True, parser_class=_Parser, metavar="COMMAND")
    pp = dsub.add_parser("prepare", help="rewrite a collection as Parquet shards of resized JPEGs for streaming")
    pp.add_argument("root", help="a class-folder tree (local, NFS or s3://...) or, with --manifest, a manifest file")
    pp.add_argument("--out", required=True, help="a new (or empty) folder for the shards")
    pp.add_argument("--manifest", action="store_true", help="ROOT is a manifest (CSV/Parquet of path,label[,split])")
    pp.add_argument("--short-side", type=int, default=256, help="resize so that the shorter side is at most this (256)")
    pp.add_argument("--shard-rows", type=int, default=1000, help="images per shard (1000)")
    pp.add_argument("--quality", type=int, default=90, help="JPEG quality (90)")
    pp.add_argument("--seed", type=int, default=0, help="seed of the order images are dealt to shards (0)")
    pp.add_argument("--quiet", action="store_true", help="no progress bar")
    pp.set_defaults(func=cmd_data_prepare)
    ds = dsub.add_parser("sources", help="list the registered data sources (data.name), what each is, reads and offers")
    ds.set_defaults(func=cmd_data_sources)

    m = sub.add_parser("methods", help="list the registered methods and their settings")
    m.set_defaults(func=cmd_methods)

    b = sub.add_parser("bench", help="time the platform against a baseline in one process: prints a RATIO line")
    benches = b.add_subparsers(dest="bench", required=True, parser_class=_Parser, metavar="NAME")
    from .bench import BENCHMARKS

    for name, module in BENCHMARKS.items():
        bp = benches.add_parser(name, help=module.HELP)
        module.add_arguments(bp)
        bp.set_defaults(func=cmd_bench)

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over sslray's tracking store")
    u.add_argument("--port", type=_port, default=5000, help="1-65535 (5000)")
    u.add_argument("--host", default="127.0.0.1", help="keep 127.0.0.1 unless you know why (no auth)")
    u.set_defaults(func=cmd_ui)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _overrides(args) -> dict:
    from .config import parse_overrides

    out = parse_overrides(args.set)
    for flag, key in (("data", "data.name"), ("root", "data.root"), ("epochs", "run.epochs"),
                      ("workers", "dist.workers"), ("gpus_per_worker", "dist.gpus_per_worker"),
                      ("address", "dist.address"), ("storage", "dist.storage_path"),
                      ("max_failures", "dist.max_failures")):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    if getattr(args, "no_eval", False):
        out["eval.enabled"] = False
    return out


def cmd_train(args) -> int:
    from .config import group_id
    from .tracking import RunDir
    from .tracking.tags import GROUP_TAG, SEEDS_TAG
    from .train.build import build_config, build_run
    from .train.run import preflight, run

    overrides = _overrides(args)
    if args.seeds < 1:
        raise UserError(f"train: --seeds must be at least 1 (got {args.seeds})")
    if args.seeds > 1 and args.resume:
        raise UserError("train: --resume continues one run; --seeds starts new ones (resume each run by itself)")
    base, run_dir = None, None
    if args.resume:
        output_dir = overrides.get("run.output_dir", overrides.get("output_dir", "runs"))
        try:
            run_dir = RunDir.find(args.resume, output_dir, args.method)
        except UserError as e:
            raise UserError(f"cannot resume: {e}") from None
        base = run_dir.load_checkpoint()["config"]
        if args.method and args.method != base["method"]:
            raise UserError(f"cannot resume: {run_dir} is a {base['method']!r} run, not {args.method!r}")
    method = args.method or (base and base["method"])
    if not method:
        raise UserError("train: --method is required (see `sslray methods`)")
    cfg = build_config(method, overrides, base)
    cfgs = [cfg] if args.seeds == 1 else [build_config(method, {**overrides, "run.seed": cfg.seed + i})
                                          for i in range(args.seeds)]
    from .data import pipeline_cpus

    data_cpus = pipeline_cpus(cfg.data)
    preflight(cfg, run_dir, None, data_cpus)  # before any data is read or decoded
    if run_dir is not None:
        run_dir.hold()  # before any work: a run another process is training (or resuming) is refused
    results = []
    try:
        for i, c in enumerate(cfgs):
            tags = {GROUP_TAG: group_id(c.model_dump()), SEEDS_TAG: str(args.seeds)} if args.seeds > 1 else None
            if args.seeds > 1:
                print(f"seed {c.seed} ({i + 1} of {args.seeds})", flush=True)
            results.append(run(build_run(c), resume=run_dir, progress=not args.quiet, tags=tags))
            print(f"run {results[-1].run_id}  folder {results[-1].run_dir}", flush=True)
    finally:
        _stop_ray()
    if args.seeds > 1 and cfg.eval.enabled:
        from .compare import compare

        print(compare([str(r.run_dir.path) for r in results], invariance=False))
    return 0


def _stop_ray() -> None:
    """Shut down the Ray this process started or joined, before the interpreter exits: left to
    exit, Ray's placement-group cleaner prints internal time-outs after a successful run."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def cmd_eval(args) -> int:
    from .data import open_sources
    from .methods._source import load_trunk
    from .tracking import RunDir, Tracker
    from .train.build import build_config
    from .train.record import evaluate_and_record, evaluate_over_epochs

    try:
        run_dir = RunDir.find(args.run, "runs")  # always a folder with a checkpoint
    except UserError as e:
        raise UserError(f"eval: {e}") from None
    base = run_dir.config()
    cfg = build_config(base["method"], _overrides(args), base)
    trunk = load_trunk(run_dir, cfg.model_dump())
    for epoch in cfg.eval.at_epochs:  # every kept trunk is there before any work starts
        if epoch != cfg.epochs and not run_dir.trunk_at(epoch).is_file():
            raise UserError(f"eval: {run_dir.path} kept no trunk after epoch {epoch} (kept: "
                            f"{sorted(int(p.stem[7:]) for p in run_dir.path.glob('trunk_e*.pt')) or 'none'})")
    train, test = open_sources(cfg.eval.data or cfg.data)
    tracker = Tracker(cfg.experiment, run_id=run_dir.mlflow_run_id)
    final = evaluate_and_record(trunk, train, test, cfg, run_dir, tracker, progress=not args.quiet)
    if cfg.eval.at_epochs:
        evaluate_over_epochs(trunk, train, test, cfg, run_dir, tracker, final, progress=not args.quiet)
    tracker.finish()
    return 0


def cmd_sweep(args) -> int:
    from .config import parse_overrides
    from .sweep.runner import sweep
    from .sweep.study import load_study

    overrides = parse_overrides(args.set)
    if args.samples is not None:
        overrides["budget.trials"] = args.samples
    study = load_study(args.study, overrides)
    try:
        result = sweep(study, address=args.address, resume=args.resume, output_dir=args.output_dir)
    except (Interrupted, KeyboardInterrupt) as e:
        what = str(e) if isinstance(e, Interrupted) else f"sweep of study {study.name} interrupted"
        raise Interrupted(f"{what}; {_sweep_again(args, study)}") from None
    best = result["best"]
    print(f"study {study.name}: {result['trials']} trials, parent run {result['parent_run_id']}")
    if best:
        metric = study.objective.metric
        swept = " ".join(f"{k}={v}" for k, v in best["params"].items() if k != "method" and v is not None)
        seeds = f" (mean of {best['seeds']} seeds)" if best["seeds"] > 1 else ""
        print(f"best: {best['method']} {swept}  {metric} = {100 * best[metric]:.1f}%{seeds}  (run {best['run_id']})")
    print(f"answer: sslray report {study.name}")
    return 0


def _sweep_again(args, study) -> str:
    """How to finish an interrupted sweep: the same command with --resume, once Tune saved its
    state; before that (interrupted while starting), the same command again."""
    import shlex

    from ray import tune

    from .sweep.runner import study_dir

    can = tune.Tuner.can_restore(str(study_dir(study, args.output_dir) / "tune" / study.name))
    argv = ["sslray", "sweep", args.study, *(["--resume"] if can else [])]
    for flag, value in (("--output-dir", args.output_dir if args.output_dir != "runs" else None),
                        ("--samples", args.samples), ("--address", args.address)):
        if value is not None:
            argv += [flag, str(value)]
    for item in args.set:
        argv += ["--set", item]
    return f"finish it with: {shlex.join(argv)}" if can else f"nothing was saved to resume; run it again: {shlex.join(argv)}"


def cmd_report(args) -> int:
    from .sweep.report import report

    report(args.study, args.out)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    print(compare(args.runs, args.runs_dir, plot=args.plot, invariance=not args.no_invariance, level=args.confidence))
    return 0


def cmd_data_prepare(args) -> int:
    from pydantic import ValidationError

    from .config import DataConfig, validation_message
    from .data.prepare import collection, prepare

    for flag, value, low, high in (("--short-side", args.short_side, 16, 100_000),
                                   ("--shard-rows", args.shard_rows, 1, 10**7), ("--quality", args.quality, 1, 100)):
        if not low <= value <= high:
            raise UserError(f"data prepare: {flag} must be in [{low}, {high}] (got {value})")
    check_output(args.out, "folder", what="data prepare: cannot write the shards to")  # before Ray starts
    try:
        cfg = DataConfig(name=collection(args.manifest), root=args.root)
    except ValidationError as e:
        raise UserError(f"data prepare: {validation_message(e)}") from None
    try:
        summary = prepare(cfg, args.out, args.short_side, args.shard_rows, args.quality, args.seed)
    except (Interrupted, KeyboardInterrupt) as e:
        import shlex

        argv = ["sslray", "data", "prepare", args.root, "--out", args.out, *(["--manifest"] if args.manifest else [])]
        for flag, value, default in (("--short-side", args.short_side, 256), ("--shard-rows", args.shard_rows, 1000),
                                     ("--quality", args.quality, 90), ("--seed", args.seed, 0)):
            argv += [flag, str(value)] if value != default else []
        what = str(e) if isinstance(e, Interrupted) else "data prepare interrupted"
        raise Interrupted(f"{what}; run it again: {shlex.join(argv)}") from None
    for split, s in summary["splits"].items():
        bad = f", {len(s['unreadable'])} unreadable skipped (e.g. {s['unreadable'][0]})" if s["unreadable"] else ""
        print(f"{split}: {s['written']} of {s['images']} images{bad}")
    print(f"shards in {args.out}: train with --data parquet --root {args.out}")
    return 0


def cmd_data_sources(args) -> int:
    from .data.sources import discover

    for name, c in sorted(discover().items()):
        extra = [f"data.{k}" for k in c.settings]
        print(f"{name}: {c.summary}\n    {' or '.join(c.ways)}; reads {', '.join(extra) or 'nothing more'}"
              + (f"; batches offer {', '.join(c.offers)}" if c.offers else ""))
    return 0


def cmd_methods(args) -> int:
    from .methods.catalogue import as_text, catalogue

    print(as_text(catalogue()))  # the documentation's methods page renders the same catalogue
    return 0


def cmd_bench(args) -> int:
    from .bench import run

    run(args)
    return 0


def ui_argv(exe: str, host: str, port: int) -> list[str]:
    """The command ``sslray ui`` runs: MLflow's own UI over sslray's tracking store."""
    from .tracking import tracking_uri

    return [exe, "ui", "--backend-store-uri", tracking_uri(), "--host", host, "--port", str(port)]


def cmd_ui(args) -> int:
    import shutil

    from .tracking import Store, check_store_path, tracking_uri
    from .tracking.ui import ServerStopped, check_address, has_store, newest_runs, serve, server_url

    exe = shutil.which("mlflow")
    if exe is None:
        raise UserError("the mlflow command is not on PATH; reinstall with `pip install -e .`")
    base, uri = server_url(args.host, args.port), tracking_uri()
    check_address(args.host, args.port)  # a taken port, an unknown host: before a store is created
    check_store_path(uri)  # a folder, or a place no database can be made
    newest = newest_runs(Store(uri), base) if has_store(uri) else None

    def serving():  # said only once the server answers
        print(f"MLflow UI on {base}  (store {uri})")
        if newest:
            what, url = newest
            print(f"newest {what}: {url}")
        print('from the home page: pick "Model training" in the sidebar switch, then open an experiment', flush=True)

    try:
        return serve(ui_argv(exe, args.host, args.port), args.host, args.port, serving)
    except ServerStopped as e:
        print(f"sslray: error: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from .progress import set_enabled

        set_enabled(not getattr(args, "quiet", False))
        return args.func(args) or 0
    except UserError as e:
        print(f"sslray: error: {e}", file=sys.stderr)
        return UserError.exit_code
    except Interrupted as e:  # what was left unfinished, and how to finish it
        print(f"sslray: {e}", file=sys.stderr)
        return Interrupted.exit_code
    except KeyboardInterrupt:
        print("sslray: interrupted (resume a run with `sslray train --resume`)", file=sys.stderr)
        return 130
    except FloatingPointError as e:  # a diverged (or collapsed) run: recorded FAILED in MLflow; the message says where
        from .eval.health import Collapsed  # torch is loaded already: the run that raised this used it

        what = "collapsed" if isinstance(e, Collapsed) else "diverged"
        print(f"sslray: the run {what}: {str(e).splitlines()[0]} (recorded as FAILED)", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `sslray compare ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
