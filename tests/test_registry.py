"""The one registry mechanism behind methods, evaluation protocols and data sources."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sslray.registry import Registry


def test_a_registry_names_its_parts_refuses_a_second_under_one_name_and_imports_its_package_once(monkeypatch):
    import sslray.methods as methods
    from sslray.eval import protocols
    from sslray.data import sources

    reg = Registry("widget", "sslray.methods", methods.__path__, helpers={"base", "catalogue"}, make=lambda c: c())

    class A:
        name = "a"

    class B:
        name = "a"

    class Nameless:
        name = ""

    assert reg.register(A) is A and isinstance(reg.parts["a"], A) and reg.classes["a"] is A
    assert reg.register(A) is A  # the same class again (a re-imported module's twin is not)
    with pytest.raises(TypeError, match="widget 'a' registered twice"):
        reg.register(B)
    with pytest.raises(TypeError, match="Nameless needs a name"):
        reg.register(Nameless)
    del reg.parts["a"]  # a test's toy removed: the name is free again
    assert reg.register(B) is B
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    reg.discover()
    reg.discover()
    assert "sslray.methods.simclr" in imported and len(imported) == len(set(imported))  # once each
    assert not any(n.endswith((".base", ".catalogue", "._contrastive")) for n in imported)  # helpers skipped
    # the three registries are this one mechanism
    assert {type(r._REGISTRY) for r in (methods, protocols, sources.registry)} == {Registry}


def test_a_result_key_in_a_fresh_process_names_its_protocol_s_own_head():
    # nothing discovered yet: key() must find the invariance protocol (whose factor/ variant is its
    # own head) by itself, not fall back to the protocol's name as the head
    code = ("from sslray.eval.results import key; from sslray.eval.protocols import Result; "
            "print(key(Result('invariance', 'r2', 0.5, 'conv1', 'factor/hue')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "factor/hue/conv1/r2"
