"""A Runner never waits for a person: code written for 0.2.0 (no ``maestro=``), started as a
Runner starts a bot (Maestro's arguments on argv, stdin an open pipe nobody writes to),
ends with the plugin's unattended error and one Maestro alert instead of waiting at the
console's prompt (issue 25, item 1)."""

from __future__ import annotations

import io
import os

import pytest

from botcity.plugins.ms365.credentials import AuthorizationRequired
from botcity.plugins.ms365.credentials._maestro import started_by_runner
from botcity.plugins.ms365.credentials.consent import console_consent, is_unattended
from conftest import bot_env, run_process, script

SNIPPET_020 = """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

service = MS365CredentialsPlugin(os.environ["APP_ID"], os.environ["APP_SECRET"])
service.authenticate(scopes=[Scopes.BASIC, Scopes.MAIL_READ])
print("authenticated:", service.ms365_account.is_authenticated)
"""


def test_a_020_bot_on_a_runner_ends_with_the_unattended_error_and_one_alert(sandbox, tmp_path):
    task_id, token = sandbox.maestro.start_task()
    argv = script(tmp_path / "bot.py", SNIPPET_020) + sandbox.maestro.runner_argv(task_id, token)
    env = bot_env(sandbox, APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)

    # stdin stays an open pipe that nobody writes to (answer=None): as a Runner starts it
    run = run_process(argv, env, cwd=tmp_path, timeout=30)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "Paste the address" not in run.stdout  # it never waited at the console
    assert "AuthorizationRequired" in run.stderr
    assert ("No token is stored in file " in run.stderr and " yet. A person must sign in once, "
            "on a machine with a browser: botcity-ms365 login --label ms365 --scopes basic "
            "mail_read (with BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace "
            "set), and hand the plugin the Runner's Maestro connection") in run.stderr
    assert "maestro=BotMaestroSDK.from_sys_args()" in run.stderr
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and alert["taskId"] == str(task_id)
    assert "botcity-ms365 login --label ms365 --scopes basic mail_read" in alert["message"]
    assert not sandbox.token_requests()  # no sign-in was started either
    assert not (tmp_path / "o365_token.txt").exists()


@pytest.mark.parametrize(("argv", "runner"), [
    # BotMaestroSDK.from_sys_args: server, task id, token [, organization]
    (["bot.py", "https://developers.botcity.dev", "17", "tok", "acme"], True),
    (["bot.py", "https://developers.botcity.dev", "17", "tok"], True),
    (["bot.py", "http://127.0.0.1:8080/", "17", "tok"], True),
    # a bot's own arguments are not a Runner's
    (["bot.py", "--verbose", "a", "b"], False),
    # a bot of its own arguments, a URL first: not a Runner (the task id is not a number)
    (["bot.py", "https://intranet/report.csv", "out.xlsx", "s3cr3t"], False),
    (["bot.py", "https://intranet/?q=report", "17", "s3cr3t"], False),
    (["bot.py", "https://developers.botcity.dev", "17"], False),
    (["bot.py"], False),
    ([], False),
])
def test_a_runner_start_is_told_by_its_arguments(argv, runner):
    assert started_by_runner(argv) is runner
    # an stdin a person could answer on (an IDE's) does not matter on a Runner
    assert is_unattended(None, io.StringIO(), argv) is runner


def test_the_console_prompt_waits_at_most_the_consent_timeout():
    read_end, write_end = os.pipe()  # a pipe nobody writes to, kept open
    stdin = os.fdopen(read_end, "r")
    try:
        with pytest.raises(AuthorizationRequired) as caught:
            console_consent("https://login.example/authorize?x=1", "https://r.example/",
                            "state", stdin=stdin, stdout=io.StringIO(), timeout=0.3)
    finally:
        os.close(write_end)  # first: the reader thread gets the end of the pipe
        stdin.close()
    assert "No one answered the consent prompt within 0.3 s" in str(caught.value)
    assert "botcity-ms365 login" in str(caught.value)


def test_a_line_that_comes_after_a_timed_out_prompt_goes_to_the_next_prompt():
    """The read of a prompt that timed out stays pending; the next prompt takes its line
    instead of a second reader competing for it."""
    from botcity.plugins.ms365.credentials import AuthorizationError

    read_end, write_end = os.pipe()
    stdin = os.fdopen(read_end, "r")
    try:
        with pytest.raises(AuthorizationRequired):
            console_consent("https://login.example/authorize", "https://r.example/", "s",
                            stdin=stdin, stdout=io.StringIO(), timeout=0.2)
        os.write(write_end, b"https://r.example/?error=access_denied&state=s\n")
        with pytest.raises(AuthorizationError) as caught:  # the line reached this prompt
            console_consent("https://login.example/authorize", "https://r.example/", "s",
                            stdin=stdin, stdout=io.StringIO(), timeout=5)
        assert caught.value.error == "access_denied"
    finally:
        os.close(write_end)
        stdin.close()
