"""``botcity-ms365`` never needs the Maestro key on its command line (issue 25, item 8):
it comes from ``BOTCITY_KEY`` or a prompt without echo at a terminal; ``--key`` still
works but warns that other users see it in the process list (``ps`` shows every
process's arguments: POSIX proc(5) ``/proc/[pid]/cmdline``; Windows: Get-CimInstance
Win32_Process's CommandLine)."""

from __future__ import annotations

import pytest

from botcity.plugins.ms365.credentials import cli, platform

LABEL = "ms365"


@pytest.fixture
def authorized(sandbox, maestro):
    sandbox.authorize(LABEL, ["basic"])


def at_a_terminal(monkeypatch, typed: str | None) -> list[str]:
    """stdin is a console (platform.stdin_kind's answer for one); ``getpass`` gets
    ``typed`` (None: asking is a failure). Returns the prompts shown."""
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        if typed is None:
            raise AssertionError("nobody is there to ask")
        return typed

    monkeypatch.setattr(platform, "stdin_kind", lambda stdin, *a, **k: "console")
    monkeypatch.setattr("getpass.getpass", getpass)
    return prompts


def status(sandbox, *extra: str) -> list[str]:
    return ["status", "--server", sandbox.maestro_url, "--login", sandbox.maestro.login,
            "--label", LABEL, *extra]


def test_at_a_terminal_the_key_is_asked_for_without_echo(sandbox, authorized, monkeypatch,
                                                         capsys):
    prompts = at_a_terminal(monkeypatch, sandbox.maestro.key)

    assert cli.main(status(sandbox)) == cli.EXIT_OK

    assert prompts == [f"Maestro key of {sandbox.maestro.login} (not shown): "]
    out, err = capsys.readouterr()
    assert sandbox.maestro.key not in out + err
    assert "warning" not in err


def test_the_key_from_botcity_key_is_not_asked_for(sandbox, authorized, monkeypatch, capsys):
    at_a_terminal(monkeypatch, None)
    monkeypatch.setenv("BOTCITY_KEY", sandbox.maestro.key)

    assert cli.main(status(sandbox)) == cli.EXIT_OK
    assert "warning" not in capsys.readouterr().err


def test_without_a_terminal_a_missing_key_is_a_usage_error_naming_botcity_key(
        sandbox, monkeypatch, capsys):
    monkeypatch.setattr(platform, "stdin_kind", lambda stdin, *a, **k: "pipe")

    assert cli.main(status(sandbox)) == cli.EXIT_USAGE
    assert "the key in BOTCITY_KEY" in capsys.readouterr().err


def test_key_on_the_command_line_works_and_warns(sandbox, authorized, capsys):
    assert cli.main(status(sandbox, "--key", sandbox.maestro.key)) == cli.EXIT_OK

    out, err = capsys.readouterr()
    assert "process list" in err and "BOTCITY_KEY" in err
    assert sandbox.maestro.key not in out + err


def test_help_says_key_is_visible_in_the_process_list(capsys):
    with pytest.raises(SystemExit):
        cli.main(["status", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "visible to other users in the process list" in text
    assert "set BOTCITY_KEY instead" in text
