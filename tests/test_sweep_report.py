"""`sslray report` of a study: stop reasons, a long search space, an unknown study, the tables
and figures of every protocol."""

from __future__ import annotations

from conftest import TINY_STUDY, _write

from sslray import LAYERS
from sslray.cli import main
from sslray.sweep.study import load_study


def test_report_labels_every_stop_reason():
    from sslray.sweep.stops import Stop, StopReason, failure

    reasons = [StopReason(Stop.COMPLETED), failure(FloatingPointError("loss is nan at epoch 1\nmore")),
               StopReason(Stop.EARLY_STOPPED, 2), StopReason(Stop.INTERRUPTED, 1)]
    assert [r.label() for r in reasons] == ["done", "failed", "ASHA@2", "stopped"]
    assert [r.text() for r in reasons] == ["completed", "failed: FloatingPointError: loss is nan at epoch 1",
                                           "early-stopped by ASHA after epoch 2",
                                           "stopped after epoch 1 (the sweep was interrupted)"]
    for r in reasons:  # what the runner writes on a trial's run, the report reads back
        assert StopReason.of(r.tags()) == r
    assert StopReason.of({}) is None


def test_a_long_search_space_is_stored_whole_and_reports(tmp_path, capsys):
    # 200 choices: more than the 5,000 characters an MLflow param holds once written as JSON
    from sslray.sweep.runner import _parent_run
    from sslray.sweep.study import STUDY_ARTIFACT, Study
    from sslray.tracking import Store

    lrs = [round(0.001 * (i + 1), 4) for i in range(200)]
    study = load_study(_write(tmp_path / "long.yaml", {**TINY_STUDY, "search": "tpe",
                                                       "params": {"optim.lr": {"choice": lrs}}}))
    store = Store()
    parent = _parent_run(study, resume=False, store=store)
    back = Study.model_validate_json(store.read_text(parent, STUDY_ARTIFACT))
    assert back == study and back.space.params["optim.lr"].choice == lrs
    assert main(["report", "long", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "study long: Does the learning rate matter" in out and "trials: 0" in out


def test_report_of_an_unknown_study_is_one_line(capsys):
    assert main(["report", "never-ran"]) == 2
    assert "no study 'never-ran'" in capsys.readouterr().err


def test_report_plots_invariance_per_transform_and_one_curve_per_variant(tmp_path, capsys):
    from sslray.sweep.report import _plots, _print_invariance

    def row(method, swept, top, probe):
        return {"run": method, "trial": "t", "method": method, "reason": "completed", "swept": swept, "objective": top,
                "transfer": {layer: top for layer in LAYERS}, "knn_top1": {layer: None for layer in LAYERS},
                "invariances": {("rotation", None, "chance"): 0.25,
                                **{("rotation", layer, "probe_top1"): probe for layer in LAYERS}}}
    rows = [row("rotation", {}, 0.35, 0.48), row("pirl", {"settings.transform": "rotation"}, 0.33, 0.41),
            row("pirl", {"settings.transform": "jigsaw"}, 0.32, 0.38), row("rotation", {}, 0.35, 0.50)]
    figs = _plots("inv", rows, None, tmp_path, ["transfer", "knn", "invariance"])
    assert [f.name for f in figs] == ["per_layer_best.png", "invariance.png"]  # no swept x: no metric-vs-x figure
    _print_invariance(rows)
    out = capsys.readouterr().out
    assert "invariance to rotation: probe top-1 predicting it (chance 25 %)" in out
    assert "pirl transform=jigsaw" in out and "38.0" in out
    # two seeds of rotation are one row: their mean with its interval (t(0.975, 1) x sd / sqrt 2 = 12.7)
    assert "rotation (2)" in out and "49.0 ± 12.7" in out and "48.0" not in out
    figs = _plots("neg", rows, "settings.transform", tmp_path / "x")
    assert [f.name for f in figs] == ["metric_vs_swept.png", "per_layer_best.png"]  # only pirl has the x


def test_report_draws_the_objective_one_line_per_variant_against_a_named_source(tmp_path):
    """The label-noise study's figure: x is a source named with a query, one line per method."""
    from sslray.sweep.figures import _fmt, _pairs, _plots

    rows = []
    for method, extra in (("pretrained", {}), ("distill", {"targets": "classifier"}), ("clusterfit", {})):
        for i, p in enumerate((0.0, 0.5)):
            rows.append({"method": method, "swept": {"source": f"latest:supervised?label_noise={p}", **extra,
                                                      "clusters": None},
                         "transfer": {layer: 0.1 + 0.01 * i for layer in LAYERS}})
    figures = _plots("ln", rows, "source", tmp_path, metric="transfer/res4/top1")
    assert {f.name for f in figures} >= {"metric_vs_swept.png", "objective_by_variant.png"}
    assert (tmp_path / "objective_by_variant.png").read_bytes()[:4] == b"\x89PNG"
    assert _pairs(rows[2]["swept"]) == ["source=label_noise=0.0", "targets=classifier"]  # None: not applicable
    assert _fmt("/tmp/x/runs/sweeps/label_noise/trials") == "trials" and _fmt(0.25) == "0.25"


def test_report_draws_transfer_against_pretext_epochs_with_intervals_over_seeds(tmp_path):
    from types import SimpleNamespace as NS

    from sslray.sweep.figures import _over_epochs

    histories, children = {}, []
    for i, (method, seed) in enumerate((("rotation", 0), ("rotation", 1), ("jigsaw", 0))):
        run_id = f"r{i}"
        for layer in LAYERS:
            histories[(run_id, f"at_epoch/transfer/{layer}/top1")] = [NS(step=e, value=0.1 * e + 0.01 * seed)
                                                                      for e in (1, 2, 4)]
        histories[(run_id, "train/acc")] = [NS(step=e, value=0.2 + 0.1 * e) for e in range(4)]
        children.append(NS(info=NS(run_id=run_id), data=NS(params={"method": method}, metrics={})))
    store = NS(history=lambda run_id, key: histories.get((run_id, key), []))
    path = _over_epochs("pe", children, store, tmp_path, 0.95)
    assert path == tmp_path / "over_epochs.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_report_tabulates_fine_tuning_and_low_shot_with_seeds_as_one_row_beside_the_floor(capsys):
    """A study that asked for finetune and lowshot gets their tables: a configuration's seeds are
    one row (mean ± interval), the floor and ceiling beside them, subsets ordered by their size."""
    from sslray.sweep.report import _print_protocols

    def metrics(ft, shot):
        out = {"finetune/top1": ft}
        for s, n, scale in (("10pct", 500, 2), ("1pct", 50, 1)):
            out.update({f"lowshot/{s}/images": n, f"lowshot/{s}/finetune/top1": scale * shot})
            out.update({f"lowshot/{s}/linear/{layer}/top1": scale * shot + 0.01 * i for i, layer in enumerate(LAYERS)})
        return out

    rows = [{"method": "simclr", "swept": {}, "protocols": metrics(ft, 0.1)} for ft in (0.40, 0.44)]
    rows.append({"method": "rotation", "swept": {}, "protocols": metrics(0.30, 0.15)})
    _print_protocols(rows, {("random", "floor"): metrics(0.20, 0.05)}, 0.95)
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("fine-tuning"))
    assert "1pct (50 labelled images), 10pct (500 labelled images)" in out[head]  # smallest subset first
    assert out[head + 1].split() == ["all", "labels", "1pct", "10pct"]
    simclr = out[head + 2].split()
    # two seeds of 40 and 44: mean 42, half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 2.83 / 1.41 = 25.4
    assert simclr[:5] == ["simclr", "(2)", "42.0", "±", "25.4"] and simclr[5:] == ["10.0", "±", "0.0", "20.0", "±", "0.0"]
    assert out[head + 3].split() == ["rotation", "30.0", "15.0", "30.0"]
    assert out[head + 4].split() == ["random", "(floor)", "20.0", "5.0", "10.0"]
    low = out.index(next(line for line in out if line.startswith("low-shot 1pct")))
    assert out[low + 1].split() == list(LAYERS)
    assert out[low + 3].split() == ["rotation", "15.0", "16.0", "17.0", "18.0", "19.0"]
    assert any(line.startswith("low-shot 10pct (500 labelled images)") for line in out)


def test_report_prints_no_protocol_tables_for_a_study_that_asked_for_none(capsys):
    from sslray.sweep.report import _print_protocols

    _print_protocols([{"method": "rotation", "swept": {}, "protocols": {}}], {("random", "floor"): {"transfer/res2/top1": 0.3}})
    assert capsys.readouterr().out == ""


def test_report_says_which_collection_the_numbers_are_on():
    from sslray.sweep.report import evaluated_on

    assert evaluated_on({"data.name": "imagefolder", "data.root": "/d/cifar10", "eval.data.name": "None"}) == \
        "imagefolder cifar10"
    assert evaluated_on({"data.name": "synthetic", "data.root": "None", "eval.data.name": "imagefolder",
                         "eval.data.root": "/d/cifar10"}) == "imagefolder cifar10 (eval.data)"
    assert evaluated_on({"data.name": "synthetic"}) == "synthetic"


def test_report_tabulates_what_the_neighbours_share_with_seeds_as_one_row_and_draws_it(capsys, tmp_path):
    """Retrieval on clips records the pose and the background: the report's table at a layer has a
    column per factor (class first, then the pose), seeds as one row, the floor beside; the figure
    has a panel per factor."""
    from sslray.sweep.shares import print_shares, shares_figure

    def metrics(pose, bg):
        out = {}
        for i, layer in enumerate(LAYERS):
            out.update({f"retrieval/{layer}/precision_at_8": 0.2 + 0.01 * i, f"retrieval/{layer}/shares/swing": pose,
                        f"retrieval/{layer}/shares/bg_hue": bg, f"retrieval/{layer}/shares/x": 0.1})
        return out

    groups = {"shuffle_learn": [metrics(0.30, 0.10), metrics(0.34, 0.12)], "rotation": [metrics(0.05, 0.5)]}
    factors = print_shares(groups, {("random", "floor"): metrics(0.0, 0.8)}, "res4", 0.95)
    assert factors == ["class", "swing", "x", "bg_hue"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("what the 8 nearest training images share with a test query at res4")
    assert out[1].split() == ["class", "swing", "x", "bg", "colour"]  # class first, then the pose
    # two seeds of 30 and 34: mean 32, half-width 12.706 * 2.83 / 1.41 = 25.4
    assert out[2].split()[:8] == ["shuffle_learn", "(2)", "23.0", "±", "0.0", "32.0", "±", "25.4"]
    assert out[3].split() == ["rotation", "23.0", "5.0", "10.0", "50.0"]
    assert out[4].split() == ["random", "(floor)", "23.0", "0.0", "10.0", "80.0"]
    path = shares_figure("video", groups, {("random", "floor"): metrics(0.0, 0.8)}, tmp_path, 0.95)
    assert path == tmp_path / "shares.png" and path.stat().st_size > 10_000
    assert print_shares({"rotation": [{"retrieval/res4/precision_at_8": 0.3}]}, {}, "res4") == []  # no factors: no table


def test_the_floor_and_ceiling_answer_uses_the_seeds_pooled_spread_by_hand():
    # two configurations of three seeds, sd 2 points each: pooled sd 2.0 on 4 df, t(0.975, 4) = 2.776;
    # a single run against a single run needs 2.776 * 2.0 * sqrt(2) = 7.9 points, a mean of three
    # seeds against a single run 2.776 * 2.0 * sqrt(4/3) = 6.4
    from sslray.sweep.report import configurations, frame_answer

    def row(norm, v):
        return {"method": "simclr", "swept": {"trunk.norm": norm}, "objective": v, "invariances": {}, "knn_top1": {},
                "transfer": {layer: (v if layer == "res4" else None) for layer in LAYERS}}

    done = [row("group", v) for v in (0.30, 0.32, 0.34)] + [row("batch", v) for v in (0.20, 0.22, 0.24)]
    configs = configurations(done, 0.95)
    frame = {("random", "floor"): {"res4": 0.22}, ("supervised", "ceiling"): {"res4": 0.60}}
    assert frame_answer(configs, frame, "res4") == (
        "answer (floor and ceiling, res4): the ceiling is +38.0 points from the floor (60.0 against 22.0, one run "
        "each; ±7.9 needed): separably above it; configurations separably above the floor: simclr norm=group "
        "(+10.0) (95 %, their spread taken as the seeds' pooled sd 2.0 on 4 df)")
    frame = {("random", "floor"): {"res4": 0.27}, ("supervised", "ceiling"): {"res4": 0.34}}
    assert frame_answer(configs, frame, "res4") == (
        "answer (floor and ceiling, res4): the ceiling is +7.0 points from the floor (34.0 against 27.0, one run "
        "each; ±7.9 needed): not separable at this budget; configurations separably above the floor: none (best "
        "simclr norm=group +5.0, ±6.4 needed) (95 %, their spread taken as the seeds' pooled sd 2.0 on 4 df)")
    done = [row("group", 0.30)]  # one seed: no spread to measure
    assert frame_answer(configurations(done, 0.95), frame, "res4") == \
        "answer (floor and ceiling, res4): no floor or no seeds to measure the spread with"


def test_the_against_the_floor_line_agrees_with_the_floor_answer_line():
    # the interval of group (32.0 ± 5.0) clears a floor of 26.0, but a single floor run given the
    # seeds' pooled spread (sd 2.0 on 4 df) needs +6.4: the best is "not separable" on both lines
    from sslray.sweep.report import _against, configurations, frame_answer, frame_spread

    def row(norm, v):
        return {"method": "simclr", "swept": {"trunk.norm": norm}, "objective": v, "invariances": {}, "knn_top1": {},
                "transfer": {layer: (v if layer == "res4" else None) for layer in LAYERS}}

    configs = configurations([row("group", v) for v in (0.30, 0.32, 0.34)]
                             + [row("batch", v) for v in (0.20, 0.22, 0.24)], 0.95)
    best = configs[0]
    assert best["objective"].lo > 0.26  # its own interval alone would call it separably above
    spread = frame_spread(configs, "res4")
    assert _against(best["objective"], 0.26, 3, spread) == "not separable from it at this budget (+6.0, ±6.4 needed)"
    assert "configurations separably above the floor: none" in frame_answer(
        configs, {("random", "floor"): {"res4": 0.26}}, "res4")
    assert _against(best["objective"], 0.20, 3, spread) == "above it, separably (+12.0, ±6.4 needed)"
    assert _against(best["objective"], 0.60, 3, spread).startswith("below it, separably (-28.0")
    assert _against(best["objective"], 0.26) == "above it, separably"  # no seeds to pool: its own interval


def test_a_swept_number_spanning_8x_goes_on_a_log_axis_ticked_at_its_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sslray.sweep.figures import _x_scale

    def scale(xs):
        fig, ax = plt.subplots()
        ax.plot(xs, [1] * len(xs))
        _x_scale(ax, xs)
        got = (ax.get_xscale(), getattr(ax.xaxis.get_transform(), "base", None),
               [t.get_text() for t in ax.get_xticklabels()])
        plt.close(fig)
        return got

    assert scale([32, 128, 512]) == ("log", 2, ["32", "128", "512"])
    assert scale([0.07, 0.2, 1.0]) == ("log", 10, ["0.07", "0.2", "1"])
    assert scale([0.1, 0.5])[0] == "linear"  # 5x: left linear
