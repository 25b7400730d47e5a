"""Tests of the example bot, written the way we would like you to test yours: with the
``ms365_sandbox`` fixture that comes with botcity-ms365-sandbox (the sandbox distribution
beside botcity-ms365-credentials-plugin), no Microsoft 365 tenant and no BotCity Maestro.
The bot runs as a Runner runs it (its own process,
``python bot.py <server> <task_id> <token> <organization>``); the test asserts on what a
person would check: the task's status in Maestro, the mail in Sent Items, the alerts.

    pip install -r requirements.txt botcity-ms365-sandbox pytest   # not what a Runner needs
    pytest tests

(until 1.0 is on PyPI: the two wheels built from the plugin's repository, see README.md).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot.py"
#: what bot.py asks for (the person who authorizes the bot consents to these)
SCOPES = ["basic", "mail_send"]
LABEL = "ms365"


def run_bot(ms365_sandbox, argv):
    """The bot as a Runner starts it; its output is kept for the assertion messages."""
    done = subprocess.run(
        [sys.executable, str(BOT), *argv], cwd=BOT.parent,
        env={**os.environ, **ms365_sandbox.env}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )
    return done.stdout + done.stderr


def test_the_bot_sends_its_report_and_finishes_its_task(ms365_sandbox):
    ms365_sandbox.authorize(LABEL, scopes=SCOPES)  # the one-time consent, done for the test
    argv = ms365_sandbox.runner_argv(parameters={"ms365_credential_label": LABEL})

    output = run_bot(ms365_sandbox, argv)

    task = ms365_sandbox.task(argv[1])
    assert task["state"] == "FINISHED", output
    assert task["finish_status"] == "SUCCESS", output
    assert task["processed_items"] == 1
    sent = ms365_sandbox.messages("sentitems")
    assert [m["subject"] for m in sent] == [f"BotCity task {argv[1]} report"]
    assert sent[0]["toRecipients"][0]["emailAddress"]["address"] == ms365_sandbox.user
    assert ms365_sandbox.alerts() == []


def test_maestro_unreachable_is_one_line_and_a_failed_exit(ms365_sandbox):
    """A Runner starts the bot while Maestro is down: no traceback, the reason in one line
    of the Runner's log, exit 1."""
    ms365_sandbox.authorize(LABEL, scopes=SCOPES)
    argv = ms365_sandbox.runner_argv(parameters={"ms365_credential_label": LABEL})
    ms365_sandbox.fail_maestro(times=10, status=0)  # every connection dropped

    done = subprocess.run(
        [sys.executable, str(BOT), *argv], cwd=BOT.parent,
        env={**os.environ, **ms365_sandbox.env}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("The bot could not start: BotCity Maestro at ")
    assert "dropped the connection" in line and "Try again in a few minutes" in line


def test_a_revoked_token_fails_the_task_and_tells_maestro_once(ms365_sandbox):
    ms365_sandbox.authorize(LABEL, scopes=SCOPES)
    # Weeks later: the stored access token has expired and an administrator revoked the
    # account's sessions, so nothing works until a person signs in again.
    ms365_sandbox.expire_access_tokens()
    ms365_sandbox.revoke_refresh_tokens()
    argv = ms365_sandbox.runner_argv(parameters={"ms365_credential_label": LABEL})

    output = run_bot(ms365_sandbox, argv)

    task = ms365_sandbox.task(argv[1])
    assert task["finish_status"] == "FAILED", output
    # one cause (Microsoft's), one next step: the command, with its label and scopes
    command = ("botcity-ms365 login --label ms365 --scopes basic mail_send (with "
               "BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace set).")
    assert task["finish_message"].endswith(command)
    assert task["finish_message"].count("botcity-ms365 login") == 1
    alerts = ms365_sandbox.alerts()
    assert len(alerts) == 1, alerts
    assert alerts[0]["message"].endswith(command)
    assert ms365_sandbox.messages("sentitems") == []


def test_the_graph_sdk_option_sends_the_same_report(ms365_sandbox):
    """The task parameter ms365_client=graph: Microsoft's Graph SDK on the same token (needs
    msgraph-sdk, the plugin's graph extra: skipped where it is not installed)."""
    pytest.importorskip("msgraph")
    ms365_sandbox.authorize(LABEL, scopes=SCOPES)
    argv = ms365_sandbox.runner_argv(parameters={"ms365_credential_label": LABEL,
                                                 "ms365_client": "graph"})

    output = run_bot(ms365_sandbox, argv)

    task = ms365_sandbox.task(argv[1])
    assert task["finish_status"] == "SUCCESS", output
    sent = ms365_sandbox.messages("sentitems")
    assert [m["subject"] for m in sent] == [f"BotCity task {argv[1]} report"]
    assert sent[0]["toRecipients"][0]["emailAddress"]["address"] == ms365_sandbox.user
    assert ms365_sandbox.alerts() == []
