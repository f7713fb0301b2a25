"""A run's folder: the one owner of its layout and of every file in it.

::

    <output_dir>/<method>-<stamp>-<hex>/
        config.yaml      the validated RunConfig (plain YAML)
        run.json         {"method", "mlflow_run_id"}
        checkpoint.pt    the last epoch's training state (model, optimiser, schedule, RNG, metrics)
        trunk.pt         the trained trunk's weights
        transfer.json    the per-layer evaluation's metrics
        per_layer.png    the per-layer figure
        features/        cached frozen features of the evaluation
        debug/           instrumentation (debug.record_steps, debug.kill_at)
        .lock            held (flock) by the process training the run, so no second one resumes it

Torch files hold plain tensors and primitives only, are written atomically (a crash mid-write
never corrupts the last good file) and are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from ..errors import UserError


def save_torch(path: str | Path, state: Any) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_torch(path: str | Path, what: str = "file", map_location="cpu") -> Any:
    """A weights-only torch file; a missing, truncated or foreign file is a one-line UserError."""
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(f"unreadable {what} {path}: {type(e).__name__}") from None


def writable(path: Path) -> bool:
    """Whether ``path`` can be written as a folder, or created (see :func:`sslray.paths.problem`)."""
    from ..paths import problem

    return problem(path, "folder") is None


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _query(query: str) -> dict:
    """``"label_noise=0.5&pad=4"`` -> ``{"label_noise": 0.5, "pad": 4}`` (values read as YAML)."""
    import yaml

    out = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise UserError(f"latest:<method>?key=value: cannot read {part!r}")
        out[key] = yaml.safe_load(value)
    return out


def _matches(config: dict, wanted: dict) -> bool:
    """Whether a run's config has every wanted value: a method setting by name, or a dotted key."""
    for key, value in wanted.items():
        node = config.get("settings", {}) if "." not in key else config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return False
    return True


class RunDir:
    CONFIG, META, CHECKPOINT, TRUNK = "config.yaml", "run.json", "checkpoint.pt", "trunk.pt"
    TRANSFER, PLOT, FEATURES, DEBUG = "transfer.json", "per_layer.png", "features", "debug"
    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ---------------------------------------------------------------- where runs are
    @classmethod
    def new(cls, output_dir: str | Path, method: str) -> "RunDir":
        """A fresh, unique folder name under ``output_dir`` (not created yet)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return cls(Path(output_dir) / f"{method}-{stamp}-{secrets.token_hex(2)}")

    @classmethod
    def find(cls, target: str, output_dir: str | Path, method: str | None = None) -> "RunDir":
        """The run folder ``target`` names: a path (to the folder or a file in it), an MLflow run id
        of a run under ``output_dir``, ``latest`` (the newest run of ``method``), ``latest:<method>`` or
        ``latest:<method>?key=value&...`` (the newest whose config has those values: ``label_noise=0.5``).
        Only folders with a checkpoint count; anything else is a one-line UserError."""
        wanted: dict = {}
        if target.startswith("latest:"):
            target, method = "latest", target.split(":", 1)[1]
            method, _, query = method.partition("?")
            wanted = _query(query)
        path = Path(target)
        if path.is_file():
            path = path.parent
        if (path / cls.CHECKPOINT).exists():
            return cls(path)
        root = Path(output_dir)
        found = sorted(root.glob(f"*/{cls.CHECKPOINT}"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if root.is_dir() else []
        for ckpt in found:
            run = cls(ckpt.parent)
            meta = run.meta()
            if target == "latest" and (method is None or meta.get("method") == method) and \
                    (not wanted or _matches(run.config(), wanted)):
                return run
            if meta.get("mlflow_run_id") == target:
                return run
        if target == "latest":
            which = f"method {method!r}" + (f" with {', '.join(f'{k}={v}' for k, v in wanted.items())}" if wanted else "")
            raise UserError(f"no checkpoint of {which} in {root}/" if method else f"no run in {root}/")
        raise UserError(f"no run folder with a checkpoint at {target!r}, and no run with that MLflow id in {root}/")

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def hold(self):
        """Take the run's lock (the folder must exist) for as long as this process trains it: a
        second process resuming the run is refused in one line. Returns the lock to release, or
        None when this object holds it already."""
        from ..paths import Held

        if getattr(self, "_held", None) is not None and not self._held.released:
            return None
        self._held = Held(self.file(self.LOCK), f"run {self.path} is being trained by another sslray process "
                                                f"(a --resume of it, or its first run); wait for it to end")
        return self._held

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    # ---------------------------------------------------------------- config and identity
    def write_config(self, config: dict) -> None:
        import yaml

        _write_text(self.file(self.CONFIG), yaml.safe_dump(config, sort_keys=False))

    def config(self) -> dict:
        import yaml

        path = self.file(self.CONFIG)
        if not path.is_file():
            raise UserError(f"run {self.path} has no {self.CONFIG}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise UserError(f"run {self.path}: {self.CONFIG} is not valid YAML") from None
        if not isinstance(data, dict):
            raise UserError(f"run {self.path}: {self.CONFIG} is not a mapping")
        return data

    def write_meta(self, method: str, mlflow_run_id: str) -> None:
        _write_text(self.file(self.META), json.dumps({"method": method, "mlflow_run_id": mlflow_run_id}))

    def meta(self) -> dict:
        """``run.json`` (``{}`` when missing or unreadable)."""
        try:
            data = json.loads(self.file(self.META).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def mlflow_run_id(self) -> str:
        run_id = self.meta().get("mlflow_run_id")
        if not run_id:
            raise UserError(f"run {self.path} has no MLflow run id ({self.META} missing or unreadable)")
        return run_id

    # ---------------------------------------------------------------- training state
    def save_checkpoint(self, state: dict) -> None:
        save_torch(self.file(self.CHECKPOINT), state)

    def load_checkpoint(self) -> dict:
        return load_torch(self.file(self.CHECKPOINT), "checkpoint")

    def save_trunk(self, state_dict: dict) -> None:
        save_torch(self.file(self.TRUNK), {k: v.detach().cpu() for k, v in state_dict.items()})

    def load_trunk(self) -> dict:
        return load_torch(self.file(self.TRUNK), "trunk")

    def trunk_at(self, epoch: int) -> Path:
        """Where the trunk as it was after ``epoch`` (1-based) is kept (``eval.at_epochs``)."""
        return self.file(f"trunk_e{epoch}.pt")

    def save_trunk_at(self, epoch: int, state_dict: dict) -> None:
        save_torch(self.trunk_at(epoch), {k: v.detach().cpu() for k, v in state_dict.items()})

    def load_trunk_at(self, epoch: int) -> dict:
        if not self.trunk_at(epoch).is_file():
            raise UserError(f"{self.path} kept no trunk after epoch {epoch} (train with eval.at_epochs including "
                            f"{epoch} to keep one)")
        return load_torch(self.trunk_at(epoch), f"trunk of epoch {epoch}")

    # ---------------------------------------------------------------- evaluation
    def write_transfer(self, metrics: dict[str, float]) -> None:
        _write_text(self.file(self.TRANSFER), json.dumps(metrics, indent=1))

    def transfer(self) -> dict[str, float]:
        path = self.file(self.TRANSFER)
        if not path.is_file():
            raise UserError(f"{self.path} has no {self.TRANSFER} (not evaluated yet?)")
        try:
            data = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is not valid JSON (a truncated evaluation? rerun `sslray eval {self.path}`)") \
                from None
        if not isinstance(data, dict):
            raise UserError(f"{path} is not a mapping of metrics")
        return data

    def write_json(self, name: str, record) -> Path:
        """A JSON record of the evaluation (e.g. the probe grid), written whole or not at all."""
        path = self.file(name)
        _write_text(path, json.dumps(record, indent=1))
        return path

    def save_figure(self, fig, name: str | None = None) -> Path:
        import matplotlib.pyplot as plt

        path = self.file(name or self.PLOT)
        fig.savefig(path)
        plt.close(fig)
        return path

    @property
    def features(self) -> Path:
        return self.file(self.FEATURES)

    @property
    def debug(self) -> Path:
        return self.file(self.DEBUG)
