"""A finished run as the source of another (ClusterFit, distillation): find it, rebuild its trunk."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..models import build_trunk
from ..tracking import RunDir


@dataclass(frozen=True)
class SourceRun:
    run_dir: RunDir
    mlflow_run_id: str
    method: str
    config: dict


def source_noise(src: SourceRun) -> dict:
    """``{"source_label_noise": p}`` when the source was trained on noisy labels (else empty): the x of
    the label-noise experiment, logged with every run made from such a source."""
    noise = (src.config.get("settings") or {}).get("label_noise")
    return {"source_label_noise": noise} if noise is not None else {}


def find_source(target: str, output_dir: str, who: str) -> SourceRun:
    """The finished run that ``target`` names (a run folder or an MLflow run id under
    ``output_dir``); a UserError unless it has a checkpoint, a config and a trunk."""
    if not target:
        raise UserError(f"{who} needs a source run: --set source=RUN_FOLDER_OR_MLFLOW_RUN_ID")
    try:
        run_dir = RunDir.find(target, output_dir)
    except UserError as e:
        if target.startswith("latest"):  # its own message says which method and values it looked for
            raise UserError(f"{who}: source {target!r}: {e}") from None
        raise UserError(f"{who}: source {target!r} is not a finished run (no run folder with a checkpoint there, "
                        f"and no run with that MLflow id in {output_dir}/)") from None
    for name in (RunDir.CONFIG, RunDir.TRUNK):
        if not run_dir.has(name):
            raise UserError(f"{who}: source run {run_dir} has no {name} (did it finish?)")
    config = run_dir.config()
    return SourceRun(run_dir, run_dir.meta().get("mlflow_run_id", ""), config.get("method", ""), config)


def load_trunk(run_dir: RunDir, config: dict | None = None):
    """A run's trained trunk, built from its config (``auto`` width and stem are read off the saved
    weights: they resolve by machine and could differ here)."""
    state = run_dir.load_trunk()
    config = config if config is not None else run_dir.config()
    t = config.get("trunk", {})
    width, stem = t.get("width", "auto"), t.get("stem", "auto")
    if "conv1.weight" not in state:
        raise UserError(f"{run_dir.file(RunDir.TRUNK)} is not a trunk's weights (no conv1.weight)")
    if width == "auto":
        width = state["conv1.weight"].shape[0] / 64
    if stem == "auto":
        stem = "cifar" if state["conv1.weight"].shape[-1] == 3 else "imagenet"
    trunk = build_trunk(t.get("arch", "resnet18"), width, stem, config.get("data", {}).get("image_size", 32),
                        t.get("norm", "batch"))
    try:
        trunk.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{run_dir.file(RunDir.TRUNK)} does not fit the trunk of its config: "
                        f"{str(e).splitlines()[0]}") from None
    return trunk


def load_source_trunk(src: SourceRun):
    return load_trunk(src.run_dir, src.config)
