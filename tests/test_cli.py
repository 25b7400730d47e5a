"""The ``botcity-ms365`` command, run as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, bot_env, run_process

LABEL = "ms365"

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


def test_python_dash_m_runs_the_same_command(sandbox, tmp_path):
    """Where the script is not on PATH (a Runner's venv), ``python -m
    botcity.plugins.ms365.credentials`` is the same command: same answer, same status."""
    sandbox.authorize(LABEL, ["basic"])
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    args = ["status", "--label", LABEL]

    script = run_process([str(SCRIPT), *args], env, cwd=tmp_path, stdin_closed=True)
    module = run_process([sys.executable, "-m", "botcity.plugins.ms365.credentials", *args],
                         env, cwd=tmp_path, stdin_closed=True)

    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert sandbox.tenant.user.upn in module.stdout
    assert module.stdout == script.stdout


TYPO = "unrecognized arguments: --no-such-option"


@pytest.mark.parametrize(("args", "says"), [
    ([], "the following arguments are required: COMMAND"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
    *(([command, "--no-such-option"], TYPO) for command in ("login", "status", "logout",
                                                            "demo", "sandbox")),
    (["copy", "--from", "file:a.json", "--to", "maestro:ms365", "--no-such-option"], TYPO),
    (["migrate", "old.txt", "--no-such-option"], TYPO),
], ids=lambda v: (" ".join(v) or "no-command") if isinstance(v, list) else "")
def test_a_mistyped_command_line_shows_the_usage_and_does_nothing(sandbox, tmp_path, args,
                                                                   says):
    """A typo exits 2 with the usage and what was wrong, before anything is read or
    written: no request reaches Maestro or Microsoft, no file is made."""
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    sandbox.put_app_credentials(LABEL)
    sandbox.requests.clear()

    done = run_process([str(SCRIPT), *args], env, cwd=tmp_path, stdin_closed=True)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "usage: botcity-ms365" in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert sandbox.requests() == [], "nothing reached the sandbox"
    assert list(tmp_path.iterdir()) == [], "nothing was written"


def test_demo_outside_the_project_says_where_to_run_it(tmp_path):
    done = cli("demo", cwd=tmp_path)
    assert done.returncode == 2
    assert "Run the demo from the project folder" in done.stdout


def test_demo_without_the_bots_requirements_says_how_to_install_them(monkeypatch, capsys):
    import importlib.util

    from botcity.plugins.ms365.sandbox.demo import run_demo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith(".outlook") else real(name, *a))
    assert run_demo(str(REPO / "bot_example" / "bot.py"), 60) == 2
    assert "pip install -e '.[demo]'" in capsys.readouterr().out
