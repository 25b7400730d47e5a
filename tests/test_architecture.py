"""The plugin's import graph is the one docs/architecture.md draws: every module named
there with its layer, each importing only modules of lower layers (every import: those
inside functions and under ``TYPE_CHECKING`` too), so there is no cycle and nothing
points back up; and nothing of the plugin imports the sandbox."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "botcity" / "plugins" / "ms365" / "credentials"
PAGE = REPO / "docs" / "architecture.md"


def layers() -> dict[str, int]:
    """``module -> layer`` from the page's table."""
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", PAGE.read_text(), re.M)
    return {module: int(layer) for layer, module in rows}


def imports(path: Path) -> set[str]:
    """The plugin modules (and ``sandbox``) that ``path`` imports, wherever it does."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.update([node.module.split(".")[0]] if node.module else
                             [alias.name for alias in node.names])
            elif (node.module or "").startswith("botcity.plugins.ms365.credentials."):
                found.add(node.module.split(".")[4])
            elif (node.module or "").startswith("botcity.plugins.ms365.sandbox"):
                found.add("sandbox")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("botcity.plugins.ms365.sandbox"):
                    found.add("sandbox")
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_the_page_names_every_module_once():
    named = re.findall(r"^\| \d+ \| `(\w+)` \|", PAGE.read_text(), re.M)
    assert sorted(named) == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_lower_layers(module):
    layer = layers()
    for imported in imports(PACKAGE / f"{module}.py"):
        assert imported != "sandbox", f"{module} imports the sandbox"
        assert imported in layer, f"{module} imports {imported}, which the page does not name"
        assert layer[imported] > layer[module], (
            f"{module} (layer {layer[module]}) imports {imported} (layer {layer[imported]})")


def test_the_plugin_has_no_subpackage_of_its_own():
    assert not [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]
