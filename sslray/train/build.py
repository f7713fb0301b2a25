"""Where a run is built, once: its validated config, its data, its trunk and its method (with the
method's one-off setup work, e.g. ClusterFit's source features and k-means).

The driver builds a run and owns it; a Ray Train worker rebuilds only the parts it cannot receive
(its data) and takes the method's state as the driver left it (:func:`build_run` with
``init_state``), so no setup work runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError

from ..config import RunConfig, set_dotted, validation_message
from ..data import Source, lacking, offered, open_sources, set_decode
from ..errors import UserError
from ..eval.protocols import resolve_eval
from ..methods import DataInfo, Method, get_method
from ..models import build_trunk


def build_config(method: str, overrides: dict[str, Any] | None = None, base: dict | None = None) -> RunConfig:
    """Merge ``base`` (a nested dict) with ``overrides`` and validate everything, the method's own
    settings by the method's ``Settings`` model, before anything runs.

    Override keys: ``settings.<key>`` (or ``method.<key>``) is a method setting; ``run.<key>`` a
    field of the run (``run.seed``); a dotted key a block's field (``optim.lr``). A bare key is a
    method setting or a field of the run, whichever exists; a bare key that is both (``seed`` for
    ``multitask``) is refused, naming both readings.
    """
    cls = get_method(method)
    tree: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    if isinstance(tree.get("eval"), dict):  # a stored config: an older sslray's flat keys read as they were meant
        tree["eval"] = resolve_eval(tree["eval"], stored=True)
    tree["method"] = method
    settings = dict(tree.get("settings") or {})
    run_fields = RunConfig.model_fields
    for key, value in (overrides or {}).items():
        head, _, rest = key.partition(".")
        if key in ("method", "run.method"):  # the settings were read for ``method``: a new name would
            raise UserError(f"{key}: the method is chosen by name, not set (sslray train --method NAME; "
                            f"a study's methods: [...]); got {value!r}")
        if head in ("method", "settings") and rest:
            settings[rest] = value
        elif head == "run" and rest:
            if rest.split(".", 1)[0] not in run_fields:
                raise UserError(f"unknown key {key!r} (the run's keys: {', '.join(run_fields)})")
            set_dotted(tree, rest, value)
        elif not rest and key in cls.Settings.model_fields:
            if key in run_fields:
                raise UserError(f"ambiguous key {key!r}: method {method!r} has a setting {key!r} "
                                f"(write settings.{key}=...) and the run has a field {key!r} (write run.{key}=...)")
            settings[key] = value
        elif head in run_fields:
            set_dotted(tree, key, value)
        else:
            raise UserError(f"unknown key {key!r} (method {method!r} settings: "
                            f"{', '.join(cls.Settings.model_fields) or 'none'})")
    if not isinstance(tree.get("eval", {}), dict):
        raise UserError(f"eval is a block of settings (eval.<key>=...), got {tree['eval']!r}")
    tree["eval"] = resolve_eval(tree.get("eval"))  # every protocol's settings, checked and completed
    try:
        tree["settings"] = cls.Settings(**settings).model_dump()
        cfg = RunConfig(**tree)
    except ValidationError as e:
        raise UserError(validation_message(e)) from None
    check_data_needs(cfg, cls)
    cls.check_config(cls.Settings(**cfg.settings), config_info(cfg))
    check_norm(cfg, cls)
    return cfg


def config_info(cfg: RunConfig) -> DataInfo:
    """What the config alone tells a method of its data (classes and image count not yet known)."""
    o = offered(cfg.data)
    return DataInfo(0, 0, cfg.data.image_size, cfg.optim.batch_size, o.offers, o.frames, o.sample_rate, o.fps)


def source_info(cfg: RunConfig, train: Source) -> DataInfo:
    return DataInfo(train.num_classes, len(train), train.image_size, cfg.optim.batch_size, train.offers,
                    train.frames, train.sample_rate, train.fps, cfg.epochs)


def check_data_needs(cfg: RunConfig, cls: type[Method]) -> None:
    """A method that needs clips, sound or tracks refused on data that has none (one line)."""
    missing = [k for k in cls.needs if k not in offered(cfg.data).offers]
    if missing:
        what = {"clip": "clips", "audio": "sound", "track": "object tracks", "frame": "clips"}
        lacks = " and ".join(dict.fromkeys(what.get(k, k) for k in missing))
        raise UserError(f"{cfg.method} needs {lacks}: {lacking(cfg.data, missing)}")


@dataclass
class Built:
    """A run, built: its config, data sources and method (the method holds the trunk)."""

    cfg: RunConfig
    train: Source
    test: Source
    method: Method
    eval_train: Source | None = None  # eval.data's sources, when the evaluation is on another collection
    eval_test: Source | None = None

    def eval_sources(self) -> tuple[Source, Source]:
        """What the evaluation probes: eval.data's sources, or the pretraining data's."""
        return (self.eval_train, self.eval_test) if self.eval_train is not None else (self.train, self.test)

    def shipped_sources(self) -> tuple[Source, Source] | None:
        """What a worker takes from the driver instead of opening the data again: a streamed
        collection's catalogues (listing a million files once is enough); None for memory sources,
        which every worker loads from the data cache."""
        return (self.train, self.test) if not self.train.held else None

    def method_state(self) -> dict:
        """The method's state (weights, buffers, setup results) on the CPU, for the workers."""
        return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in self.method.state_dict().items()}


def check_norm(cfg: RunConfig, cls: type[Method]) -> None:
    """``trunk.norm=shuffle_batch`` only where it applies: a contrastive method (the others never
    shuffle), and on one worker a batch that splits into sub-batches of at least 2 images."""
    t = cfg.trunk
    if t.norm != "shuffle_batch":
        return
    from ..methods import discover

    if not cls.contrastive:
        honour = ", ".join(sorted(n for n, c in discover().items() if c.contrastive))
        raise UserError(f"trunk.norm=shuffle_batch applies to the contrastive methods ({honour}), not to "
                        f"{cfg.method}: use trunk.norm=batch or group")
    if cfg.dist.workers == 1 and cfg.optim.batch_size < 2 * t.norm_splits:
        raise UserError(f"trunk.norm=shuffle_batch on one worker cuts the batch into trunk.norm_splits="
                        f"{t.norm_splits} sub-batches of at least 2 images: optim.batch_size={cfg.optim.batch_size} "
                        f"is too small")


def check_method(cfg: RunConfig, train: Source) -> None:
    """Everything the method asks of the run and its (listed, not yet decoded) data."""
    cls = get_method(cfg.method)
    settings, info = cls.Settings(**cfg.settings), source_info(cfg, train)
    check_data_needs(cfg, cls)
    cls.check_config(settings, info)
    cls.check(settings, info)
    check_norm(cfg, cls)


def build_method(cfg: RunConfig, train: Source, init_state: dict | None = None, checked: bool = False) -> Method:
    """The method of ``cfg`` around a fresh trunk, seeded by ``cfg.seed``; its setup runs on
    ``train`` unless ``init_state`` (a state the setup already produced) is given."""
    cls = get_method(cfg.method)
    settings = cls.Settings(**cfg.settings)
    info = source_info(cfg, train)
    if not checked:  # build_run checks before it decodes; a bench building a method alone checks here
        check_method(cfg, train)
    torch.manual_seed(cfg.seed)
    trunk = build_trunk(cfg.trunk.arch, cfg.trunk.width, cfg.trunk.stem, cfg.data.image_size, cfg.trunk.norm,
                        cfg.trunk.norm_splits)
    if init_state is None:
        trunk.set_input_stats(*train.channel_stats())
    method = cls(settings, trunk, info)
    if init_state is None:
        method.setup(train)
    else:
        method.load_state_dict(init_state)
    return method


def build_run(cfg: RunConfig, init_state: dict | None = None, sources: tuple[Source, Source] | None = None) -> Built:
    """Open the data (unless ``sources`` are given) and build the method; every bad input fails
    here, before any run starts."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if get_method(cfg.method).needs_labels and not cfg.data.labels:
        raise UserError(f"{cfg.method} trains on labels: data.labels=false gives it none")
    train, test = sources or open_sources(cfg.data)  # listed and checked; memory sources decode when first read
    if cfg.optim.batch_size > len(train):
        raise UserError(f"optim.batch_size={cfg.optim.batch_size} is larger than the training set ({len(train)} images)")
    eval_train = eval_test = None
    if cfg.eval.data is not None and cfg.eval.enabled:
        eval_train, eval_test = open_sources(cfg.eval.data)
    if cfg.eval.enabled:
        check_evaluable(*((eval_train, eval_test) if eval_train is not None else (train, test)),
                        "eval.data" if eval_train is not None else "data")
    if get_method(cfg.method).needs_labels:
        check_evaluable(train, test, "data")
    check_method(cfg, train)
    set_decode(cfg.data, train, gpu=cfg.dist.gpus_per_worker > 0 or torch.cuda.is_available())
    # every check is made: only now is data decoded or generated, filling the data cache; every
    # split now, so that an unreadable test image is said before training, not after it
    for source in (train, test, eval_train, eval_test):
        if source is not None:
            source.load()
    return Built(cfg, train, test, build_method(cfg, train, init_state, checked=True), eval_train, eval_test)


def check_evaluable(train: Source, test: Source, key: str) -> None:
    """Labels a probe can learn something from: two classes or more, and images in both splits. A
    one-class collection would report 100 % at every layer; an empty test split, nothing."""
    if train.num_classes < 2:
        raise UserError(f"{key}: a labelled collection needs at least two classes, this one has "
                        f"{train.num_classes} ({', '.join(map(repr, train.classes[:1]))}): every probe would "
                        f"score 100 %; add classes, or pretrain on it with data.labels=false and evaluate on "
                        f"another collection (eval.data)")
    for split in (train, test):
        if len(split) == 0:
            raise UserError(f"{key}: the {split.split} split has no images: nothing to "
                            f"{'train' if split is train else 'evaluate'} on")
