"""Typed run configuration, validated at the edge before any run, MLflow or Ray work starts.

A run is ``RunConfig``: one *method* (with its own typed settings, defaults from its paper), a
*trunk*, the *data*, the *optimiser* and the *evaluation* protocol. Every block, and every method's
settings, derives from :class:`Strict`. The overrides (``--set key=value``) are resolved against a
method's settings by :func:`sslray.train.build.build_config`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from . import LAYERS
from .errors import UserError

Layer = Literal["conv1", "res2", "res3", "res4", "res5"]


#: the largest image side a run may ask for (a 4096-px view is already 48 MB per image as uint8)
MAX_IMAGE_SIZE = 4096

# The bounds every numeric setting takes from its meaning. A field with no upper (or lower) bound
# says why none is needed with :func:`unbounded`; a bound a validator enforces (with its own
# message) is declared with :func:`checked`. tests/test_bounds.py reads both and tries every bound.

#: seeds feed numpy's and torch's generators: numpy's legacy seeds are 32-bit and unsigned
MAX_SEED = 2**32 - 1
#: the longest training (SimCLR, BYOL: 800-1000 epochs) ten times over
MAX_EPOCHS = 10_000
#: the largest global batches of the literature (32k-64k with LARS)
MAX_BATCH = 65_536
#: a base lr (per 256 images) above 10 diverges any trunk here
MAX_LR = 10.0
#: decoupled weight decay above 1 erases the weights faster than any gradient restores them
MAX_WEIGHT_DECAY = 1.0
#: a softmax temperature above 10 makes cosines (in [-1, 1]) indistinguishable
MAX_TEMPERATURE = 10.0
#: widths of fully connected layers (a 16,384 x 16,384 layer is 1 GiB of weights)
MAX_DIM = 16_384
#: channels of a convolution (a 3x3 conv of 4,096 in and out channels is 0.6 GB)
MAX_CHANNELS = 4_096
#: per-layer pooled feature size of a probe (50,000 images x 65,536 floats is 13 GB)
MAX_FEATURE_DIM = 65_536
#: frames per synthetic clip
MAX_FRAMES = 64
#: kNN neighbours (50,000 test images x 1,000 neighbours of scores and indices is 0.6 GB)
MAX_KNN = 1_000
#: images of the health subset: its N x N distances are held (4,096^2 floats: 64 MB)
MAX_HEALTH = 4_096
#: the largest trunk channel multiplier
MAX_WIDTH = 4.0
#: CPUs, GPUs and workers a run may ask for (more than any node or cluster here)
MAX_CPUS = 1_024
MAX_GPUS = 16
MAX_WORKERS = 1_024


def unbounded(why: str, side: str = "upper") -> dict:
    """``json_schema_extra`` of a numeric field with no ``side`` bound: why none is needed."""
    return {f"unbounded_{side}": why}


def checked(**bounds: float) -> dict:
    """``json_schema_extra`` of a field whose bounds (``ge``, ``gt``, ``le``, ``lt``) a validator
    enforces with its own message."""
    return {"checked": bounds}


#: a seed of numpy's and torch's generators
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
#: a subset of a split, taken whole when it holds fewer images
WHOLE = "a subset of the split: above the split's size the split is taken whole"


class Strict(BaseModel):
    """The one base of every typed config block, method settings and study file: unknown keys are
    errors, values are checked on assignment too, and no float may be infinite or NaN."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False)


class DataConfig(Strict):
    name: str = Field("synthetic", description="the data source: a module registered in sslray/data/sources/ "
                                               "(`sslray data sources` lists them, what each is and reads); by "
                                               "default the embedded shapes")
    root: str | None = Field(None, description="data folder (cifar10, imagefolder; local, NFS or s3://...), "
                                                "manifest file (CSV/Parquet of path,label[,split]) or the folder of "
                                                "Parquet shards `sslray data prepare` wrote (parquet)")
    source: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: decode once, hold the split in every process; stream: Ray Data decodes and "
                            "cuts views from the original images while training; auto: stream when the decoded "
                            "training split would exceed data.memory_gb (synthetic and cifar10: memory)")
    decode: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="stream: where training images are decoded. cpu: Ray Data's CPU tasks decode and cut "
                            "the views; gpu: they only read the files, the training GPU decodes (nvJPEG) and cuts; "
                            "auto: gpu on a GPU run whose pipeline has fewer than 6 CPUs (data.cpus_per_worker), "
                            "else cpu")
    memory_gb: float = Field(4.0, gt=0, json_schema_extra=unbounded(
        "a threshold only: whatever it says, a split held in memory is checked against the machine's memory"),
        description="auto: largest decoded training split held in memory (GiB)")
    cpus_per_worker: float = Field(1.0, gt=0, le=MAX_CPUS, description="stream: CPUs of Ray Data decode tasks per "
                                                                       "training process")
    max_corrupt: float = Field(0.001, ge=0, le=1, description="stream: fraction of unreadable training images "
                                                              "tolerated (replaced, counted, logged) before the run stops")
    limit: PositiveInt | None = Field(None, json_schema_extra=unbounded(WHOLE),
                                      description="use the first N training images (class-balanced)")
    test_limit: PositiveInt | None = Field(None, json_schema_extra=unbounded(WHOLE),
                                           description="use the first N test images (class-balanced)")
    image_size: PositiveInt = Field(32, json_schema_extra=checked(ge=16, le=MAX_IMAGE_SIZE),
                                    description="images are resized to this square size")
    download: bool = Field(False, description="cifar10 only: download if missing")
    seed: Seed = Field(0, description="synthetic, synthetic_video: generator seed")
    frames: int = Field(16, ge=1, le=MAX_FRAMES, description="synthetic_video: frames per clip (8 per second, 32 px "
                                                             "by default; 5,000 training and 1,000 test clips unless "
                                                             "limited)")
    labels: bool = Field(True, description="false: an unlabelled collection (imagefolder: images anywhere under the "
                                           "root, sub-folders carry no meaning; every fifth image is held out as "
                                           "its test split); evaluate it through eval.data, a labelled one")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from .data.sources import names  # the registry: read when a config is built, not when this is imported

        known = names()
        if v not in known:
            raise ValueError(f"must be a registered data source: {', '.join(known)}")
        return v

    @field_validator("root")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        """A local root made absolute where the run is configured: Ray workers run in other folders.
        A root whose ``~user`` names no user, or that is too long for the file system, is refused."""
        if not v or "://" in v:
            return v
        if "\x00" in v:
            raise ValueError("a path cannot contain a NUL character")
        try:
            path = Path(v).expanduser()
            return str(path.resolve()) if path.exists() else v
        except RuntimeError:  # "~nosuchuser/x": no such user's home
            raise ValueError(f"cannot expand {v.split('/', 1)[0]!r}: no such user") from None
        except OSError as e:  # ENAMETOOLONG and friends
            raise ValueError(f"not a usable path ({e.strerror or type(e).__name__}; {len(v)} characters)") from None

    @field_validator("image_size")
    @classmethod
    def _min_size(cls, v: int) -> int:
        if v < 16:
            raise ValueError("must be at least 16 pixels")
        if v > MAX_IMAGE_SIZE:
            raise ValueError(f"must be at most {MAX_IMAGE_SIZE} pixels")
        return v


class TrunkConfig(Strict):
    arch: Literal["resnet18", "resnet50"] = "resnet18"
    width: float | Literal["auto"] = Field(
        "auto", json_schema_extra=checked(gt=0, le=MAX_WIDTH),
        description="channel multiplier; auto = 1.0 on a GPU, 0.25 on a CPU"
    )
    stem: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="auto = 3x3/stride-1 stem below 64 px, 7x7/stride-2 + max-pool above"
    )
    norm: Literal["batch", "group", "shuffle_batch"] = Field(
        "batch", description="batch: batch norm; group: group norm (Wu & He 2018, 32 groups or the largest "
                             "divisor of a layer's channels below that), no image's output depends on another's; "
                             "shuffle_batch: MoCo's shuffling BN (He et al. 2020, sec. 3.3), for the contrastive "
                             "methods: the batch is shuffled across workers and each worker's BN sees a random "
                             "subset; on one worker, a random permutation in norm_splits sub-batches")
    norm_splits: int = Field(4, ge=2, le=MAX_BATCH // 2, description="shuffle_batch on one worker: sub-batches whose "
                                                                     "BN statistics are separate (MoCo's one-GPU code "
                                                                     "emulates 8 GPUs; 4 for batches of 128)")

    @field_validator("width")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and not (0 < v <= MAX_WIDTH):
            raise ValueError(f"must be in (0, {MAX_WIDTH:g}] or 'auto'")
        return v


class OptimConfig(Strict):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=MAX_LR, description="base lr for a global batch of 256 (linear scaling rule)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=MAX_WEIGHT_DECAY)
    batch_size: PositiveInt = Field(128, le=MAX_BATCH, description="global batch size, whatever the worker count")
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)

    def effective_lr(self) -> float:
        """Linear scaling (Goyal et al. 2017): lr grows with the global batch, not with workers."""
        return self.lr * self.batch_size / 256


class EvalConfig(Strict):
    """What the evaluation runs and on what. Each protocol of ``protocols`` is a registered module of
    :mod:`sslray.eval.protocols` with its own settings block, ``eval.<protocol>.<key>`` (validated
    by the protocol's ``Settings`` where a run is configured, :func:`sslray.train.build.build_config`)."""

    # a protocol's settings block is an extra key holding a mapping; anything else is refused below
    model_config = ConfigDict(extra="allow")

    enabled: bool = True
    protocols: list[str] | None = Field(
        None, description="the evaluation protocols to run, each a module of sslray/eval/protocols with its settings "
                          "block eval.<protocol>.<key>: linear (a probe per layer on frozen features) and knn (a "
                          "weighted kNN vote per layer) by default; finetune (the whole trunk and a new head), lowshot "
                          "(probes on class-balanced label subsets), retrieval (nearest training images per layer) "
                          "and invariance (to eval.invariance.transforms, per layer)")
    data: DataConfig | None = Field(None, description="the labelled collection to evaluate on (transfer), e.g. "
                                                     "eval.data.name=synthetic; default: the pretraining data")
    at_epochs: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=list, description="also evaluate the trunk as it was after these epochs (the per-layer "
                                          "probes, at_epoch/... with the epoch as step) and draw transfer against "
                                          "pretext epochs: how long to pretrain")
    layers: list[Layer] = Field(default_factory=lambda: list(LAYERS), min_length=1,
                                description="the trunk stages probed (at least one)")
    feature_dim: PositiveInt = Field(
        9216, le=MAX_FEATURE_DIM,
        description="per-layer feature size after adaptive average pooling (Goyal et al. 2019)"
    )
    monitor: bool = Field(False, description="per-epoch kNN top-1 of pooled res5 on a small subset "
                                             "(monitor/knn_top1): a proxy comparable across methods")
    monitor_size: PositiveInt = Field(1000, json_schema_extra=unbounded(WHOLE),
                                      description="monitor: training images (test: half as many)")
    train_limit: PositiveInt | None = Field(None, json_schema_extra=unbounded(WHOLE),
                                            description="probe training images (default: all)")
    test_limit: PositiveInt | None = Field(None, json_schema_extra=unbounded(WHOLE),
                                           description="probe test images (default: all)")
    probes: Literal["auto", "cached", "streamed"] = Field(
        "auto", description="cached: features of every image extracted once, then each layer's probe; streamed: "
                            "all layers' probes trained together on a stream through the frozen trunk, features "
                            "never held (VISSL's multi-head protocol); auto: streamed for a streamed collection")
    subset: PositiveInt = Field(10000, json_schema_extra=unbounded(WHOLE),
                                description="streamed: images (class-balanced) of each split held in memory for kNN "
                                            "and invariance")
    health: bool = Field(True, description="per-epoch representation health of pooled res5 on a fixed subset: "
                                           "health/std, health/rank (RankMe), health/alignment, health/uniformity")
    health_size: int = Field(512, ge=2, le=MAX_HEALTH, description="health: training images (and one augmented view "
                                                                   "of each); uniformity needs a pair, and their N x "
                                                                   "N distances are held")
    collapse_rank: float = Field(1.5, ge=0, le=MAX_HEALTH, description="collapsed when health/rank falls below this "
                                                                       "(RankMe is at most the health_size images)")
    collapse_std: float = Field(0.1, ge=0, le=1, description="collapsed when train/embed_std x sqrt(embedding dim) "
                                                             "falls below this (1 = spread over the sphere, 0 = one "
                                                             "point)")
    collapse_scale: float = Field(0.1, ge=0, le=1, description="collapsed when train/embed_scale (a method whose "
                                                               "loss asks its embedding for a spread, VICReg: the "
                                                               "raw per-dimension std over that spread) falls below "
                                                               "this")
    stop_on_collapse: bool = Field(False, description="end a collapsed run (exit 1) instead of only saying so")
    seed: Seed = Field(0, description="seed of the evaluation (probe heads' initialisation and batch order, kNN and "
                                      "invariance subsets), kept apart from run.seed: runs with different run.seed "
                                      "differ in their pretraining alone")

    @model_validator(mode="after")
    def _blocks_only(self):
        """An extra key is a protocol's settings block (a mapping); a loose value is no key of ours."""
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"unknown key {key!r}")
        return self

    def block(self, name: str) -> dict:
        """The settings block of protocol ``name`` as given (empty: the protocol's defaults)."""
        return dict((self.model_extra or {}).get(name) or {})


class DistConfig(Strict):
    """Where and on how many workers the shared loop runs (Ray Train ``TorchTrainer`` + DDP)."""

    workers: int = Field(1, ge=1, le=MAX_WORKERS, description="data-parallel training workers")
    gpus_per_worker: float = Field(0, ge=0, le=MAX_GPUS, description="GPUs per worker (0 = CPU, gloo)")
    cpus_per_worker: float = Field(1, gt=0, le=MAX_CPUS, description="CPUs per worker (also its torch threads)")
    launcher: Literal["auto", "local", "ray"] = Field(
        "auto", description="auto = in-process for 1 CPU/GPU worker without --address, else Ray Train")
    address: str | None = Field(None, description="Ray cluster address (auto, host:port, ray://...)")
    storage_path: str | None = Field(None, description="Ray Train checkpoints (default <output_dir>/ray)")
    max_failures: int = Field(0, ge=0, le=100, description="worker-group restarts from the last checkpoint")
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"

    def uses_ray(self) -> bool:
        return self.launcher == "ray" or (self.launcher == "auto" and (self.workers > 1 or bool(self.address)))


class TrainConfig(Strict):
    """How the shared loop runs the training step."""

    compile: bool = Field(False, description="compile the method's training step with torch.compile (the first "
                                             "step compiles, time/compile_s; a method that cannot compile trains "
                                             "eagerly after one line)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode (default: no CUDA graphs, no autotuning; the others trade "
                               "compile time for speed)")
    clip_grad: float | None = Field(None, gt=0, json_schema_extra=unbounded(
        "a norm larger than any gradient only never clips"), description="clip the gradient's global norm to this "
        "before each optimiser step (DINO's recipe: 3.0); None: no clipping")


class DebugConfig(Strict):
    """Instrumentation for tests and debugging; off by default."""

    compile_backend: Literal["inductor", "aot_eager", "eager"] | None = Field(
        None, description="train.compile's backend (default inductor); tests use aot_eager: the same graphs "
                          "without code generation")

    record_steps: bool = Field(False, description="each rank writes its batch indices, loss and a weight "
                                                  "checksum per step to <run>/debug/rank<r>.jsonl")
    kill_at: list[Annotated[int, Field(ge=0, json_schema_extra=unbounded(
        "a point the run never reaches never fires"))]] | None = Field(
        None, min_length=2, max_length=2, description="[epoch, step]: rank 0 SIGKILLs itself there once")
    nan_at: list[Annotated[int, Field(ge=0, json_schema_extra=unbounded(
        "a point the run never reaches never fires"))]] | None = Field(
        None, min_length=2, max_length=2, description="[epoch, step]: the loss is NaN there (a diverging run)")


class RunConfig(Strict):
    method: str
    settings: dict[str, Any] = Field(default_factory=dict, description="the method's own settings")
    epochs: int = Field(10, ge=0, le=MAX_EPOCHS)
    seed: Seed = 0
    data: DataConfig = Field(default_factory=DataConfig)
    trunk: TrunkConfig = Field(default_factory=TrunkConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    dist: DistConfig = Field(default_factory=DistConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    debug: DebugConfig = Field(default_factory=DebugConfig)
    experiment: str = "sslray"
    run_name: str | None = None
    output_dir: str = "runs"
    threads: PositiveInt | None = Field(None, le=MAX_CPUS, description="torch CPU threads (default: torch's)")

    @model_validator(mode="after")
    def _labelled_evaluation(self):
        if self.eval.data is not None and not self.eval.data.labels:
            raise ValueError("eval.data must be a labelled collection (eval.data.labels=false has nothing to probe)")
        if not self.data.labels and self.eval.enabled and self.eval.data is None:
            raise ValueError("data.labels=false: an unlabelled collection has no labels to evaluate on; name a "
                             "labelled one with eval.data (e.g. --set eval.data.name=synthetic) or eval.enabled=false")
        return self

    @model_validator(mode="after")
    def _at_epochs_exist(self):
        late = [e for e in self.eval.at_epochs if e > self.epochs]
        if late and self.epochs > 0:  # an untrained run (the random floor) keeps nothing and is evaluated once
            raise ValueError(f"eval.at_epochs names epoch(s) {late} of a {self.epochs}-epoch run: no trunk is saved there")
        return self


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` with YAML typing of the values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``"a.b"``, creating blocks on the way; a key that runs
    through a value that is not a block is a UserError."""
    node = tree
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"unknown key {dotted!r}")
    node[leaf] = value


def validation_message(e: ValidationError) -> str:
    """The first pydantic error as ``key: message``, one line."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        if not err["loc"]:  # a check across keys says itself what is wrong
            return msg
    value = err.get("input")
    got = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:60]}... ({len(repr(value))} characters)"
    shown = f" (got {got})" if err["type"] != "extra_forbidden" and not isinstance(value, dict) else ""
    return f"{loc}: {msg}{shown}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": v}``; lists become comma-joined strings (MLflow params)."""
    if hasattr(tree, "model_dump"):
        tree = tree.model_dump()
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out


# what does not make two runs different configurations: their seeds, names, folders, threads,
# debugging and where they ran
IGNORED = ("seed", "eval.seed", "run_name", "output_dir", "experiment", "threads", "debug.", "train.", "dist.address",
           "dist.storage", "dist.max_failures")


def flatten_tree(tree: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a.b": v}``, lists kept as lists."""
    out = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict):
            out.update(flatten_tree(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def setting_key(cfg: dict, also_ignored: tuple[str, ...] = ()) -> str:
    """The settings of a run's config (``RunConfig.model_dump()``) that make it a configuration:
    everything but its seeds, names and where it ran (and keys starting with ``also_ignored``).
    Runs with equal keys differ only by seed."""
    flat = {k: v for k, v in flatten_tree(cfg).items() if not k.startswith((*IGNORED, *also_ignored))}
    return json.dumps(flat, sort_keys=True, default=str)


def group_id(cfg: dict) -> str:
    """A short name for :func:`setting_key`: the MLflow tag ``sslray.group`` of runs that differ
    only by seed."""
    return hashlib.sha1(setting_key(cfg).encode()).hexdigest()[:12]
