"""The sandbox (sandbox/, the distribution botcity-ms365-sandbox) and the plugin: which
imports which, and a sandbox that leaves the caller's environment alone."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from botcity.plugins.ms365.sandbox import Sandbox
from conftest import REPO

PLUGIN = "botcity.plugins.ms365.credentials"
SANDBOX = "botcity.plugins.ms365.sandbox"
#: the servers: they know the protocols, nothing of the plugin
SERVERS = ("_http", "_tls", "client_assertions", "distance", "identity", "graph", "maestro")
ROOTS = (REPO / "src", REPO / "sandbox" / "src")


def modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports: at the top, in functions, under TYPE_CHECKING. In
    ``from P import M`` a submodule M is what is imported (P is, already)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                base += node.module.split(".") if node.module else []
            else:
                base = node.module.split(".")
            module = ".".join(base)
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in known else module)
    return found


def graph() -> dict[str, set[str]]:
    every = modules()
    known = set(every)
    return {name: imports(name, path, known) & known for name, path in every.items()}


def test_the_servers_import_nothing_of_the_plugin():
    edges = graph()
    for server in SERVERS:
        assert not {m for m in edges[f"{SANDBOX}.{server}"] if m.startswith(PLUGIN)}, server


def test_the_plugin_imports_nothing_of_the_sandbox():
    for name, imported in graph().items():
        if name.startswith(PLUGIN) and not is_sandbox(name):
            assert not {m for m in imported if is_sandbox(m)}, name


def is_sandbox(name: str) -> bool:
    return name.startswith((SANDBOX, PLUGIN + ".sandbox"))


def test_no_import_cycle_in_the_sandbox():
    """Among the sandbox's modules (new and deprecated paths): the plugin imports none of
    them (above), so a cycle through one of them would be among them."""
    edges = {name: {m for m in imported if is_sandbox(m)}
             for name, imported in graph().items() if is_sandbox(name)}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for other in sorted(edges[name]):
            visit(other, [*path, name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])
    assert f"{SANDBOX}.fixture" not in edges[f"{SANDBOX}.sandbox"]
    assert SANDBOX not in edges[f"{SANDBOX}.fixture"]


def test_authorize_leaves_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    with Sandbox() as sandbox:
        sandbox.authorize("ms365", ["basic", "mail_send"])
        assert dict(os.environ) == before
        token = json.loads(sandbox.maestro.secret("ms365", "token") or "{}")
        assert "Mail.Send" in token["botcity"]["permissions"]
        assert [r.form().get("grant_type") for r in sandbox.token_requests()] == [
            "authorization_code"]
    assert dict(os.environ) == before


def test_a_sandbox_leaves_no_folder_behind_stopped_or_refused():
    """Its folder holds the TLS key: gone when it stops, and when its options are refused
    after the folder was made (conftest checks the same after every test)."""
    import tempfile

    def folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("botcity-ms365-sandbox-*"))

    before = folders()
    with Sandbox() as sandbox:
        assert (Path(sandbox.ca_file).parent / "server-key.pem").is_file()
        assert len(folders() - before) == 1
    assert folders() == before
    with pytest.raises(ValueError):
        Sandbox(maestro_latency=(0.3, 0.1))
    assert folders() == before
