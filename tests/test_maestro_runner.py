"""With Maestro: the app credentials come from a label, the first authorization stores the
token in it, and a bot started as a Runner starts it uses the token with no person."""

from __future__ import annotations

import json
import sys
import time

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from conftest import BOT, BOT_SCOPES, bot_env, newest_token, run_process

LABEL = "ms365"


def authorize_once(sandbox, maestro, scopes=BOT_SCOPES):
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(list(scopes), consent=sandbox.consent_redirect)
    return plugin


def run_as_runner(sandbox, *, label=LABEL):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": label})
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    run = run_process(argv, bot_env(sandbox), stdin_closed=True)
    return sandbox.maestro.tasks[task_id], run


def test_first_authorization_stores_the_token_in_the_label(sandbox, maestro):
    plugin = authorize_once(sandbox, maestro)

    stored = sandbox.maestro.secret(LABEL, "token")
    assert stored is not None and "\n" not in stored, "single-line JSON"
    data = json.loads(stored)
    assert data["RefreshToken"] and data["AccessToken"]
    assert data["botcity"]["account"] == sandbox.tenant.user.upn
    assert data["botcity"]["permissions"] == ["Mail.Send", "User.Read"]
    # the app credentials came from the label, and survive the token write
    assert plugin.credentials == (sandbox.app.client_id, sandbox.app.secret)
    assert sandbox.maestro.secret(LABEL, "client_id") == sandbox.app.client_id
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret


def test_runner_uses_the_stored_token_without_prompt_or_identity_requests(sandbox, maestro):
    authorize_once(sandbox, maestro)
    sandbox.requests.clear()

    task, run = run_as_runner(sandbox)

    assert run.returncode == 0, run.stdout + run.stderr
    assert task.finish_status == "SUCCESS"
    assert sandbox.tenant.user.upn in task.finish_message
    assert "Paste" not in run.stdout and "consent" not in run.stdout.lower()
    assert sandbox.requests("identity") == []
    assert [(r.method, r.path) for r in sandbox.requests("graph")] == [
        ("GET", "/v1.0/me"), ("POST", "/v1.0/me/sendMail")]
    assert [m["subject"] for m in sandbox.graph.mail("inbox")] == [
        f"BotCity task {task.id} report"], "the bot did its job through the Outlook plugin"
    # one Maestro read gives both the app credentials and the token
    assert len(sandbox.requests("maestro", path_contains="/api/v2/credential")) == 1


def test_after_expiry_exactly_one_refresh_and_the_rotated_token_is_written_back(
    sandbox, maestro
):
    authorize_once(sandbox, maestro)
    before = json.loads(sandbox.maestro.secret(LABEL, "token"))
    sandbox.force_expiry()
    sandbox.requests.clear()

    task, run = run_as_runner(sandbox)

    assert run.returncode == 0, run.stdout + run.stderr
    assert task.finish_status == "SUCCESS"
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert len(sandbox.token_requests()) == 1
    assert len(sandbox.requests("identity")) == 1, (
        "the token request only: msal's discovery answers came with the token")
    after = json.loads(newest_token(sandbox, LABEL))
    old_rt = {e["secret"] for e in before["RefreshToken"].values()}
    new_rt = {e["secret"] for e in after["RefreshToken"].values()}
    assert new_rt and new_rt != old_rt, "the rotated refresh token was saved"
    [access] = after["AccessToken"].values()
    assert int(access["expires_on"]) > time.time() + 3000, "a fresh access token was saved"
    assert after["botcity"]["access_token_expires_on"] == int(access["expires_on"])
    assert sandbox.maestro.secret(LABEL, "client_id") == sandbox.app.client_id
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret
    writes = sandbox.requests("maestro", path_contains=f"/api/v2/credential/{LABEL}",
                              method="POST")
    assert len(writes) == 2, "the claim on the expired token, then the rotated token"
    assert all(w.path.endswith("/key") for w in writes), (
        "both added beside the token: nothing else of the credential is sent")
    assert "renewing" not in after["botcity"]

    # the next Runner uses the written-back token: no refresh
    sandbox.requests.clear()
    task, run = run_as_runner(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert sandbox.requests("identity") == []


def test_runner_without_a_token_fails_fast_and_says_what_to_do(sandbox):
    sandbox.put_app_credentials(LABEL)

    task, run = run_as_runner(sandbox)

    assert run.returncode == 1
    assert task.finish_status == "FAILED"
    assert f"Maestro credential '{LABEL}' key 'token'" in task.finish_message
    assert task.finish_message.endswith(
        "yet. A person must sign in once, on a machine with a browser: botcity-ms365 login "
        f"--label {LABEL} --scopes basic mail_send (with BOTCITY_SERVER, BOTCITY_LOGIN and "
        "BOTCITY_KEY of this workspace set).")
    assert sandbox.requests("identity") == []


def test_token_label_separate_from_the_app_credentials(sandbox, maestro):
    sandbox.put_app_credentials("app")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="app",
                                    token_label="user-token", token_key="t")
    plugin.authenticate(consent=sandbox.consent_redirect)

    assert json.loads(sandbox.maestro.secret("user-token", "t"))["RefreshToken"]
    assert sandbox.maestro.secret("app", "token") is None
    assert [i["key"] for i in sandbox.maestro.credentials["app"]] == [
        "client_id", "client_secret", "tenant_id"
    ]
