"""What every registry of parts shares (methods, evaluation protocols, data sources): parts
registered by name from the modules of one package, each module imported once, on first use.

A package's ``register`` decorator refuses a part without a name and a second part under a name
already taken; ``discover`` imports every module of the package except ``_``-prefixed ones and the
named helpers. Each registry keeps its own lookup, whose one-line error names its kind of part.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable


class Registry:
    """Parts of one ``kind`` ("method", "protocol", "data source") found in ``package``; ``parts``
    maps each name to what ``make`` turns the registered class into (the class itself by default)."""

    def __init__(self, kind: str, package: str, path: Iterable[str], helpers: Iterable[str] = (),
                 make: Callable = lambda cls: cls):
        self.kind, self.package, self.path = kind, package, list(path)
        self.helpers, self.make = set(helpers), make
        self.parts: dict = {}
        self.classes: dict[str, type] = {}
        self.found = False

    def register(self, cls: type) -> type:
        if not cls.name:
            raise TypeError(f"{cls.__name__} needs a name")
        if cls.name in self.parts and self.classes[cls.name] is not cls:
            raise TypeError(f"{self.kind} {cls.name!r} registered twice")
        self.classes[cls.name], self.parts[cls.name] = cls, self.make(cls)
        return cls

    def discover(self) -> dict:
        """Every part, its package's modules imported once (a lookup may run thousands of times)."""
        if not self.found:
            for mod in pkgutil.iter_modules(self.path):
                if not mod.name.startswith("_") and mod.name not in self.helpers:
                    importlib.import_module(f"{self.package}.{mod.name}")
            self.found = True
        return self.parts
