"""The ``botcity-ms365`` command, run as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = Path(sys.executable).with_name("botcity-ms365")
# every sandbox secret has a recognisable prefix; access tokens are long random strings
SECRET_MARKS = re.compile(r"sbx~|sbxrt\.|sbxkey_|sbxrunner_|sbxtoken_|[A-Za-z0-9_-]{200}")


def cli(*args: str, cwd: Path = REPO, module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "botcity.plugins.ms365.credentials"] if module else [
        str(SCRIPT)]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_demo_tells_the_whole_story_and_succeeds():
    done = cli("demo")

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Signed in as bot@contoso.onmicrosoft.com, permissions Mail.Send, User.Read." in out
    assert "the credential now holds: client_id, client_secret, tenant_id, token." in out
    assert out.count("finished SUCCESS") == 2
    assert "Requests to Microsoft's identity platform: 0" in out
    assert ("Refreshes: 1. The rotated token was written back to Maestro: yes; client_id "
            "and client_secret unchanged: yes.") in out
    assert not SECRET_MARKS.search(out + done.stderr)


def test_python_dash_m_runs_the_same_command():
    done = cli("--help", module=True)
    assert done.returncode == 0 and "demo" in done.stdout and "sandbox" in done.stdout


@pytest.mark.parametrize("command", ["login", "status", "logout", "copy", "migrate", "demo",
                                     "sandbox"])
def test_every_command_has_help(command):
    done = cli(command, "--help")
    assert done.returncode == 0 and command in done.stdout


def test_demo_outside_the_project_says_where_to_run_it(tmp_path):
    done = cli("demo", cwd=tmp_path)
    assert done.returncode == 2
    assert "Run the demo from the project folder" in done.stdout


def test_usage_errors_exit_2():
    assert cli().returncode == 2
    assert cli("no-such-command").returncode == 2


def test_demo_without_the_bots_requirements_says_how_to_install_them(monkeypatch, capsys):
    import importlib.util

    from botcity.plugins.ms365.sandbox.demo import run_demo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith(".outlook") else real(name, *a))
    assert run_demo(str(REPO / "bot_example" / "bot.py"), 60) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().out
