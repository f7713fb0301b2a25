"""The evaluation protocols: every module in this package registers its protocol by name.

Adding a protocol is adding one module here that defines a :class:`Protocol` subclass (its
``name``, its ``Settings``, its ``run``) decorated with :func:`register`; nothing else changes. Its
settings are ``eval.<name>.<key>``, it runs when ``eval.protocols`` names it, and its results
become MLflow keys, tables and figures through :mod:`sslray.eval.results`. Modules whose name
starts with ``_`` are helpers.
"""

from __future__ import annotations

from pydantic import ValidationError

from ...config import EvalConfig, validation_message
from ...errors import UserError
from ...registry import Registry
from .base import NoSettings, Protocol, Result, Scan, timed

_REGISTRY = Registry("protocol", __name__, __path__, helpers={"base"})
PROTOCOLS: dict[str, type[Protocol]] = _REGISTRY.parts
register = _REGISTRY.register
#: what runs when ``eval.protocols`` is not given
DEFAULT = ("linear", "knn")


def discover() -> dict[str, type[Protocol]]:
    return _REGISTRY.discover()


def get_protocol(name: str) -> type[Protocol]:
    discover()
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r} in eval.protocols; known: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def asked(cfg: EvalConfig) -> list[str]:
    """The protocols an evaluation config runs, in the order it names them."""
    return list(DEFAULT if cfg.protocols is None else cfg.protocols)


def settings_of(cfg: EvalConfig, name: str):
    """Protocol ``name``'s typed settings from an evaluation config (its block, defaults filled)."""
    return get_protocol(name).Settings(**cfg.block(name))


def build(cfg: EvalConfig, name: str) -> Protocol:
    cls = get_protocol(name)
    return cls(cls.Settings(**cfg.block(name)))


def over_epochs(cfg: EvalConfig):
    """The evaluation config of the trunks kept during training: its cheap per-layer protocols only."""
    discover()
    return cfg.model_copy(update={"protocols": [p for p in asked(cfg) if PROTOCOLS[p].over_epochs]})


def resolve_eval(tree: dict, stored: bool = False) -> dict:
    """The ``eval`` block of a run's config tree with every protocol's settings validated and
    completed (the names of ``eval.protocols`` checked, each registered protocol's block filled
    with its defaults), so that a run's config records the whole protocol.

    ``stored``: the tree was written by an earlier sslray (a run folder, a checkpoint), whose flat
    keys (``knn_k``) are read under their new names; typed by a user, a flat key is refused with one
    line naming its new key."""
    discover()
    tree = dict(tree or {})
    renamed = {old: (cls.name, new) for cls in PROTOCOLS.values() for old, new in cls.renamed.items()}
    for key in [k for k in tree if k in renamed and not isinstance(tree[k], dict)]:
        name, new = renamed[key]
        if not stored:
            raise UserError(f"eval.{key} is now eval.{name}.{new}" if new else
                            f"eval.{key} is now a block of settings: {PROTOCOLS[name].hint}")
        value = tree.pop(key)
        if new:
            tree.setdefault(name, {})
            tree[name] = {**tree[name], new: value} if isinstance(tree[name], dict) else tree[name]
        elif value:  # a protocol asked by a value of its own (eval.invariance=[rotation] -> the protocol)
            tree.setdefault(name, {})
            tree[name] = {**PROTOCOLS[name].from_flat(value), **tree[name]}
            asked_before = tree.get("protocols")
            tree["protocols"] = [*(DEFAULT if asked_before is None else asked_before), name]
    if tree.get("protocols") is None:
        tree["protocols"] = list(DEFAULT)
    names = tree.get("protocols")
    if isinstance(names, list):
        for n in names:
            if isinstance(n, str):
                get_protocol(n)
    fields = EvalConfig.model_fields
    for key in [k for k in tree if k not in fields]:
        if key not in PROTOCOLS:
            raise UserError(f"unknown key 'eval.{key}' (eval's keys: {', '.join(fields)}; protocol blocks: "
                            f"{', '.join(f'eval.{n}' for n in sorted(PROTOCOLS))})")
    for name, cls in PROTOCOLS.items():
        block = tree.get(name)
        if block is not None and not isinstance(block, dict):
            raise UserError(f"eval.{name} is a block of settings (eval.{name}.<key>=...), got {block!r}"
                            + (f"; {cls.hint}" if cls.hint else ""))
        try:
            tree[name] = cls.Settings(**(block or {})).model_dump()
        except ValidationError as e:
            where = f"eval.{name}." if e.errors()[0]["loc"] else f"eval.{name}: "
            raise UserError(where + validation_message(e)) from None
    return tree


__all__ = ["DEFAULT", "PROTOCOLS", "NoSettings", "Protocol", "Result", "Scan", "asked", "build", "discover",
           "get_protocol", "over_epochs", "register", "resolve_eval", "settings_of", "timed"]
