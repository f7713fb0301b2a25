"""The bounds harness, generated from the typed configuration itself: families, not cases.

For every field of every config block (``RunConfig`` and its blocks, ``eval.data`` included) and
of every registered method's ``Settings``, the cases are read off the field's type: a value just
below its lower bound and just above its upper one (ints: the bound -+ 1; floats: a small step
past an inclusive bound, the bound itself when it is exclusive), a value outside a ``Literal``, a
list too short or too long, and a value of the wrong type. Each runs in-process through
``sslray train`` and must end in one line ``sslray: error: ...`` naming the key, exit 2, and
write nothing. A numeric field (or list or dict item) with no upper or lower bound must say why
none is needed (:func:`sslray.config.unbounded`); a new field without either fails
:func:`test_every_number_is_bounded_or_says_why_not`.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sslray.cli import main
from sslray.config import RunConfig
from sslray.eval.protocols import discover as protocols
from sslray.methods import discover

#: fields the harness leaves out, and why
SKIPPED = {"run.method": "named by --method, not --set (an unknown method is a row of test_bad_input.py)",
           "run.settings": "the method's own keys: generated below from each method's Settings"}
#: the method whose run carries the block fields' cases (its settings are all defaults)
CARRIER = "rotation"


@dataclass
class Spec:
    """What the harness knows of a field's type: its kind and its bounds."""

    kind: str  # int, float, bool, literal, str, list, dict, model, any
    bounds: dict[str, float] = field(default_factory=dict)  # gt, ge, lt, le
    extra: dict = field(default_factory=dict)  # json_schema_extra: unbounded_upper, unbounded_lower, checked
    values: tuple = ()  # a Literal's values
    item: Spec | None = None  # a list's items, a dict's values
    min_length: int | None = None
    max_length: int | None = None
    model: type[BaseModel] | None = None


def _constraints(metadata) -> tuple[dict, dict, dict]:
    bounds, lengths, extra = {}, {}, {}
    for m in metadata:
        if isinstance(m, FieldInfo):
            b, n, e = _constraints(m.metadata)
            bounds, lengths, extra = {**bounds, **b}, {**lengths, **n}, {**extra, **e, **(m.json_schema_extra or {})}
            continue
        for name in ("gt", "ge", "lt", "le"):
            if getattr(m, name, None) is not None:
                bounds[name] = getattr(m, name)
        for name in ("min_length", "max_length"):
            if getattr(m, name, None) is not None:
                lengths[name] = getattr(m, name)
    return bounds, lengths, extra


def spec_of(tp, metadata=(), extra: dict | None = None) -> Spec:
    """The :class:`Spec` of annotation ``tp`` with the field's own ``metadata`` and ``extra``."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        return spec_of(base, [*meta, *metadata], extra)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        numeric = [a for a in args if get_origin(a) is not Literal]  # float | Literal["auto"]: the float
        return spec_of(numeric[0] if len(numeric) == 1 else args[0], metadata, extra)
    bounds, lengths, more = _constraints(metadata)
    extra = {**(extra or {}), **more}
    bounds = {**bounds, **extra.get("checked", {})}
    if origin is Literal:
        return Spec("literal", values=get_args(tp))
    if origin is list:
        return Spec("list", item=spec_of(get_args(tp)[0]), **lengths)
    if origin is dict:
        return Spec("dict", item=spec_of(get_args(tp)[1]))
    if tp is typing.Any:
        return Spec("any")
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return Spec("model", model=tp)
    kind = {bool: "bool", int: "int", float: "float", str: "str"}[tp]
    return Spec(kind, bounds, extra)


def field_spec(info: FieldInfo) -> Spec:
    return spec_of(info.annotation, info.metadata, info.json_schema_extra if isinstance(info.json_schema_extra, dict)
                   else None)


# ---- the fields: every block's (recursively) and every method's settings --------------------------

def config_fields() -> list[tuple[str, str, Spec]]:
    """``(method, key, spec)`` for every field a user can set: the run's (``run.epochs``) and its
    blocks' (``optim.lr``, ``eval.data.seed``) through :data:`CARRIER`, and each method's own
    settings (``n_mels``; ``settings.seed`` where the run has a field of that name) through that method."""
    out = []

    def walk(model: type[BaseModel], prefix: str):
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}" if prefix else f"run.{name}"
            if key in SKIPPED:
                continue
            spec = field_spec(info)
            out.append((CARRIER, key, spec))
            if spec.kind == "model":
                walk(spec.model, f"{prefix}{name}.")

    walk(RunConfig, "")
    for name, cls in sorted(protocols().items()):  # each evaluation protocol's block: eval.<protocol>.<key>
        walk(cls.Settings, f"eval.{name}.")
    run_fields = RunConfig.model_fields
    for name, cls in sorted(discover().items()):
        for key, info in cls.Settings.model_fields.items():
            out.append((name, f"settings.{key}" if key in run_fields else key, field_spec(info)))
    return out


def _number(kind: str, v: float) -> str:
    """``v`` written so that YAML reads it back as a number of ``kind``."""
    if kind == "int":
        return str(int(v))
    text = repr(float(v))
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}{e}{exponent}"


def _step(bound: float) -> float:
    return max(1e-6, abs(bound) * 1e-6)


def number_cases(spec: Spec) -> list[tuple[str, str]]:
    """``(case, value)``: just below the lower bound, just above the upper one, the wrong type."""
    b, cases = spec.bounds, []
    if "ge" in b:
        cases.append(("below", _number(spec.kind, b["ge"] - (1 if spec.kind == "int" else _step(b["ge"])))))
    elif "gt" in b:
        cases.append(("below", _number(spec.kind, b["gt"])))
    if "le" in b:
        cases.append(("above", _number(spec.kind, b["le"] + (1 if spec.kind == "int" else _step(b["le"])))))
    elif "lt" in b:
        cases.append(("above", _number(spec.kind, b["lt"])))
    return [*cases, ("wrong type", "abc")]


def _valid(spec: Spec) -> str:
    """Some value an item of ``spec`` accepts (to fill a list past its length)."""
    if spec.kind in ("int", "float"):
        low = spec.bounds.get("ge", spec.bounds.get("gt", 0))
        return _number(spec.kind, low + (1 if "gt" in spec.bounds else 0))
    return {"literal": lambda: str(spec.values[0]), "bool": lambda: "true"}.get(spec.kind, lambda: "x")()


def cases_of(spec: Spec) -> list[tuple[str, str]]:
    """``(case, value as written after --set key=)`` for one field."""
    if spec.kind in ("int", "float"):
        return number_cases(spec)
    if spec.kind == "bool":
        return [("wrong type", "abc")]
    if spec.kind == "literal":
        return [("not one of its values", "nope"), ("wrong type", "3")]
    if spec.kind == "str":
        return [("wrong type", "[1]")]
    if spec.kind == "model":
        return [("wrong type", "3")]
    if spec.kind == "dict":
        out = [("wrong type", "3")]
        if spec.item.kind in ("int", "float"):
            out += [(f"value {case}", f"{{rotation: {v}}}") for case, v in number_cases(spec.item)]
        return out
    if spec.kind == "list":
        out = [("wrong type", "abc")]
        if spec.min_length:
            out.append(("too short", "[" + ", ".join([_valid(spec.item)] * (spec.min_length - 1)) + "]"))
        if spec.max_length is not None:
            out.append(("too long", "[" + ", ".join([_valid(spec.item)] * (spec.max_length + 1)) + "]"))
        item = {"int": number_cases, "float": number_cases}.get(spec.item.kind, cases_of)(spec.item)
        return out + [(f"item {case}", f"[{v}]") for case, v in item]
    raise AssertionError(f"no cases for a {spec.kind} field")


FIELDS = config_fields()
CASES = [(m, key, case, value) for m, key, spec in FIELDS if spec.kind != "any" for case, value in cases_of(spec)]


def test_the_harness_size():
    """fields x cases: every field of every block and every method's settings, each with its cases."""
    fields = {(m, k) for m, k, _ in FIELDS}
    blocks = {k for m, k in fields if m == CARRIER and not k.startswith("run.") or k.startswith("run.")}
    methods = len(fields) - len(blocks)
    print(f"\nbounds harness: {len(fields)} fields ({len(blocks)} of the run and its blocks, {methods} of "
          f"{len(discover())} methods' settings) x their cases = {len(CASES)} cases")
    assert {"eval.health_size", "data.seed", "eval.layers", "run.epochs", "eval.data.seed", "optim.lr",
            "eval.knn.k", "eval.linear.lrs"} <= blocks
    assert {("avc", "n_mels"), ("tracking", "gap"), ("multitask", "settings.seed"), ("rotation", "rotations")} <= fields
    assert len(CASES) > 2 * len(fields)  # numbers carry three cases each, the rest one or two


def missing_bounds(fields) -> list[str]:
    """The numeric fields, list items and dict values of ``fields`` with a side neither bounded nor
    declared :func:`~sslray.config.unbounded`."""
    missing = []
    for m, key, spec in fields:
        for where, s in ((key, spec), (f"{key}[item]", spec.item)):
            if s is None or s.kind not in ("int", "float"):
                continue
            if not {"ge", "gt"} & set(s.bounds) and not s.extra.get("unbounded_lower"):
                missing.append(f"{m}: {where} has no lower bound")
            if not {"le", "lt"} & set(s.bounds) and not s.extra.get("unbounded_upper"):
                missing.append(f"{m}: {where} has no upper bound and does not say why it needs none")
    return missing


def test_every_number_is_bounded_or_says_why_not():
    assert missing_bounds(FIELDS) == []


def test_a_number_without_a_bound_or_a_reason_is_caught():
    from pydantic import Field

    from sslray.config import Strict, unbounded

    class Loose(Strict):
        steps: int = 3
        rate: float = Field(0.1, gt=0)
        shots: list[int] = []
        said: int = Field(1, ge=1, json_schema_extra=unbounded("more than there are takes them all"))

    fields = [("m", k, field_spec(info)) for k, info in Loose.model_fields.items()]
    assert missing_bounds(fields) == ["m: steps has no lower bound",
                                      "m: steps has no upper bound and does not say why it needs none",
                                      "m: rate has no upper bound and does not say why it needs none",
                                      "m: shots[item] has no lower bound",
                                      "m: shots[item] has no upper bound and does not say why it needs none"]


def test_the_defaults_validate_and_stay_the_papers():
    from sslray.train.build import build_config

    for name, cls in discover().items():  # every method's defaults pass its own checks, on data it can use
        build_config(name, {"data.name": "synthetic_video"} if cls.needs else {})
    cfg = build_config("rotation")
    assert (cfg.epochs, cfg.seed, cfg.optim.lr, cfg.optim.batch_size, cfg.eval.health_size, cfg.eval.knn["k"],
            cfg.eval.feature_dim, cfg.data.frames) == (10, 0, 0.1, 128, 512, 20, 9216, 16)
    s = {name: cls.Settings() for name, cls in discover().items()}
    assert (s["avc"].n_mels, s["tracking"].gap, s["tracking"].hard_negatives, s["jigsaw"].permutations,
            s["simclr"].temperature, s["colorization"].neighbours) == (40, 8, 4, 1000, 0.5, 5)


def _written(root: Path, cache: Path) -> set[str]:
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ("runs" in p.parts
             or p.name == "mlflow.db" or "mlartifacts" in p.parts)}
    return found | {f"cache/{p.name}" for p in cache.glob("*") if p.is_file()}


@pytest.fixture
def refuse_to_run(monkeypatch):
    """A case the configuration accepted stops here, before any data, store or Ray (it is a bug)."""
    import sslray.train.run

    def accepted(*_, **__):
        raise AssertionError("the configuration accepted it")

    monkeypatch.setattr(sslray.train.run, "preflight", accepted)


@pytest.mark.parametrize("method, key, case, value", CASES, ids=[f"{m}:{k}={v} ({c})" for m, k, c, v in CASES])
def test_a_value_outside_its_bounds_is_one_line_exit_2(method, key, case, value, capsys, tmp_path, refuse_to_run):
    cache = Path(os.environ["SSLRAY_CACHE"])
    before = _written(tmp_path, cache)
    assert main(["train", "--method", method, "--set", f"{key}={value}", "--quiet"]) == 2, capsys.readouterr().err
    err = capsys.readouterr().err.strip()
    named = key.removeprefix("settings.").removeprefix("run.")
    assert err.count("\n") == 0 and err.startswith("sslray: error: ") and named in err, err
    assert "Traceback" not in err
    assert _written(tmp_path, cache) == before
