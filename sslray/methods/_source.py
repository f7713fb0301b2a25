"""A finished run as the source of another (ClusterFit, distillation): find it, rebuild its trunk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import UserError


@dataclass(frozen=True)
class SourceRun:
    run_dir: Path
    mlflow_run_id: str
    method: str
    config: dict


def find_source(target: str, output_dir: str, who: str) -> SourceRun:
    """The finished run that ``target`` names (a run folder or an MLflow run id under
    ``output_dir``); a UserError unless it has a checkpoint, a config and a trunk."""
    from ..train.run import find_run_dir  # late: the training code imports the methods

    if not target:
        raise UserError(f"{who} needs a source run: --set source=RUN_FOLDER_OR_MLFLOW_RUN_ID")
    try:
        run_dir = find_run_dir(target, output_dir)
    except UserError:
        raise UserError(f"{who}: source {target!r} is not a finished run (no run folder with a checkpoint there, "
                        f"and no run with that MLflow id in {output_dir}/)") from None
    for name in ("config.yaml", "trunk.pt"):
        if not (run_dir / name).exists():
            raise UserError(f"{who}: source run {run_dir} has no {name} (did it finish?)")
    meta = run_dir / "run.json"
    info = json.loads(meta.read_text()) if meta.exists() else {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return SourceRun(run_dir, info.get("mlflow_run_id", ""), config.get("method", ""), config)


def load_source_trunk(src: SourceRun):
    """The source's trunk with its trained weights, built from its config; ``auto`` width and stem
    are read off the saved weights (they resolve by machine and could differ here)."""
    from ..models import build_trunk

    try:
        state = torch.load(src.run_dir / "trunk.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"unreadable trunk {src.run_dir / 'trunk.pt'}: {type(e).__name__}") from None
    t = src.config.get("trunk", {})
    width = t.get("width", "auto")
    stem = t.get("stem", "auto")
    if width == "auto":
        width = state["conv1.weight"].shape[0] / 64
    if stem == "auto":
        stem = "cifar" if state["conv1.weight"].shape[-1] == 3 else "imagenet"
    trunk = build_trunk(t.get("arch", "resnet18"), width, stem, src.config.get("data", {}).get("image_size", 32))
    trunk.load_state_dict(state)
    return trunk
