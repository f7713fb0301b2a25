import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, assert_probed

from sslray import LAYERS
from sslray.cli import main
from sslray.components.kmeans import spherical_kmeans
from sslray.methods import DataInfo, get_method
from sslray.models import build_trunk
from sslray.components.augment import hflip, pad_crop


def _blobs(n=120, d=8, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1) * 4
    return centres[torch.arange(n) % k] + torch.randn(n, d, generator=g) * 0.5


def test_kmeans_labels_are_a_function_of_the_features():
    x = _blobs()
    a, b = spherical_kmeans(x, 4, seed=0), spherical_kmeans(x.clone(), 4, seed=0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    assert torch.equal(spherical_kmeans(x[perm], 4, seed=0).labels, a.labels[perm])  # permuting rows permutes labels
    # the well-separated blobs are recovered (up to naming) and the stats describe them
    truth = torch.arange(len(x)) % 4
    assert all(len(set(a.labels[truth == c].tolist())) == 1 for c in range(4))
    assert a.stats()["cluster_size_min"] == a.stats()["cluster_size_max"] == 30
    assert torch.allclose(a.centroids.norm(dim=1), torch.ones(4), atol=1e-5) and 0.8 < a.mean_cosine <= 1


@pytest.fixture
def source_run(mlflow_runs):
    """A finished tiny rotation run: its folder and MLflow run id."""
    assert main(["train", "--method", "rotation", "--epochs", "1", "--no-eval", *TINY]) == 0
    run_dir = next(Path("runs").glob("rotation-*"))
    return run_dir, json.loads((run_dir / "run.json").read_text())["mlflow_run_id"]


def test_clusterfit_from_a_finished_run_is_linked_to_it_and_logs_every_layer(source_run, mlflow_runs):
    run_dir, source_id = source_run
    assert main(["train", "--method", "clusterfit", "--epochs", "1", "--set", f"source={run_dir}",
                 "--set", "clusters=10", *TINY]) == 0
    c, runs = mlflow_runs()
    run = runs[0]
    assert run.data.params["method"] == "clusterfit" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == source_id
    assert run.data.tags["sslray.source_run"] == str(run_dir.resolve())
    p = run.data.params
    assert p["settings.source"] == str(run_dir.resolve())  # absolute: Ray workers run in other folders
    assert p["method.clusters"] == "10" and p["method.layer"] == "res5" and p["method.source_method"] == "rotation"
    assert int(p["method.cluster_size_min"]) >= 0 and 0 < float(p["method.kmeans_mean_cosine"]) <= 1
    assert_probed(run.data.metrics, [f"transfer/{layer}/top1" for layer in LAYERS])

    # distillation from the same source, named by its MLflow run id this time
    assert main(["train", "--method", "distill", "--epochs", "1", "--set", f"source={source_id}",
                 "--set", "clusters=10", "--set", "layer=res4", *TINY]) == 0
    _, runs = mlflow_runs()
    run = runs[0]
    assert run.data.params["method"] == "distill" and run.data.tags["mlflow.parentRunId"] == source_id
    assert all(f"transfer/{layer}/top1" in run.data.metrics for layer in LAYERS)


def test_fit_step_targets_are_the_cluster_ids(source_run):
    run_dir, _ = source_run
    from sslray.data import MemorySource, load_synthetic

    train = load_synthetic("train", 0, 32, 200)
    cls = get_method("clusterfit")
    s = cls.Settings(source=str(run_dir), clusters=5, pad=2)
    torch.manual_seed(0)
    m = cls(s, build_trunk("resnet18", 0.125, image_size=32), DataInfo(10, len(train), 32))
    m.setup(MemorySource(train))
    # the assignments are k-means of the source trunk's pooled res5 features
    from sslray.models import extract_features
    from sslray.methods._source import find_source, load_source_trunk

    feats = extract_features(load_source_trunk(find_source(str(run_dir), "runs", "t")), train.images, ["res5"], 9216)
    assert torch.equal(m.targets, spherical_kmeans(feats["res5"], 5).labels)
    # the fit step is cross-entropy of the new trunk's head against targets[idx], under crop + flip
    idx = torch.tensor([3, 17, 42, 99])
    x = train.images[idx].float() / 255
    torch.manual_seed(1)
    loss = m([x], train.labels[idx], idx)["loss"]
    torch.manual_seed(1)
    expected = F.cross_entropy(m.head(m.trunk(hflip(pad_crop(x, 2)))), m.targets[idx])
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)

    d = get_method("distill")
    dm = d(d.Settings(source=str(run_dir), clusters=5), build_trunk("resnet18", 0.125, image_size=32),
           DataInfo(10, len(train), 32))
    dm.setup(MemorySource(train))
    dm.train()
    assert not dm.teacher.training and not any(p.requires_grad for p in dm.teacher.parameters())
    p = dm.soft_targets(x)
    assert p.shape == (4, 5) and torch.allclose(p.sum(1), torch.ones(4))
    out = dm([x], None, idx)
    out["loss"].backward()
    assert dm.trunk.conv1.weight.grad is not None and dm.teacher.conv1.weight.grad is None


def test_bad_source_is_one_line_exit_2_before_mlflow(capsys, tmp_path):
    broken = Path("broken")
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"")
    (broken / "config.yaml").write_text("method: rotation\n")
    cases = [("source=nowhere", "'nowhere' is not a finished run"), ("source=0123abcd", "0123abcd"),
             (f"source={broken}", "no trunk.pt"), ("clusters=3", "needs a source run")]
    for setting, expected in cases:
        assert main(["train", "--method", "clusterfit", "--set", setting, "--set", "data.limit=200", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("sslray: error:") and expected in err, err
    assert main(["train", "--method", "distill", "--set", f"source={broken}", "--quiet"]) == 2
    assert not Path("mlflow.db").exists() and not Path("runs").exists()


# ---- the label-noise experiment (issue 15): noisy supervised source, then distillation and ClusterFit

def test_label_noise_flips_a_fixed_share_of_labels_never_to_the_true_class():
    cls = get_method("supervised")
    m = cls(cls.Settings(label_noise=0.3, noise_seed=1), build_trunk("resnet18", 0.125, image_size=16),
            DataInfo(10, 2000, 16))
    y, idx = torch.arange(2000) % 10, torch.arange(2000)
    noisy = m.noisy(y, idx)
    flipped = noisy != y
    assert 0.27 < float(flipped.float().mean()) < 0.33 and m.describe()["label_noise_actual"] == pytest.approx(
        float(flipped.float().mean()), abs=1e-4)
    assert torch.equal(m.noisy(y[idx.flip(0)], idx.flip(0)), noisy.flip(0))  # a function of the image, not the order
    assert len(set(noisy[flipped].tolist())) == 10  # wrong labels spread over every class
    clean = cls(cls.Settings(), build_trunk("resnet18", 0.125, image_size=16), DataInfo(10, 2000, 16))
    assert torch.equal(clean.noisy(y, idx), y) and clean.describe() == {}


def test_pretrained_distill_and_clusterfit_from_a_noisy_supervised_source(mlflow_runs, capsys):
    small = ["--set", "eval.layers=[res3,res5]"]
    assert main(["train", "--method", "supervised", "--epochs", "1", "--set", "label_noise=0.5", *small, *TINY]) == 0
    _, runs = mlflow_runs()
    source = runs[0]
    assert 0.4 < float(source.data.params["method.label_noise_actual"]) < 0.6
    named = "source=latest:supervised?label_noise=0.5"
    assert main(["train", "--method", "pretrained", "--set", named, *small, *TINY]) == 0
    assert main(["train", "--method", "distill", "--epochs", "1", "--set", named, "--set", "targets=classifier",
                 *small, *TINY]) == 0
    assert main(["train", "--method", "clusterfit", "--epochs", "1", "--set", named, "--set", "clusters=10",
                 *small, *TINY]) == 0
    _, runs = mlflow_runs()
    clusterfit, distill, pretrained = runs[:3]
    for run in (pretrained, distill, clusterfit):
        assert run.data.tags["mlflow.parentRunId"] == source.info.run_id
        assert run.data.params["method.source_label_noise"] == "0.5"
    assert distill.data.params["method.classes"] == "10"
    # the pretrained line is the source's own trunk under the same protocol: the same numbers
    for key in ("transfer/res3/top1", "knn/res5/top1"):
        assert pretrained.data.metrics[key] == source.data.metrics[key]
    capsys.readouterr()
    assert main(["train", "--method", "pretrained", "--set", "source=latest:supervised?label_noise=0.25", *TINY]) == 2
    assert "no checkpoint of method 'supervised' with label_noise=0.25" in capsys.readouterr().err



def test_distilling_a_classifier_needs_a_source_with_one(tmp_path):
    from sslray.errors import UserError
    from sslray.methods._source import SourceRun
    from sslray.methods.distill import source_head
    from sslray.tracking import RunDir

    torch.save({"model": {"trunk.conv1.weight": torch.zeros(8, 3, 3, 3), "projector.weight": torch.zeros(4, 8)}},
               tmp_path / RunDir.CHECKPOINT)
    with pytest.raises(UserError, match="has no classifier head; targets=classifier needs a supervised run"):
        source_head(SourceRun(RunDir(tmp_path), "", "simclr", {}))
    torch.save({"model": {"head.weight": torch.ones(3, 8), "head.bias": torch.arange(3.0)}}, tmp_path / RunDir.CHECKPOINT)
    head = source_head(SourceRun(RunDir(tmp_path), "", "supervised", {}))
    assert head(torch.zeros(1, 8)).tolist() == [[0.0, 1.0, 2.0]]
