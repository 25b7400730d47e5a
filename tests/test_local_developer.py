"""A developer runs the bot on their own machine, without Maestro: consent by pasting the
redirected address, the token in ./o365_token.txt, reused by the next run."""

from __future__ import annotations

import json
import os
import stat
import sys

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from conftest import BOT, bot_env, consent_answerer, run_process, script

SNIPPET = """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

service = MS365CredentialsPlugin(
    client_id=os.environ["APP_ID"],
    client_secret=os.environ["APP_SECRET"],
)
service.authenticate(scopes=[Scopes.BASIC, Scopes.MAIL_READ])
print("user:", service.ms365_account.get_current_user_data().user_principal_name)
"""


def test_paste_consent_then_a_second_process_reuses_the_file(sandbox, tmp_path):
    env = bot_env(sandbox, APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)
    args = script(tmp_path / "dev_bot.py", SNIPPET)

    first = run_process(args, env, cwd=tmp_path, answer=consent_answerer(sandbox))

    assert first.returncode == 0, first.stdout + first.stderr
    assert "Open this URL" in first.stdout
    assert f"user: {sandbox.tenant.user.upn}" in first.stdout
    token_file = tmp_path / "o365_token.txt"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert set(json.loads(token_file.read_text())["botcity"]["permissions"]) == {
        "User.Read", "Mail.Read"
    }

    sandbox.requests.clear()
    second = run_process(args, env, cwd=tmp_path, stdin_closed=True)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Open this URL" not in second.stdout
    assert f"user: {sandbox.tenant.user.upn}" in second.stdout
    assert sandbox.requests("identity") == []


def test_example_bot_runs_locally_without_maestro(sandbox, tmp_path):
    """bot_example/bot.py on a developer machine: no Runner arguments, offline Maestro,
    app credentials from the environment, consent at the console."""
    env = bot_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                  MS365_CLIENT_SECRET=sandbox.app.secret)

    run = run_process([sys.executable, str(BOT)], env, cwd=tmp_path,
                      answer=consent_answerer(sandbox))

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Signed in to Microsoft 365 as {sandbox.tenant.user.upn}" in run.stdout
    assert (tmp_path / "o365_token.txt").exists()


def test_maestro_offline_falls_back_to_the_local_file(sandbox, tmp_path):
    from botcity.maestro import BotMaestroSDK

    offline = BotMaestroSDK()  # never logged in: is_online is False
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                    maestro=offline, credential_label="ms365")
    plugin.authenticate(consent=sandbox.consent_redirect)

    assert (tmp_path / "o365_token.txt").exists()
    assert sandbox.requests("maestro") == []
