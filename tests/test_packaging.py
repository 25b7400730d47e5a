"""The distribution installs beside botcity-maestro-sdk as a PEP 420 namespace package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, timeout=300,
    )
    [built] = list(out.glob("*.whl"))
    return zipfile.ZipFile(built)


def test_namespace_packages_have_no_init(wheel):
    names = set(wheel.namelist())
    for namespace in ("botcity", "botcity/plugins", "botcity/plugins/ms365"):
        assert f"{namespace}/__init__.py" not in names
    assert "botcity/plugins/ms365/credentials/__init__.py" in names
    assert "botcity/plugins/ms365/credentials/py.typed" in names
    assert "botcity/plugins/ms365/credentials/sandbox/__init__.py" in names


def test_metadata(wheel):
    [meta] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    fields = Parser().parsestr(wheel.read(meta).decode())
    assert fields["Name"] == "botcity-ms365-credentials-plugin"
    assert fields["Version"] == "1.0.0"
    assert fields["Requires-Python"] == ">=3.10"
    requires = fields.get_all("Requires-Dist")
    assert "o365<2.2,>=2.1.10" in [r.lower() for r in requires]
    assert "botcity-maestro-sdk<1,>=0.9" in requires
    [entry] = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "botcity-ms365 = botcity.plugins.ms365.credentials.cli:main" in wheel.read(
        entry).decode()


def test_imports_beside_the_maestro_sdk():
    code = ("import botcity.maestro, botcity.plugins.ms365.credentials as c; "
            "print(c.__version__, botcity.maestro.BotMaestroSDK.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["1.0.0", "BotMaestroSDK"]


def test_the_plugin_does_not_import_what_a_bot_does_not_need():
    code = ("import sys, botcity.plugins.ms365.credentials; "
            "print(sorted(m for m in sys.modules if m.startswith('botcity.plugins') "
            "or m in ('http.server', 'webbrowser', 'hypothesis', 'cryptography.x509')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "sandbox" not in out and ".cli" not in out
    assert "webbrowser" not in out  # (http.server comes with msal itself)
