"""Studies and search spaces: typed YAML, validated (file and key named) before any Ray work.

A *search space* (``search_spaces/*.yaml``) maps config keys — the same keys ``--set`` takes: a bare
method setting (``temperature``) or a dotted key (``optim.lr``) — to a distribution::

    params:
      temperature: {loguniform: [0.03, 1.0]}
      similarity:  {choice: [cosine, l2]}
      negatives:   {logint: [16, 4096], when: {method: [npid, pirl]}}   # conditional
      optim.lr:    {grid: [0.03, 0.1, 0.3]}

Distributions: ``choice``, ``grid`` (a list), ``uniform``, ``loguniform``, ``int``, ``logint``
(``[low, high]``). ``when`` samples a parameter only if earlier parameters took the listed values.
A *study* (``ablations/*.yaml``) names its question, methods, data, search space, budget, the metric
it optimises and what it reports.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import Strict, set_dotted, validation_message
from ..errors import UserError
from ..eval.results import DEFAULT_FAMILIES, FAMILIES, linear_key

KINDS = ("choice", "grid", "uniform", "loguniform", "int", "logint")
#: the artifact of a study's parent run that holds the whole study (search space resolved)
STUDY_ARTIFACT = "study.json"
ROOT = Path(__file__).resolve().parents[2]


class Dist(Strict):
    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: list[float] | None = None
    loguniform: list[float] | None = None
    int: list[builtins.int] | None = None  # builtins: the field name shadows the type here
    logint: list[builtins.int] | None = None
    when: dict[str, list[Any]] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one distribution of {', '.join(KINDS)}")
        values = getattr(self, given[0])
        if given[0] in ("choice", "grid"):
            if not values:
                raise ValueError(f"empty {given[0]}")
        else:
            if len(values) != 2:
                raise ValueError(f"{given[0]} takes [low, high]")
            low, high = values
            if not low < high:
                raise ValueError(f"empty or inverted range [{low}, {high}]")
            if given[0].startswith("log") and low <= 0:
                raise ValueError(f"{given[0]} needs low > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def values(self) -> list:
        return getattr(self, self.kind)

    def suggest(self, trial, name: str):
        """Sample with an Optuna trial (define-by-run)."""
        v = self.values
        if self.kind in ("choice", "grid"):
            return trial.suggest_categorical(name, v)
        if self.kind in ("uniform", "loguniform"):
            return trial.suggest_float(name, v[0], v[1], log=self.kind == "loguniform")
        return trial.suggest_int(name, v[0], v[1], log=self.kind == "logint")

    def grid_points(self, n: int = 4) -> list:
        """Points of a full grid: the listed values, or ``n`` points spread over a range."""
        import numpy as np

        v = self.values
        if self.kind in ("choice", "grid"):
            return list(v)
        pts = np.geomspace(v[0], v[1], n) if self.kind.startswith("log") else np.linspace(v[0], v[1], n)
        return sorted({int(round(p)) for p in pts}) if "int" in self.kind else [float(p) for p in pts]


class SearchSpace(Strict):
    description: str = ""
    params: dict[str, Dist]

    @model_validator(mode="after")
    def _conditions_refer_backwards(self):
        seen = {"method"}
        for name, d in self.params.items():
            for key in (d.when or {}):
                if key not in seen:
                    raise ValueError(f"params.{name}.when: {key!r} is not an earlier parameter")
            seen.add(name)
        return self


class Budget(Strict):
    trials: int = Field(8, ge=1, description="configurations tried (TPE); a grid tries all of its points")
    seeds: int = Field(1, ge=1, description="training seeds per configuration (run.seed, run.seed+1, ...): its "
                                            "runs share an sslray.group tag, the searcher and ASHA see their mean")
    epochs: int = Field(3, ge=1, description="pretraining epochs per trial")
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per worker")
    data_cpus_per_trial: float = Field(0, ge=0, description="CPUs per worker kept free for a streamed data set's "
                                                            "decode pipeline (data.cpus_per_worker); 0: not streamed")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs per worker")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many as the resources allow")


class Objective(Strict):
    metric: str = Field(default_factory=lambda: linear_key("res4"), description="the MLflow key to rank trials by "
                                                                            "(default: res4's linear probe top-1)")
    mode: Literal["max", "min"] = "max"


class EarlyStopping(Strict):
    """ASHA on a per-epoch metric. The default, the kNN monitor, is comparable across methods;
    ``train/loss`` is only comparable between trials of one method."""

    metric: str = "monitor/knn_top1"
    mode: Literal["max", "min"] = "max"
    grace_epochs: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)


class Report(Strict):
    x: str | None = Field(None, description="the swept parameter to plot against")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the intervals over seeds")
    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES),
                                description=f"what the report draws: {', '.join(FAMILIES)}")

    @field_validator("families")
    @classmethod
    def _known_families(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(FAMILIES)}")
        return v


class Study(Strict):
    name: str
    question: str
    methods: list[str] = Field(min_length=1)
    search_space: str | None = Field(None, description="a file in search_spaces/ (name or path)")
    params: dict[str, Dist] | None = Field(None, description="an inline search space")
    data: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict, description="fixed --set keys for every trial")
    budget: Budget = Field(default_factory=Budget)
    objective: Objective = Field(default_factory=Objective)
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    search: Literal["tpe", "grid"] = "tpe"
    report: Report = Field(default_factory=Report)
    stop_collapsed: bool = Field(True, description="end a trial whose representation collapses (eval.collapse_rank, "
                                                   "eval.collapse_std) at that epoch, recorded as collapsed")
    baselines: bool = Field(True, description="floor and ceiling: the random and supervised trunks at the study's "
                                              "data, trunk and evaluation settings, run once and reused")
    seed: int = 0
    #: resolved search space (filled by :func:`load_study`)
    space: SearchSpace | None = None

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        # the name is an MLflow experiment, a folder (runs/sweeps/<name>) and a quoted search filter
        if not name.strip():
            raise ValueError("a study needs a name: it names its MLflow experiment and its folder")
        bad = sorted({c for c in name if c in "/\\'\"\0" or not c.isprintable()})
        if bad or name.strip() in (".", ".."):
            raise ValueError(f"{name!r} cannot name a folder and an MLflow experiment"
                             + (f" (no {' '.join(map(repr, bad))})" if bad else ""))
        return name


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def load_space(ref: str, base: Path) -> SearchSpace:
    path = Path(ref)
    candidates = [path, base / path, ROOT / "search_spaces" / path, ROOT / "search_spaces" / f"{ref}.yaml"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"search space {ref!r} not found (looked in search_spaces/)")
    try:
        return SearchSpace(**_read_yaml(found))
    except ValidationError as e:
        raise UserError(f"{found}: {validation_message(e)}") from None


def apply_overrides(tree: dict, overrides: dict[str, Any]) -> dict:
    """``--set`` on a study: dotted keys walk the YAML (``budget.trials=4``, ``data.limit=5000``),
    except under ``config``, whose keys are run settings and stay dotted (``config.trunk.width=0.25``)."""
    for key, value in overrides.items():
        if key.startswith("config."):
            tree.setdefault("config", {})[key.removeprefix("config.")] = value
        else:
            set_dotted(tree, key, value)
    return tree


def load_study(ref: str, overrides: dict[str, Any] | None = None) -> Study:
    """Read, override (``--set budget.trials=4``) and validate a study, its space and every method."""
    path = Path(ref)
    if not path.is_file() and (ROOT / "ablations" / f"{ref}.yaml").is_file():
        path = ROOT / "ablations" / f"{ref}.yaml"
    raw = _read_yaml(path)
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or {})
    try:
        study = Study(**raw)
    except ValidationError as e:
        raise UserError(f"{path}: {validation_message(e)}") from None
    if (study.search_space is None) == (study.params is None):
        raise UserError(f"{path}: give exactly one of search_space (a file) or params (inline)")
    try:
        study.space = load_space(study.search_space, path.parent) if study.search_space else SearchSpace(params=study.params)
    except ValidationError as e:
        raise UserError(f"{path}: {validation_message(e)}") from None
    if not study.space.params and len(study.methods) == 1:
        # one configuration: with its floor and ceiling it still asks a question (is it above the
        # untrained trunk, and at which layer?); without them it has nothing to compare
        if not study.baselines:
            raise UserError(f"{path}: params is empty, one method is named and baselines are off: the study has "
                            f"nothing to compare (sweep a setting, name several methods, or set baselines: true "
                            f"to compare it with the untrained and the supervised trunk)")
        if study.search != "grid":
            raise UserError(f"{path}: params is empty and one method is named: the study has one configuration, "
                            f"which search: {study.search} would try again and again; write search: grid "
                            f"(budget.seeds repeats it with other seeds)")
    _anchor_paths(study)
    validate_trials(study, path)
    return study


def _anchored(value: Any) -> Any:
    """A relative path that exists here, made absolute: trials run in folders of their own."""
    if isinstance(value, str) and value and "://" not in value and not value.startswith("latest") \
            and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _anchor_paths(study: Study) -> None:
    """Every path-valued setting of a study (``runs: runs/sweeps/x/trials``) resolved where the study
    is launched, before its trials run elsewhere."""
    study.config = {k: _anchored(v) for k, v in study.config.items()}
    for dist in study.space.params.values():
        for kind in ("choice", "grid"):
            values = getattr(dist, kind)
            if values:
                setattr(dist, kind, [_anchored(v) for v in values])


def param_name(key: str) -> str:
    """The MLflow param a swept key is logged as (method settings are ``settings.<key>``)."""
    return key if "." in key else f"settings.{key}"


def trial_overrides(study: Study, sampled: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` overrides of one trial: the study's fixed config, data, budget and samples."""
    out = {f"data.{k}": v for k, v in study.data.items()}
    out.update(study.config)
    out["run.epochs"] = study.budget.epochs
    if study.stop_collapsed:
        out.setdefault("eval.stop_on_collapse", True)
    if study.early_stopping and study.early_stopping.metric.startswith("monitor/"):
        out["eval.monitor"] = True
    out.update({k: v for k, v in sampled.items() if k != "method"})
    return out


def applies(dist: Dist, sampled: dict[str, Any]) -> bool:
    return all(sampled.get(k) in vals for k, vals in (dist.when or {}).items())


def trial_points(study: Study, method: str):
    """Points that together give every value of every parameter (ranges: their grid points, ends
    included) a trial of ``method``: the first values, then each value of each parameter in turn,
    with the parameters its ``when`` names set so that it applies."""
    params = study.space.params
    first: dict[str, Any] = {"method": method}
    for name, d in params.items():
        if applies(d, first):
            first[name] = d.values[0]
    yield first
    for name, d in params.items():
        point = dict(first)
        for key, allowed in (d.when or {}).items():
            if key != "method":
                point[key] = allowed[0]
        if not applies(d, point):
            continue  # conditioned on another method
        for value in d.grid_points():
            trial = {**point, name: value}
            yield {k: v for k, v in trial.items() if k == "method" or applies(params[k], trial)}


def validate_trials(study: Study, path: Path) -> None:
    """Build a config for every value of every parameter, per method: unknown methods, keys or values
    fail here, naming the file, the key and the value, before Ray or MLflow are touched."""
    from ..data import check_root
    from ..methods import get_method
    from ..train.build import build_config

    checked: set = set()
    for method in study.methods:
        try:
            cls = get_method(method)
        except UserError as e:
            raise UserError(f"{path}: methods: {e}") from None
        for point in trial_points(study, method):
            for name in point:
                if name != "method" and "." not in name and name not in cls.Settings.model_fields:
                    raise UserError(f"{path}: params.{name}: not a setting of method {method!r} "
                                    f"(add `when: {{method: [...]}}` if it only applies to some methods)")
            try:
                cfg = build_config(method, trial_overrides(study, point))
                for data in (cfg.data, cfg.eval.data):  # a missing root: here, not in every trial
                    if data is not None and (data.name, data.root) not in checked:
                        check_root(data)
                        checked.add((data.name, data.root))
            except UserError as e:
                raise UserError(f"{path}: {e}") from None
