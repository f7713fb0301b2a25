"""The registered methods as data: what ``sslray methods`` prints and the documentation's methods page
renders, from one source — each method's class docstring (its one-line summary), its module's
docstring (the paper, what is built, the departures) and its typed ``Settings`` (default, bounds,
description) — so the two never disagree."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from . import discover
from .base import Method

_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


@dataclass(frozen=True)
class Setting:
    key: str
    default: object
    bounds: str  # "≥ 0, ≤ 1", or "" when the field has none
    description: str


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str  # the class docstring's first line
    about: str  # the module docstring: paper, construction, departures
    module: str
    settings: tuple[Setting, ...]
    trains: bool
    needs_labels: bool
    contrastive: bool
    needs: tuple[str, ...]
    adds_evaluation: bool  # overrides Method.after_training: measures of its own after training


def _bounds(field) -> str:
    out = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(out)


def entry(cls: type[Method]) -> Entry:
    settings = tuple(Setting(key, f.default, _bounds(f), f.description or "")
                     for key, f in cls.Settings.model_fields.items())
    module = inspect.getmodule(cls)
    return Entry(cls.name, cls.summary(), inspect.cleandoc(module.__doc__ or ""), module.__name__, settings,
                 cls.trains, cls.needs_labels, cls.contrastive, tuple(cls.needs),
                 cls.after_training is not Method.after_training)


def catalogue() -> list[Entry]:
    """Every registered method, by name."""
    return [entry(cls) for _, cls in sorted(discover().items())]


def as_text(entries: list[Entry]) -> str:
    """``sslray methods``: a method per line with its summary, then its settings and their defaults."""
    lines = []
    for e in entries:
        lines.append(f"{e.name:<14}{e.summary}")
        lines += [f"{'':<16}{s.key} = {s.default!r}  {s.description}".rstrip() for s in e.settings]
    return "\n".join(lines)


def _markdown(rst: str) -> str:
    """The docstrings' reStructuredText roles and literals as Markdown."""
    text = re.sub(r":(?:func|meth|class|attr|mod|data):`~?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", rst)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _evaluation(e: Entry) -> str:
    if not e.trains:
        how = "not trained: its trunk goes through the evaluation as it is"
    else:
        how = "its trunk, frozen, through the evaluation every run has"
    line = (f"{how} (a linear probe and kNN on every named layer, plus the protocols asked in `eval.protocols`; "
            "[Evaluation protocols](evaluation.md))")
    if e.adds_evaluation:
        line += "; after training it adds measures of its own (`after_training`, in its module)"
    return line


def as_markdown(entries: list[Entry]) -> str:
    """The documentation's methods page."""
    out = ["# Methods", "",
           "*Generated at build time from the registered methods (`sslray.methods.catalogue`), the source "
           "`sslray methods` prints from: each method's summary and its module's docstring — the paper, what is "
           "built, the departures — and its typed settings with their defaults, bounds and descriptions. Set one "
           "with `--set key=value`.*", "",
           "| method | what it does |", "|---|---|"]
    out += [f"| [`{e.name}`](#{e.name}) | {_cell(e.summary)} |" for e in entries]
    for e in entries:
        out += ["", f"## {e.name}", "", f"**{_cell(e.summary)}**", "", _markdown(e.about), ""]
        facts = [f"- **Module:** `{e.module}`",
                 f"- **Evaluated:** {_evaluation(e)}"]
        if e.needs_labels:
            facts.append("- **Needs labels:** yes (refused on an unlabelled collection)")
        if e.contrastive:
            facts.append("- **Contrastive:** honours `trunk.norm=shuffle_batch`")
        if e.needs:
            facts.append(f"- **Reads of a batch besides its images:** {', '.join(f'`{n}`' for n in e.needs)} "
                         "(refused on data without them)")
        out += facts + [""]
        if e.settings:
            out += ["| setting | default | bounds | description |", "|---|---|---|---|"]
            out += [f"| `{s.key}` | `{s.default!r}` | {s.bounds or '–'} | {_cell(s.description) or '–'} |"
                    for s in e.settings]
        else:
            out.append("No settings.")
    return "\n".join(out) + "\n"
