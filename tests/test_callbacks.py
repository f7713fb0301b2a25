"""Training-time work is callbacks on the shared loop (sslray/train/callbacks/): what a callback
hears, in which order, and how a run composes its own."""

from __future__ import annotations

import torch

from sslray.data import ImageSet, MemorySource
from sslray.train.build import build_config, build_method
from sslray.train.callbacks import Callback, LastEpoch
from sslray.train.loop import fit


def _images(n: int = 48) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 2,
                    ["a", "b"], "toy", "train")


class Heard(Callback):
    """Writes down every hook call; adds a metric of its own for the callbacks after it."""

    def __init__(self, name: str, said: list):
        self.name, self.said = name, said

    def on_step(self, epoch, step, idx, loss, model):
        self.said.append((self.name, "step", epoch, step, len(idx), loss.dim()))

    def on_epoch(self, epoch, logs, state):
        self.said.append((self.name, "epoch", epoch, sorted(k for k in logs if not k.startswith("time/")),
                          state["epoch"]))
        logs[f"{self.name}/seen"] = float(epoch)

    def on_end(self):
        self.said.append((self.name, "end"))


def test_callbacks_hear_every_step_every_epoch_in_order_and_the_end():
    cfg = build_config("rotation", {"trunk.width": 0.125, "optim.batch_size": 16, "epochs": 2, "data.image_size": 16})
    data = MemorySource(_images())
    said: list = []
    last = LastEpoch()
    fit(cfg, build_method(cfg, data), data, progress=False, callbacks=[Heard("a", said), Heard("b", said), last])
    steps = [s for s in said if s[1] == "step"]
    assert steps == [(n, "step", e, i, 16, 0) for e in (0, 1) for i in range(3) for n in ("a", "b")]
    epochs = [s for s in said if s[1] == "epoch"]
    logged = ["train/acc", "train/data_wait", "train/epoch_time", "train/img_per_s", "train/img_per_s_worker",
              "train/loss", "train/lr"]
    assert epochs == [("a", "epoch", 0, logged, 1), ("b", "epoch", 0, ["a/seen", *logged], 1),
                      ("a", "epoch", 1, logged, 2), ("b", "epoch", 1, ["a/seen", *logged], 2)]
    assert said[-2:] == [("a", "end"), ("b", "end")]
    assert last.logs["a/seen"] == 1.0 and last.logs["b/seen"] == 1.0 and 0 < last.logs["time/step"] <= 1


def test_a_method_declares_its_embedding_size():
    from sslray.methods import discover

    data = MemorySource(_images())
    dims = {}
    for name in ("simclr", "moco", "rotation"):
        cfg = build_config(name, {"trunk.width": 0.125, "optim.batch_size": 16, "data.image_size": 16})
        dims[name] = build_method(cfg, data).embed_dim
    assert dims == {"simclr": 128, "moco": 128, "rotation": None}  # rotation reports no embedding spread
    assert discover()["simclr"].embed_dim is None  # declared by the built method, from its settings


def test_the_epoch_line_shows_a_pretext_accuracy_only_where_the_method_has_one(capsys):
    """BYOL, VICReg and the like have no pretext accuracy: their line said ``acc nan%``."""
    from sslray.train.callbacks.report import EpochLine

    line = EpochLine(3)
    line.on_epoch(0, {"train/loss": 0.5, "train/acc": 0.935, "train/img_per_s": 419.4}, None)
    line.on_epoch(1, {"train/loss": 0.0053, "train/img_per_s": 419.0}, None)
    line.on_epoch(2, {"train/loss": 0.0039, "train/acc": float("nan"), "train/img_per_s": 420.0}, None)
    assert capsys.readouterr().out.splitlines() == ["epoch 1/3  loss 0.5000  acc 93.5%  419 img/s",
                                                    "epoch 2/3  loss 0.0053  419 img/s",
                                                    "epoch 3/3  loss 0.0039  420 img/s"]


class GradNorm(Callback):
    """The global norm of the gradients the optimiser just stepped with (they stay until the next step)."""

    def __init__(self):
        self.norms = []

    def on_step(self, epoch, step, idx, loss, model):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def test_train_clip_grad_clips_the_global_norm_of_every_step():
    data = MemorySource(_images())
    norms = {}
    for clip in (None, 0.01):
        cfg = build_config("rotation", {"trunk.width": 0.125, "optim.batch_size": 16, "epochs": 1,
                                        "data.image_size": 16, "train.clip_grad": clip})
        heard = GradNorm()
        fit(cfg, build_method(cfg, data), data, progress=False, callbacks=[heard])
        norms[clip] = heard.norms
    assert len(norms[None]) == len(norms[0.01]) == 3
    assert min(norms[None]) > 0.05  # unclipped, the toy step's gradients are far larger than the clip
    assert max(norms[0.01]) <= 0.01 * (1 + 1e-4)
