"""The bad-input harness: every bad input or fault a user can cause ends in one line on stderr and
exit status 2, and writes nothing: no MLflow run, no run folder, no cache file.

Each row is (name, setup, command, phrase): ``setup(root)`` makes the files the command needs (in
the test's own folder), the command runs in-process through ``sslray.cli.main``. The rows marked
``#N`` are the causes found in the reliability issue; the others are the ones that already worked.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from sslray.cli import main

TINY = ["--set", "data.limit=40", "--set", "data.test_limit=20", "--set", "trunk.width=0.125", "--set",
        "optim.batch_size=20", "--epochs", "1", "--quiet"]


def _tree(root: Path, bad: bytes | None = None, n: int = 3) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                Image.new("RGB", (40, 36), (60 * j, 20, 90)).save(root / split / c / f"{j}.png")
    if bad is not None:
        (root / "train" / "a" / "1.png").write_bytes(bad)


def _bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (the data after it is garbage)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _run_folder(root: Path, *, meta=True, run_id="0" * 32, checkpoint=b"", trunk=None) -> Path:
    d = root / "runs" / "rotation-20260101-000000-abcd"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("method: rotation\nsettings: {}\nepochs: 1\n")
    if meta:
        (d / "run.json").write_text(json.dumps({"method": "rotation", "mlflow_run_id": run_id}))
    (d / "checkpoint.pt").write_bytes(checkpoint)
    if trunk is not None:
        (d / "trunk.pt").write_bytes(trunk)
    return d


def _malicious_pickle() -> bytes:
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    import pickle

    buf = io.BytesIO()
    pickle.dump(Boom(), buf)
    return buf.getvalue()


def _with_checkpoint(root: Path, **kw) -> None:
    """A run folder whose checkpoint loads (weights-only) but whose metadata or trunk is bad."""
    import torch

    buf = io.BytesIO()
    torch.save({"epoch": 1, "config": {"method": "rotation"}}, buf)
    _run_folder(root, checkpoint=buf.getvalue(), **kw)


def _study(root: Path, text: str, name: str = "s.yaml") -> None:
    (root / name).write_text(text)


STUDY = "question: q\nmethods: [rotation]\nparams: {optim.lr: {grid: [0.05, 0.1]}}\n"

SMALL = ["--set", "optim.batch_size=2"]


def _classes(root: Path, train: str, test: str, empty: str = "", n: int = 3) -> None:
    """A tree whose splits hold the classes named (one letter each); ``empty`` a class folder with no image."""
    for split, classes in (("train", train), ("test", test)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(0 if (c in empty and split == "train") else n):
                Image.new("RGB", (12, 12), (40 * j, 80, ord(c))).save(root / split / c / f"{j}.png")


def _manifest(root: Path, tree: str, drop=lambda split, c: False, label=lambda c, i: c, name: str = "m.csv") -> None:
    """A manifest (CSV or Parquet: path, label, split) of ``tree``'s images, rows ``drop`` says left out."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = [(str(p.relative_to(root)), p.parent.name, p.parent.parent.name)
            for p in sorted((root / tree).rglob("*.png")) if not drop(p.parent.parent.name, p.parent.name)]
    table = pa.table({"path": [r[0] for r in rows], "label": [label(r[1], i) for i, r in enumerate(rows)],
                      "split": [r[2] for r in rows]})
    (pq.write_table if name.endswith(".parquet") else pacsv.write_csv)(table, str(root / name))


def _foreign_shards(root: Path) -> None:
    """Parquet files named as shards but written by something else (no image, no index column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "shards").mkdir()
    (root / "shards" / "classes.json").write_text('["a", "b"]')
    for split in ("train", "test"):
        pq.write_table(pa.table({"bytes": [b"x"], "label": [0]}), str(root / "shards" / f"{split}-00000.parquet"))


CASES = [
    # ---- train: configuration
    ("unknown method", None, ["train", "--method", "nope"], "unknown method 'nope'"),
    ("unknown key", None, ["train", "--method", "rotation", "--set", "colour=3"], "unknown key 'colour'"),
    ("unknown nested key", None, ["train", "--method", "rotation", "--set", "optim.mommentum=3"], "optim.mommentum"),
    ("invalid value", None, ["train", "--method", "rotation", "--set", "optim.lr=-1"], "optim.lr"),
    ("#11 infinite setting", None, ["train", "--method", "rotation", "--set", "optim.lr=.inf"],
     "optim.lr: Input should be a finite number"),
    ("#11 NaN method setting", None, ["train", "--method", "simclr", "--set", "temperature=.nan"],
     "temperature: Input should be a finite number"),
    ("invalid method setting", None, ["train", "--method", "rotation", "--set", "rotations=some"], "rotations"),
    ("negative epochs", None, ["train", "--method", "rotation", "--epochs", "-1"], "epochs"),
    ("#14 empty probe grid", None, ["train", "--method", "rotation", "--set", "eval.linear.lrs=[]"],
     "eval.linear.lrs: List should have at least 1 item"),
    ("#14 probe validation share out of range", None,
     ["train", "--method", "rotation", "--set", "eval.linear.val_fraction=0.7"], "eval.linear.val_fraction"),
    ("#15 unknown protocol", None, ["train", "--method", "rotation", "--set", "eval.protocols=[linear,finetuning]"],
     "unknown protocol 'finetuning' in eval.protocols; known: finetune, invariance, knn, linear, lowshot, retrieval"),
    ("#15 label fraction of zero", None, ["train", "--method", "rotation", "--set", "eval.lowshot.fractions=[0]"],
     "eval.lowshot.fractions.0: Input should be greater than 0"),
    ("#15 label fraction above one", None, ["train", "--method", "rotation", "--set", "eval.lowshot.fractions=[1.5]"],
     "eval.lowshot.fractions.0: Input should be less than or equal to 1"),
    ("#15 at_epochs past the last epoch", None,
     ["train", "--method", "rotation", "--epochs", "3", "--set", "eval.at_epochs=[2,5]"],
     "eval.at_epochs names epoch(s) [5] of a 3-epoch run"),
    ("#15 unlabelled data with nothing to evaluate on", None,
     ["train", "--method", "rotation", "--set", "data.labels=false"], "data.labels=false: an unlabelled collection"),
    ("#15 an unlabelled eval.data", None,
     ["train", "--method", "rotation", "--set", "eval.data.name=synthetic", "--set", "eval.data.labels=false"],
     "eval.data must be a labelled collection"),
    ("#15 supervised on unlabelled data", None,
     ["train", "--method", "supervised", "--set", "data.labels=false", "--set", "eval.data.name=synthetic"],
     "supervised trains on labels: data.labels=false gives it none"),
    ("bad flag value", None, ["train", "--method", "rotation", "--epochs", "two"], "invalid int value"),
    ("ambiguous bare key", None, ["train", "--method", "multitask", "--set", "seed=1"], "ambiguous key 'seed'"),
    ("the method set as a key (the settings were read for the other)", None,
     ["train", "--method", "shuffle_learn", "--set", "method=tracking"], "method: the method is chosen by name"),
    ("a study's config naming a method", lambda r: _study(r, "name: s\nquestion: q\nmethods: [rotation, jigsaw]\n"
                                                              "params: {}\nconfig: {run.method: pirl}\n"),
     ["sweep", "s.yaml"], "run.method: the method is chosen by name"),
    ("no method", None, ["train"], "--method is required"),
    ("#12 image size out of range", None, ["train", "--method", "rotation", "--set", "data.image_size=100000"],
     "must be at most 4096 pixels"),
    ("#12 image size beyond memory", None, ["train", "--method", "rotation", "--set", "data.image_size=4000"],
     "GiB of memory"),
    # ---- train: issue 17's methods and trunk.norm
    ("cpc grid that does not fit the image", None, ["train", "--method", "cpc", "--set", "grid=20", *TINY],
     "does not fit 32-px images"),
    ("cpc patches that do not fit the image", None, ["train", "--method", "cpc", "--set", "patch=12", *TINY],
     "spans 48 px and does not fit"),
    ("ebm Langevin step size of zero", None, ["train", "--method", "ebm", "--set", "step_size=0"],
     "step_size: Input should be greater than 0"),
    ("ebm PCD buffer smaller than the batch", None, ["train", "--method", "ebm", "--set", "buffer=10", *TINY],
     "a PCD buffer of 10 chains is smaller than the batch of 20"),
    ("shuffle_batch on a method that contrasts nothing", None,
     ["train", "--method", "rotation", "--set", "trunk.norm=shuffle_batch", *TINY],
     "trunk.norm=shuffle_batch applies to the contrastive methods"),
    ("shuffle_batch on a batch too small for its sub-batches", None,
     ["train", "--method", "simclr", "--set", "trunk.norm=shuffle_batch", "--set", "trunk.norm_splits=16", *TINY],
     "optim.batch_size=20 is too small"),
    # ---- train: issue 16's video methods
    ("shuffle_learn on clips under 3 frames", None,
     ["train", "--method", "shuffle_learn", "--data", "synthetic_video", "--set", "data.frames=2", *TINY],
     "needs clips of at least 3 frames, not data.frames=2"),
    ("tracking with a patch larger than the frame", None,
     ["train", "--method", "tracking", "--data", "synthetic_video", "--set", "patch=40", *TINY],
     "a 40-px patch is larger than the 32-px frames"),
    ("a video method on still images", None, ["train", "--method", "shuffle_learn", *TINY],
     "shuffle_learn needs clips: data 'synthetic' has none"),
    ("avc with a sound clip longer than the video", None,
     ["train", "--method", "avc", "--data", "synthetic_video", "--set", "sound_seconds=3", *TINY],
     "a 3-s sound clip is longer than the 2-s video"),
    ("avc on data without sound", None, ["train", "--method", "avc", "--data", "cifar10", "--root", "x", *TINY],
     "avc needs sound and clips: data 'cifar10' has none"),
    ("multitask mixing a video method", None,
     ["train", "--method", "multitask", "--data", "synthetic_video", "--set", "tasks={avc: 1}", *TINY],
     "multitask: 'avc' needs clips or sound of each batch"),
    ("synthetic_video streamed", None,
     ["train", "--method", "rotation", "--data", "synthetic_video", "--set", "data.source=stream", *TINY],
     "synthetic_video is generated and held in memory"),
    # ---- train: data
    ("missing root", None, ["train", "--method", "rotation", "--data", "imagefolder", "--root", "nowhere"],
     "data root not found"),
    ("no root", None, ["train", "--method", "rotation", "--data", "imagefolder"], "data.root"),
    ("empty root", lambda r: (r / "empty").mkdir(),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "empty"], "data root is empty"),
    ("root is a file", lambda r: (r / "f.txt").write_text("x"),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "f.txt"], "not a folder"),
    ("wrong layout", lambda r: (r / "flat").mkdir() or Image.new("RGB", (8, 8)).save(r / "flat" / "x.png"),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "flat"], "wrong layout"),
    ("zero-byte image", lambda r: _tree(r / "t", b""),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", "--set", "optim.batch_size=4"], "1.png"),
    ("truncated image", lambda r: _tree(r / "t", _bomb_png(8, 8)[:30]),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", "--set", "optim.batch_size=4"], "corrupt image"),
    ("#1 decompression bomb", lambda r: _tree(r / "t", _bomb_png()),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", "--set", "optim.batch_size=4"], "decompression bomb"),
    ("stream of synthetic data", None, ["train", "--method", "rotation", "--set", "data.source=stream"],
     "data.source=stream reads image files"),
    ("manifest naming a missing file", lambda r: (r / "m.csv").write_text("path,label\nnope.jpg,a\n"),
     ["train", "--method", "rotation", "--data", "manifest", "--root", "m.csv"], "missing file"),
    ("manifest without a label column", lambda r: (r / "m.csv").write_text("path\nx.jpg\n"),
     ["train", "--method", "rotation", "--data", "manifest", "--root", "m.csv"], "no 'label' column"),
    ("parquet without shards", lambda r: (r / "shards").mkdir(),
     ["train", "--method", "rotation", "--data", "parquet", "--root", "shards"], "no train-*.parquet shards"),
    # ---- round two: data (one class list, nothing written before a refusal)
    ("r2-1 a test class the training split lacks", lambda r: _classes(r / "t", "ac", "abc"),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", *SMALL],
     "t/test has class(es) 'b' that the training split lacks"),
    ("r2-1 an empty class folder in train only", lambda r: _classes(r / "t", "abc", "abc", empty="b"),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", *SMALL],
     "has class(es) 'b' that the training split lacks"),
    ("r2-1 a manifest's test class the training rows lack",
     lambda r: _classes(r / "t", "abc", "abc") or _manifest(r, "t", lambda split, c: split == "train" and c == "c"),
     ["train", "--method", "rotation", "--data", "manifest", "--root", "m.csv", *SMALL],
     "(test rows) has class(es) 'c' that the training split lacks"),
    ("r2-2 a one-class labelled collection", lambda r: _classes(r / "t", "a", "a"),
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "t", *SMALL],
     "needs at least two classes, this one has 1 ('a')"),
    ("r2-4 an empty label cell in a manifest",
     lambda r: _classes(r / "t", "ab", "ab") or _manifest(r, "t", label=lambda c, i: "" if i == 3 else c),
     ["train", "--method", "rotation", "--data", "manifest", "--root", "m.csv", *SMALL], "row 4 has no label"),
    ("r2-4 a null label in a Parquet manifest",
     lambda r: _classes(r / "t", "ab", "ab") or _manifest(r, "t", label=lambda c, i: None if i == 2 else c,
                                                          name="m.parquet"),
     ["train", "--method", "rotation", "--data", "manifest", "--root", "m.parquet", *SMALL], "row 3 has no label"),
    ("r2-6 a batch larger than the limited synthetic set", None,
     ["train", "--method", "rotation", "--set", "data.limit=40", "--set", "optim.batch_size=64"],
     "optim.batch_size=64 is larger than the training set (40 images)"),
    ("r2-6 a bad multitask task list", None,
     ["train", "--method", "multitask", "--set", "data.limit=40", "--set", "optim.batch_size=20", "--set",
      "tasks={rotation: 1, nope: 1}"],
     "unknown task 'nope'"),
    ("r2-6 a ClusterFit source that is no run", None,
     ["train", "--method", "clusterfit", "--set", "data.limit=40", "--set", "optim.batch_size=20", "--set",
      "source=runs/nothing-here"], "nothing-here"),
    ("r2-6 eval.data with a missing root", None,
     ["train", "--method", "rotation", "--set", "data.limit=40", "--set", "optim.batch_size=20", "--set",
      "eval.data.name=imagefolder", "--set", "eval.data.root=nowhere"], "data root not found"),
    ("r2-6 a folder of one image a class", lambda r: [Image.new("RGB", (12, 12), (9, 9, 9 + i)).save(
        (r / "one" / c).mkdir(parents=True) or r / "one" / c / "0.png") for i, c in enumerate("ab")],
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "one", "--set", "optim.batch_size=1"],
     "the test split has no images"),
    ("r2-7 a root under a user that does not exist", None,
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "~nosuchuser/x"],
     "data.root: cannot expand '~nosuchuser': no such user"),
    ("r2-7 a 5,000-character root", None,
     ["train", "--method", "rotation", "--data", "imagefolder", "--root", "r" * 5000],
     "data.root: not a usable path (File name too long; 5000 characters)"),
    ("r2-7 Parquet shards without the image column", _foreign_shards,
     ["train", "--method", "rotation", "--data", "parquet", "--root", "shards"], "has no 'image', 'index' column(s)"),
    ("r2-9 a study whose data root does not exist",
     lambda r: _study(r, "name: s\nquestion: q\nmethods: [rotation]\ndata: {name: imagefolder, root: nowhere}\n"
                        "params: {optim.lr: {grid: [0.1, 0.2]}}\n"),
     ["sweep", "s.yaml"], "s.yaml: data root not found: nowhere"),
    ("r2-10 a study with nothing to compare",
     lambda r: _study(r, "name: s\nquestion: q\nmethods: [rotation]\nparams: {}\nbaselines: false\n"),
     ["sweep", "s.yaml"], "params is empty, one method is named and baselines are off"),
    ("one configuration under a searcher that would repeat it",
     lambda r: _study(r, "name: s\nquestion: q\nmethods: [rotation]\nparams: {}\nsearch: tpe\n"),
     ["sweep", "s.yaml"], "the study has one configuration, which search: tpe would try again and again"),
    # ---- train: resume
    ("nothing to resume", None, ["train", "--method", "rotation", "--resume"], "cannot resume"),
    ("resume a truncated checkpoint", lambda r: _run_folder(r, checkpoint=b"PK\x03\x04 truncated"),
     ["train", "--resume", "runs/rotation-20260101-000000-abcd"], "unreadable checkpoint"),
    ("#13 resume without run.json", lambda r: _with_checkpoint(r, meta=False),
     ["train", "--resume", "runs/rotation-20260101-000000-abcd", *TINY], "has no MLflow run id"),
    ("#13 resume a run MLflow lacks", lambda r: _with_checkpoint(r),
     ["train", "--resume", "runs/rotation-20260101-000000-abcd", *TINY], "is not in the store"),
    # ---- train: where it runs
    ("#2 a GPU on a machine without one", None, ["train", "--method", "rotation", "--gpus-per-worker", "1", *TINY],
     "GPU(s); this machine has 0"),
    ("#3 storage for an in-process run", None, ["train", "--method", "rotation", "--storage", "/proc/x", *TINY],
     "--storage is where Ray Train keeps checkpoints"),
    ("no workers", None, ["train", "--method", "rotation", "--workers", "0"], "dist.workers"),
    ("#4 unreachable address", None, ["train", "--method", "rotation", "--workers", "2", "--address",
                                      "127.0.0.1:1", *TINY], "cannot reach Ray"),
    ("#9 unwritable run folders", None, ["train", "--method", "rotation", "--set", "output_dir=/proc/sslray-runs",
                                         *TINY], "cannot write the run folder"),
    ("#8 corrupt MLflow store", lambda r: (r / "mlflow.db").write_text("not a database"),
     ["train", "--method", "rotation", *TINY], "cannot be used"),
    # ---- eval, compare
    ("eval of a missing folder", None, ["eval", "nowhere"], "eval: no run folder with a checkpoint"),
    ("#7 eval of a truncated trunk", lambda r: _with_checkpoint(r, trunk=b"PK\x03\x04 cut"),
     ["eval", "runs/rotation-20260101-000000-abcd"], "unreadable trunk"),
    ("#7 eval of a malicious trunk", lambda r: _with_checkpoint(r, trunk=_malicious_pickle()),
     ["eval", "runs/rotation-20260101-000000-abcd"], "unreadable trunk"),
    ("compare of an unevaluated run", lambda r: (r / "half").mkdir(), ["compare", "half"], "has no transfer.json"),
    ("#14 compare of a corrupt transfer.json",
     lambda r: (r / "bad").mkdir() or (r / "bad" / "transfer.json").write_text('{"transfer/res5/to'),
     ["compare", "bad"], "is not valid JSON"),
    ("compare of a nonexistent run", None, ["compare", "nope"], "neither a run folder nor a run id"),
    # ---- sweep, report
    ("missing study", None, ["sweep", "nope.yaml"], "no such file"),
    ("malformed study YAML", lambda r: _study(r, "question: [unclosed\n"), ["sweep", "s.yaml"], "malformed YAML"),
    ("malicious study YAML", lambda r: _study(r, "question: !!python/object/apply:os.system ['echo pwned']\n"),
     ["sweep", "s.yaml"], "malformed YAML"),
    ("unknown study key", lambda r: _study(r, STUDY + "colour: red\n"), ["sweep", "s.yaml"], "colour: unknown key"),
    ("inverted range", lambda r: _study(r, "question: q\nmethods: [rotation]\nparams: {optim.lr: {uniform: [1, 0.1]}}\n"),
     ["sweep", "s.yaml"], "empty or inverted range"),
    ("#6 a bad value past the first", lambda r: _study(r, STUDY.replace("[0.05, 0.1]", "[0.05, -1]")),
     ["sweep", "s.yaml"], "optim.lr: Input should be greater than 0 (got -1)"),
    ("a parameter that is no setting", lambda r: _study(r, "question: q\nmethods: [rotation]\n"
                                                           "params: {temperature: {grid: [0.1]}}\n"),
     ["sweep", "s.yaml"], "not a setting of method 'rotation'"),
    ("unknown study method", lambda r: _study(r, STUDY.replace("[rotation]", "[rotatoin]")), ["sweep", "s.yaml"],
     "unknown method 'rotatoin'"),
    ("report of an unknown study", None, ["report", "never-ran"], "no study 'never-ran'"),
    # ---- round two: output paths, ui, stores
    ("r2-7 train output_dir under a file", lambda r: (r / "f").write_text("x"),
     ["train", "--method", "rotation", "--set", "output_dir=f/runs", *TINY], "cannot write the run folder f/runs ("),
    ("r2-7 train output_dir too long for the file system", None,
     ["train", "--method", "rotation", "--set", f"output_dir={'r' * 5000}", *TINY], "the path is too long"),
    ("r2-7 prepare --out unwritable", lambda r: _tree(r / "t"), ["data", "prepare", "t", "--out", "/proc/sslray-shards"],
     "data prepare: cannot write the shards to /proc/sslray-shards (permissions)"),
    ("r2-7 prepare --out under a file", lambda r: _tree(r / "t") or (r / "f").write_text("x"),
     ["data", "prepare", "t", "--out", "f/shards"], "f is a file, not a folder"),
    ("r2-7 prepare --out a file", lambda r: _tree(r / "t") or (r / "f").write_text("x"),
     ["data", "prepare", "t", "--out", "f"], "cannot write the shards to f (a file, not a folder)"),
    ("r2-7 compare --plot to a .txt name", None, ["compare", "nope", "--plot", "per_layer.txt"],
     "compare: cannot write the plot to per_layer.txt (not a png, pdf, svg"),
    ("r2-7 compare --plot to a folder", lambda r: (r / "figs.png").mkdir(), ["compare", "nope", "--plot", "figs.png"],
     "compare: cannot write the plot to figs.png (a folder, not a file)"),
    ("r2-7 compare --plot unwritable", None, ["compare", "nope", "--plot", "/proc/sslray.png"],
     "compare: cannot write the plot to /proc/sslray.png (permissions)"),
    ("r2-7 compare --plot 5,000 characters long", None, ["compare", "nope", "--plot", "p" * 4996 + ".png"],
     "(5000 characters) (the path is too long for the file system)"),
    ("r2-7 study whose name is empty", lambda r: _study(r, "name: ''\n" + STUDY), ["sweep", "s.yaml"],
     "name: a study needs a name"),
    ("r2-7 study whose name is a path", lambda r: _study(r, "name: ../up\n" + STUDY), ["sweep", "s.yaml"],
     "cannot name a folder and an MLflow experiment (no '/')"),
    ("r2-7 sweep --output-dir unwritable", lambda r: _study(r, STUDY), ["sweep", "s.yaml", "--output-dir", "/proc/sweeps"],
     "sweep: cannot write to --output-dir /proc/sweeps (permissions)"),
    ("r2-7 sweep --output-dir under a file", lambda r: _study(r, STUDY) or (r / "f").write_text("x"),
     ["sweep", "s.yaml", "--output-dir", "f/runs"], "f is a file, not a folder"),
    ("r2-7 report --out under a file", lambda r: (r / "f").write_text("x"), ["report", "s", "--out", "f"],
     "report: cannot write the figures to f/s ("),
    ("r2-8 ui with an unresolvable --host", None, ["ui", "--host", "no-such-host.invalid", "--port", "5391"],
     "ui: cannot resolve --host 'no-such-host.invalid'"),
    ("r2-8 ui with a --host not of this machine", None, ["ui", "--host", "192.0.2.1", "--port", "5391"],
     "ui: --host 192.0.2.1 is not an address of this machine"),
    # ---- ui, data, bench
    ("#16 ui on port 99999", None, ["ui", "--port", "99999"], "port 99999 is outside 1-65535"),
    ("ui on a port that is no number", None, ["ui", "--port", "http"], "not a port number"),
    ("prepare into a non-empty folder", lambda r: _tree(r / "t") or (r / "out").mkdir() or (r / "out" / "x").write_text(""),
     ["data", "prepare", "t", "--out", "out"], "not an empty folder"),
    ("prepare with empty shards", lambda r: _tree(r / "t"), ["data", "prepare", "t", "--out", "o", "--shard-rows", "0"],
     "--shard-rows must be in"),
    ("bench flag of another bench", None, ["bench", "eval", "--negatives", "1,2"], "unrecognized arguments"),
    ("bench with no threads", None, ["bench", "step", "--threads", "0"], "--threads must be at least 1"),
    # ---- round two: bounds (generated harness in test_bounds.py)
    ("r2-7 negative data seed", None, ["train", "--method", "rotation", "--set", "data.seed=-5"],
     "data.seed: Input should be greater than or equal to 0 (got -5)"),
    ("r2-7 health subset of one image", None, ["train", "--method", "rotation", "--set", "eval.health_size=1"],
     "eval.health_size: Input should be greater than or equal to 2 (got 1)"),
    ("r2-11 avc n_mels above its bound", None, ["train", "--method", "avc", "--set", "n_mels=100000"],
     "n_mels: Input should be less than or equal to 129 (got 100000)"),
    ("r2-11 avc n_mels leaving a mel band without a frequency bin", None,
     ["train", "--method", "avc", "--data", "synthetic_video", "--set", "n_mels=125", *TINY],
     "avc: n_mels=125 mel bands of 4000-Hz sound leave the lowest without a frequency bin of the 256-sample "
     "spectrogram: use n_mels <= 121"),
    ("r2-5 no layer to evaluate", None, ["train", "--method", "rotation", "--set", "eval.layers=[]"],
     "eval.layers: List should have at least 1 item"),
    ("r2-5 tracking gap equal to the clip's frames", None,
     ["train", "--method", "tracking", "--data", "synthetic_video", "--set", "data.frames=8", "--set", "gap=8", *TINY],
     "tracking: a gap of 8 frames does not fit clips of 8 frames: use gap <= 7"),
    ("r2-5 tracking with more hard negatives than other clips", None,
     ["train", "--method", "tracking", "--data", "synthetic_video", "--set", "hard_negatives=20", *TINY],
     "tracking: hard_negatives=20 is more than the 19 other clips of a batch of 20"),
    ("r2-5 colorization predicting at a stride past the image", None,
     ["train", "--method", "colorization", "--set", "out_stride=64", *TINY],
     "colorization: out_stride=64 leaves no pixel of the 32-px images to predict"),
    ("r2-11 supervised padding more than half the image", None,
     ["train", "--method", "supervised", "--set", "pad=17", *TINY], "supervised: pad=17 is more than half the 32-px"),
    # ---- issue 27: negative-free methods
    ("r2-11 byol ema above 1", None, ["train", "--method", "byol", "--set", "ema=1.5"],
     "ema: Input should be less than or equal to 1 (got 1.5)"),
    ("r2-11 byol ema below 0", None, ["train", "--method", "byol", "--set", "ema=-0.1"],
     "ema: Input should be greater than or equal to 0 (got -0.1)"),
    ("r2-11 dino ema above 1", None, ["train", "--method", "dino", "--set", "ema=2"],
     "ema: Input should be less than or equal to 1 (got 2)"),
    ("r2-5 simsiam predictor without a hidden size", None, ["train", "--method", "simsiam", "--set", "pred_hidden=0"],
     "simsiam: predictor: true needs a predictor hidden size: pred_hidden must be at least 1"),
    ("r2-5 byol predictor without a hidden size", None, ["train", "--method", "byol", "--set", "pred_hidden=0"],
     "byol: predictor: true needs a predictor hidden size: pred_hidden must be at least 1"),
    ("r2-5 dino local crops larger than the global ones", None, ["train", "--method", "dino", "--set", "local_size=40"],
     "dino: local crops of 40 px are larger than the 32-px global ones: use local_size <= 32"),
    ("r2-11 barlow projector of one dimension", None, ["train", "--method", "barlow", "--set", "proj_dim=1"],
     "proj_dim: Input should be greater than or equal to 2 (got 1)"),
    ("r2-11 vicreg projector of one dimension", None, ["train", "--method", "vicreg", "--set", "proj_dim=1"],
     "proj_dim: Input should be greater than or equal to 2 (got 1)"),
    ("r2-5 vicreg with all three weights at 0", None,
     ["train", "--method", "vicreg", "--set", "invariance=0", "--set", "variance=0", "--set", "covariance=0"],
     "vicreg: all three weights (invariance, variance, covariance) are 0"),
    # ---- data.decode (issue 26): where it cannot be honoured
    ("data.decode=gpu without a GPU", None, ["train", "--method", "rotation", "--set", "data.decode=gpu"],
     "data.decode=gpu decodes JPEGs on the training GPU (nvJPEG): this run has none"),
    ("data.decode of an unknown kind", None, ["train", "--method", "rotation", "--set", "data.decode=fpga"],
     "data.decode: Input should be 'auto', 'cpu' or 'gpu'"),
    # ---- evaluation protocols as registered modules (issue 25): settings blocks, the old flat keys refused
    ("i25 old flat kNN key", None, ["train", "--method", "rotation", "--set", "eval.knn_k=5"],
     "eval.knn_k is now eval.knn.k"),
    ("i25 old flat probe key", None, ["train", "--method", "rotation", "--set", "eval.probe_epochs=3"],
     "eval.probe_epochs is now eval.linear.epochs"),
    ("i25 old flat probe grid key", None, ["train", "--method", "rotation", "--set", "eval.probe_lrs=[0.1]"],
     "eval.probe_lrs is now eval.linear.lrs"),
    ("i25 old flat fine-tuning key", None, ["train", "--method", "rotation", "--set", "eval.finetune_lr=0.1"],
     "eval.finetune_lr is now eval.finetune.lr"),
    ("i25 old flat low-shot key", None, ["train", "--method", "rotation", "--set", "eval.lowshot_shots=[5]"],
     "eval.lowshot_shots is now eval.lowshot.shots"),
    ("i25 old invariance list", None, ["train", "--method", "rotation", "--set", "eval.invariance=[rotation]"],
     "eval.invariance is now a block of settings: eval.invariance.transforms=[...] and invariance in eval.protocols"),
    ("i25 old flat key in a study", lambda root: _study(root, STUDY + "config: {eval.knn_temperature: 0.1}\n"),
     ["sweep", "s.yaml"], "eval.knn_temperature is now eval.knn.temperature"),
    ("i25 a protocol's block given a value", None, ["train", "--method", "rotation", "--set", "eval.knn=5"],
     "eval.knn is a block of settings (eval.knn.<key>=...), got 5"),
    ("i25 unknown protocol block", None, ["train", "--method", "rotation", "--set", "eval.knnn.k=5"],
     "unknown key 'eval.knnn'"),
    ("i25 unknown key in a protocol's block", None, ["train", "--method", "rotation", "--set", "eval.knn.kk=5"],
     "eval.knn.kk: unknown key"),
    ("i25 out-of-range protocol setting", None, ["train", "--method", "rotation", "--set", "eval.knn.k=0"],
     "eval.knn.k: Input should be greater than 0 (got 0)"),
    ("i25 unknown transform", None, ["train", "--method", "rotation", "--set", "eval.invariance.transforms=[blur]"],
     "eval.invariance.transforms: unknown transform(s) 'blur'"),
    # ---- bench gpu's methods (issue 26): any registered method for the loop, the ceilings for their two
    ("bench gpu ceiling of a method without one", None,
     ["bench", "gpu", "--cpu", "--parts", "ceiling", "--methods", "moco"],
     "bench gpu: the ceiling part takes simclr and rotation"),
    ("bench gpu unknown method", None, ["bench", "gpu", "--cpu", "--parts", "memory", "--methods", "simclr,nope"],
     "unknown method 'nope'"),
]


def _written(root: Path, cache: Path) -> set[str]:
    """What a command could have written: run folders, MLflow's store and artifacts, cache files."""
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ("runs" in p.parts
             or p.name == "mlflow.db" or "mlartifacts" in p.parts or "reports" in p.parts)}
    return found | {f"cache/{p.name}" for p in cache.glob("*") if p.is_file()}


@pytest.mark.parametrize("name, setup, argv, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, setup, argv, phrase, capsys, tmp_path):
    cache = Path(os.environ["SSLRAY_CACHE"])
    if setup:
        setup(tmp_path)
    before = _written(tmp_path, cache)
    store = (tmp_path / "mlflow.db").read_bytes() if (tmp_path / "mlflow.db").exists() else None
    assert main(argv) == 2, capsys.readouterr().err
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and phrase in err, err
    assert "Traceback" not in err
    assert _written(tmp_path, cache) == before  # no MLflow run, run folder or cache file appeared
    if store is not None:
        assert (tmp_path / "mlflow.db").read_bytes() == store
    assert not (tmp_path / "pwned.txt").exists()  # nothing a file carried was ever executed
    assert not (tmp_path / "runs" / "ray").exists()  # not even an empty storage folder (#4)


def test_the_harness_covers_every_cause_of_the_issue():
    causes = {int(c[0].split()[0][1:]) for c in CASES if c[0].startswith("#")}
    # 5 (stale cache), 10 (two runs on a new store), 15 (report --out) and the diverged run (11) are tests
    # of their own below: they need a run, or two processes, not a single bad command
    assert causes | {5, 10, 15} == set(range(1, 17))


def test_round_two_covers_every_cause_of_the_issue():
    """Reliability, round two: 15 causes, each a row here (``r2-N``) or a test of its own
    (``test_r2_N_...``) where it needs a run, two processes or a signal."""
    import re

    rows = {int(c[0].split()[0][3:]) for c in CASES if c[0].startswith("r2-")}
    tests = {int(n) for f in Path(__file__).parent.glob("test_*.py")
             for n in re.findall(r"^def test_r2_(\d+)_", f.read_text(), re.M)}
    assert rows | tests == set(range(1, 16)), sorted(set(range(1, 16)) - rows - tests)


def test_5_replacing_an_image_rebuilds_the_decoded_cache(tmp_path):
    from sslray.config import DataConfig
    from sslray.data import load_data

    _tree(tmp_path / "t")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path / "t"), image_size=16)
    first = load_data(cfg)[0].images.clone()
    target = tmp_path / "t" / "train" / "a" / "0.png"
    Image.new("RGB", (40, 36), (255, 255, 255)).save(target)  # same name and count, new pixels
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 1_000_000))
    second = load_data(cfg)[0].images
    assert not (second == first).all() and int(second[0].float().mean()) == 255  # decoded again, not the stale copy
    target.write_bytes(b"garbage")  # replaced by garbage: an error, never the old pixels
    with pytest.raises(Exception, match="corrupt image"):
        load_data(cfg)


def test_10_two_runs_started_together_on_a_new_store_both_finish(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sslray", "train", "--method", "random", "--no-eval", *TINY]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-800:] for o in outs]
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


def test_15_a_report_that_cannot_write_its_figures_says_so_before_printing(tmp_path, capsys):
    from sslray.sweep.runner import _parent_run
    from sslray.sweep.study import load_study
    from sslray.tracking import Store

    _study(tmp_path, STUDY.replace("question: q", "name: s\nquestion: q"))
    _parent_run(load_study(str(tmp_path / "s.yaml")), resume=False, store=Store())
    assert main(["report", "s", "--out", "/proc/forbidden"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == "sslray: error: report: cannot write the figures to /proc/forbidden/s (permissions)"
    assert "objective" not in out  # not half a report


def test_11_a_trunk_that_overflows_stops_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    import torch

    from sslray.train import loop

    real = loop.build_optimizer

    def poisoned(params, cfg):  # an optimiser whose last step of the epoch leaves an infinite weight
        opt = real(params, cfg)
        steps = []

        def overflow(optimizer, *_):
            steps.append(1)
            if len(steps) < 2:  # 40 images, batches of 20: the loss of both steps stays finite
                return
            with torch.no_grad():
                first = optimizer.param_groups[0]["params"][0]
                first[(0,) * first.dim()] = float("inf")

        opt.register_step_post_hook(overflow)
        return opt

    monkeypatch.setattr(loop, "build_optimizer", poisoned)
    assert main(["train", "--method", "rotation", "--no-eval", *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sslray: the run diverged: ") and "trunk weight tensors are not finite after epoch 1" in err
    assert err.count("\n") == 0
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    assert run.info.status == "FAILED"
