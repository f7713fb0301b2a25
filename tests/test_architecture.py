"""The package's imports run one way and never in a circle.

cli -> (sweep, compare, bench) -> train -> eval -> methods -> components -> (config, data, models,
tracking) -> (errors, paths, progress, cluster, registry, table, stats, the package itself). Every ``import`` statement counts, also one
hidden inside a function. Checked by reading the source with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sslray

ROOT = Path(sslray.__file__).parent

#: rooms by level, top first; a room may import its own modules and any room on a lower level
LEVELS = [("cli",), ("sweep", "compare", "bench"), ("train",), ("eval",), ("methods",), ("components",),
          ("config", "data", "models", "tracking"), ("errors", "paths", "progress", "cluster", "registry", "table", "stats", "")]
#: levels whose rooms may also import each other (never in a circle of rooms): bench times sweeps
SHARED = {1, 6, 7}


def modules(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of a package; a package's own name maps to its ``__init__.py``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement in the source."""
    mods = modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods and t.startswith(package):  # `import a.b.c` -> the module a.b.c
                    t = t.rpartition(".")[0]
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def room(module: str, package: str) -> str:
    parts = module.split(".")
    r = parts[1] if len(parts) > 1 else ""
    return "cli" if r == "__main__" else r


def level(r: str) -> int:
    return next(i for i, rooms in enumerate(LEVELS) if r in rooms)


def upward_imports(graph: dict[str, set[str]], package: str) -> list[str]:
    """Every import that runs back up a level (or sideways between rooms of a level that may not)."""
    bad = []
    for a, targets in graph.items():
        for b in targets:
            ra, rb = room(a, package), room(b, package)
            if ra == rb:
                continue
            la, lb = level(ra), level(rb)
            if lb < la or (lb == la and la not in SHARED):
                bad.append(f"{a} -> {b}")
    return sorted(bad)


def test_every_room_has_a_level():
    rooms = {room(m, "sslray") for m in modules(ROOT, "sslray")}
    assert rooms <= {r for rs in LEVELS for r in rs}, rooms


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph(ROOT, "sslray")) is None


def room_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for a, targets in graph.items():
        ra = room(a, package)
        rooms.setdefault(ra, set()).update(room(b, package) for b in targets if room(b, package) != ra)
    for targets in list(rooms.values()):
        for r in targets:
            rooms.setdefault(r, set())
    return rooms


def test_imports_run_one_way():
    graph = import_graph(ROOT, "sslray")
    assert upward_imports(graph, "sslray") == []
    assert find_cycle(room_graph(graph, "sslray")) is None


def test_the_checks_fail_on_a_deliberate_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "fake"
    (pkg / "train").mkdir(parents=True)
    (pkg / "methods").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "methods" / "__init__.py").write_text("")
    (pkg / "train" / "run.py").write_text("from . import worker\n")
    (pkg / "train" / "worker.py").write_text("def f():\n    from .run import g  # hidden in a function\n")
    (pkg / "methods" / "base.py").write_text("import fake.train.run\n")
    graph = import_graph(pkg, "fake")
    assert graph["fake.train.run"] == {"fake.train.worker"}
    assert graph["fake.train.worker"] == {"fake.train.run"}
    assert find_cycle(graph) == ["fake.train.run", "fake.train.worker", "fake.train.run"]
    assert upward_imports(graph, "fake") == ["fake.methods.base -> fake.train.run"]
    # rooms that may import each other still never do so in a circle
    assert find_cycle({"sweep": {"bench"}, "bench": {"sweep"}}) == ["bench", "sweep", "bench"]


@pytest.mark.parametrize("mod", ["sslray.train.worker", "sslray.methods.clusterfit"])
def test_the_graph_sees_the_imports_of_real_modules(mod):
    graph = import_graph(ROOT, "sslray")
    assert graph[mod], mod  # a parser that saw nothing would pass every check above
    assert "sslray.tracking.rundir" in graph["sslray.tracking"]


def test_reading_commands_start_without_torch():
    """``sslray report``/``compare``/``ui`` and the argument parser only read MLflow and format
    tables: importing torch (and torchvision) would add seconds to each (measured: 2.7 s here)."""
    code = ("import sys; from sslray.cli import build_parser; build_parser(); "
            "import sslray.sweep.report, sslray.compare, sslray.table; "
            "print(sorted(m for m in ('torch', 'torchvision', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---- protocol names stay in eval/ (and data/): everyone else reads results (issue 25) ------------

#: string constants equal to a protocol's name that mean something else, and why
NOT_A_PROTOCOL = {("sslray.methods.vicreg", "invariance"): "VICReg's invariance loss term",
                  ("sslray.components.negative_free", "invariance"): "VICReg's invariance loss term"}


def protocol_names(root: Path) -> set[str]:
    """The ``name = "..."`` of every protocol class in ``eval/protocols/``, read from the source."""
    names = set()
    for path in (root / "eval" / "protocols").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["name"] \
                            and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                        names.add(stmt.value.value)
    return names


def name_literals(root: Path, package: str, names: set[str], rooms=("data", "eval")) -> list[str]:
    """``module: 'name'`` for every string constant equal to one of ``names`` in a module outside
    ``rooms`` (a protocol named by a string outside eval/ is a branch on its name)."""
    found = []
    for module, path in sorted(modules(root, package).items()):
        if room(module, package) in rooms:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names and (module, node.value) not in NOT_A_PROTOCOL:
                found.append(f"{module}: {node.value!r}")
    return found


def test_no_module_outside_eval_and_data_names_a_protocol():
    names = protocol_names(ROOT)
    assert {"linear", "knn", "finetune", "lowshot", "retrieval", "invariance"} <= names
    assert name_literals(ROOT, "sslray", names) == []


def test_the_protocol_name_check_catches_a_branch_on_a_name(tmp_path):
    pkg = tmp_path / "fake"
    for d in ("eval/protocols", "train", "data"):
        (pkg / d).mkdir(parents=True)
    (pkg / "eval" / "protocols" / "knn.py").write_text("class Knn:\n    name = 'knn'\n")
    (pkg / "eval" / "run.py").write_text("ASKED = ['knn']\n")  # eval/ may name its protocols
    (pkg / "train" / "record.py").write_text("def f(cfg):\n    return 'knn' in cfg.protocols  # a branch\n")
    (pkg / "train" / "doc.py").write_text('"""the knn protocol, in words, is fine"""\n')
    assert protocol_names(pkg) == {"knn"}
    assert name_literals(pkg, "fake", {"knn"}) == ["fake.train.record: 'knn'"]


# ---- data sources are registered parts: nothing outside sslray/data/ names one or asks its kind ------------

#: rooms and files that may still name a data source, and why
NAMES_ALLOWED = {
    "data": "the sources themselves and their registry",
    "eval": "evaluation documents what each collection's images share (retrieval)",
    "bench": "a benchmark names the collection it times, as a command line would",
}
#: DataConfig.name's default: the collection a run reads unless told
DEFAULT_NAME = ("config.py", "synthetic")


def source_mentions(root: Path, names: set[str]) -> list[str]:
    """``file:line: 'name'`` for every string literal equal to a source's name, and every comparison
    with a serving kind (``"memory"``, ``"stream"``), outside the allowed rooms."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NAMES_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                if (str(rel), node.value) != DEFAULT_NAME:
                    found.append((str(rel), node.lineno, repr(node.value)))
            elif isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in ("memory", "stream"):
                        found.append((str(rel), node.lineno, f"compares with {side.value!r}"))
    return [f"{f}:{line}: {what}" for f, line, what in sorted(found)]


def test_no_module_outside_data_names_a_data_source_or_asks_its_kind():
    from sslray.data.sources import names

    registered = set(names())
    assert {"synthetic", "imagefolder", "parquet"} <= registered  # the check reads the real registry
    assert source_mentions(ROOT, registered) == []


def test_the_source_check_finds_a_name_and_a_kind_test(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "build.py").write_text(
        'def f(cfg, s):\n    if cfg.name == "imagefolder":\n        return s.kind == "stream"\n    return "synthetic"\n')
    (tmp_path / "config.py").write_text('name = "synthetic"\n')
    assert source_mentions(tmp_path, {"synthetic", "imagefolder"}) == [
        "train/build.py:2: 'imagefolder'", "train/build.py:3: compares with 'stream'", "train/build.py:4: 'synthetic'"]
