"""Each way a person can consent, where each fits, and a Runner that never hangs."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsPlugin,
)
from conftest import BOT, DEADLINE, bot_env, consent_answerer, run_process, script

LABEL = "ms365"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# A bot that authorizes with the consent way given in MS365_CONSENT, into Maestro when
# MAESTRO_* are set, else into ./o365_token.txt, then reads the user from Graph.
AUTHORIZE = """
import os
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

maestro = None
if os.environ.get("MAESTRO_SERVER"):
    maestro = BotMaestroSDK(os.environ["MAESTRO_SERVER"], os.environ["MAESTRO_LOGIN"],
                            os.environ["MAESTRO_KEY"])
    maestro.login()
plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365",
                                client_id=os.environ.get("APP_ID"),
                                client_secret=os.environ.get("APP_SECRET"))
plugin.authenticate([Scopes.MAIL_READ])
print("user:", plugin.ms365_account.get_current_user_data().user_principal_name)
"""


def headless_browser(folder: Path) -> str:
    """An executable the ``webbrowser`` module runs as 'the system browser': a real
    headless Chromium that follows the consent URL and saves the page it ends on."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run must install it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    wrapper = folder / "headless-browser"
    # The page is dumped to a side file and renamed when Chromium is done: the bot may
    # exit (and the test look) before Chromium has finished writing it.
    wrapper.write_text(
        "#!/bin/sh\n"
        f'"{CHROMIUM}" --headless --no-sandbox --disable-gpu --disable-quic '
        "--no-first-run --disable-background-networking --disable-component-update "
        "--disable-sync --ignore-certificate-errors "
        f'--user-data-dir="{folder}/chromium-profile" --dump-dom "$1" '
        f'> "{folder}/page.part" 2>/dev/null\n'
        f'mv "{folder}/page.part" "{folder}/page.html"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def browser_page(folder: Path) -> str:
    """The page the headless browser ended on, once it has written all of it."""
    page = folder / "page.html"
    end = time.monotonic() + DEADLINE
    while not page.exists():
        assert time.monotonic() < end, "the browser never finished loading the page"
        time.sleep(0.05)
    return page.read_text()


def approve_device_codes(sandbox, stop: threading.Event, approve: bool = True) -> threading.Thread:
    """The person on a phone: approves each device code as soon as it exists."""
    def run() -> None:
        end = time.monotonic() + DEADLINE
        while not stop.is_set() and time.monotonic() < end:
            for code in list(sandbox.tenant.device_codes.values()):
                if code.state == "pending":
                    sandbox.tenant.approve_device_code(code.user_code, approve)
            time.sleep(0.05)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stored_token(sandbox, tmp_path, store: str) -> dict:
    if store == "maestro":
        return json.loads(sandbox.maestro.secret(LABEL, "token"))
    return json.loads((tmp_path / "o365_token.txt").read_text())


@pytest.mark.parametrize("store", ["file", "maestro"])
@pytest.mark.parametrize("way", ["console", "browser", "device_code"])
def test_each_way_completes_a_first_authorization(sandbox, tmp_path, way, store):
    sandbox.app.public_client_flows = True  # device code needs it
    env = bot_env(sandbox, MS365_CONSENT=way, MS365_CONSENT_TIMEOUT="30")
    if store == "maestro":
        sandbox.put_app_credentials(LABEL)
        env.update(MAESTRO_SERVER=sandbox.maestro_url, MAESTRO_LOGIN=sandbox.maestro.login,
                   MAESTRO_KEY=sandbox.maestro.key)
    else:
        env.update(APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)
    answer = None
    stop = threading.Event()
    if way == "console":
        answer = consent_answerer(sandbox)
    elif way == "browser":
        env["BROWSER"] = headless_browser(tmp_path)
    else:
        approve_device_codes(sandbox, stop)

    try:
        run = run_process(script(tmp_path / "authorize.py", AUTHORIZE), env, cwd=tmp_path,
                          answer=answer)
    finally:
        stop.set()

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"user: {sandbox.tenant.user.upn}" in run.stdout
    token = stored_token(sandbox, tmp_path, store)
    assert token["RefreshToken"] and "Mail.Read" in token["botcity"]["permissions"]
    assert token["botcity"]["client"] == ("public" if way == "device_code" else "confidential")
    if way == "browser":
        page = browser_page(tmp_path)
        assert "Signed in" in page and "You can close this window" in page
        [authorize] = sandbox.requests("identity", path_contains="/authorize")
        assert re.fullmatch(r"http://localhost:\d+", authorize.query["redirect_uri"])
    if way == "device_code":
        assert "enter the code" in run.stdout
        alerts = sandbox.maestro.alerts
        assert len(alerts) == (1 if store == "maestro" else 0)


def test_browser_shows_what_failed_when_consent_is_refused(sandbox, tmp_path):
    sandbox.tenant.consent = "deny"
    env = bot_env(sandbox, MS365_CONSENT="browser", BROWSER=headless_browser(tmp_path),
                  APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)

    run = run_process(script(tmp_path / "authorize.py", AUTHORIZE), env, cwd=tmp_path)

    assert run.returncode == 1
    assert "AuthorizationError" in run.stderr and "access_denied" in run.stderr
    page = browser_page(tmp_path)
    assert "Sign-in failed" in page and "access_denied" in page
    assert not (tmp_path / "o365_token.txt").exists()


def test_browser_gives_up_after_the_timeout(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("MS365_CONSENT_TIMEOUT", "1")
    monkeypatch.setenv("BROWSER", "/bin/true")  # a browser that shows nothing
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    started = time.monotonic()
    with pytest.raises(AuthorizationError, match="No sign-in reached http://localhost"):
        plugin.authenticate(consent="browser")
    assert time.monotonic() - started < 10


def test_device_code_needs_public_client_flows(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(AuthorizationError) as caught:
        plugin.authenticate(consent="device_code")
    assert caught.value.code == "AADSTS7000218"
    assert "'Allow public client flows' to Yes" in str(caught.value)


def test_device_code_declined(sandbox):
    sandbox.app.public_client_flows = True
    stop = threading.Event()
    approve_device_codes(sandbox, stop, approve=False)
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    try:
        with pytest.raises(AuthorizationError, match="declined"):
            plugin.authenticate(consent="device_code")
    finally:
        stop.set()


def test_device_code_wait_is_bounded(sandbox, monkeypatch):
    sandbox.app.public_client_flows = True
    monkeypatch.setenv("MS365_CONSENT_TIMEOUT", "2")
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    started = time.monotonic()
    with pytest.raises(AuthorizationError, match="within 2 s"):
        plugin.authenticate(consent="device_code")
    assert time.monotonic() - started < 10


def test_a_device_code_token_refreshes_as_a_public_client(sandbox, tmp_path):
    sandbox.app.public_client_flows = True
    stop = threading.Event()
    approve_device_codes(sandbox, stop)
    try:
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret).authenticate(
            consent="device_code")
    finally:
        stop.set()
    token_file = tmp_path / "o365_token.txt"
    from botcity.plugins.ms365.sandbox import expire_token_text
    token_file.write_text(expire_token_text(token_file.read_text()))
    sandbox.tenant.expire_access_tokens()

    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.ms365_account.get_current_user_data()

    [refresh] = sandbox.token_requests("refresh_token")
    assert "client_secret" not in refresh.form()
    assert json.loads(token_file.read_text())["botcity"]["client"] == "public"


# -- on a Runner ---------------------------------------------------------------------------


def runner(sandbox, **env):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL})
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    return task_id, argv, bot_env(sandbox, **env)


def test_runner_without_a_token_fails_fast_with_one_alert(sandbox):
    sandbox.put_app_credentials(LABEL)
    task_id, argv, env = runner(sandbox)

    started = time.monotonic()
    run = run_process(argv, env, stdin_closed=True, timeout=30)

    assert time.monotonic() - started < 30
    assert run.returncode == 1
    assert "Paste" not in run.stdout and "Open this URL" not in run.stdout
    task = sandbox.maestro.tasks[task_id]
    assert task.finish_status == "FAILED" and (
        "A person must sign in once, on a machine with a browser: botcity-ms365 login "
        "--label") in task.finish_message
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and alert["taskId"] == str(task_id)
    assert f"Maestro credential '{LABEL}' key 'token'" in alert["message"]
    assert "--scopes basic" in alert["message"]


def test_one_alert_per_process_however_often_the_bot_retries(sandbox):
    from botcity.maestro import BotMaestroSDK

    sandbox.put_app_credentials(LABEL)
    task_id, token = sandbox.maestro.start_task()
    maestro = BotMaestroSDK()
    maestro.server, maestro.access_token, maestro.task_id = sandbox.maestro_url, token, task_id
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365",
                                    token_label="retry-label")
    for _ in range(3):
        with pytest.raises(AuthorizationRequired):
            plugin.authenticate()
    assert len(sandbox.maestro.alerts) == 1


def test_device_code_on_a_runner_through_a_maestro_alert(sandbox):
    """The bot on the Runner waits; the operator reads the alert and signs in on a phone."""
    sandbox.app.public_client_flows = True
    sandbox.put_app_credentials(LABEL)
    task_id, argv, env = runner(sandbox, MS365_CONSENT="device_code",
                                MS365_CONSENT_TIMEOUT="30")
    approved: list[str] = []
    stop = threading.Event()

    def operator() -> None:
        end = time.monotonic() + DEADLINE
        while not stop.is_set() and time.monotonic() < end:
            for alert in list(sandbox.maestro.alerts):
                found = re.search(r"open (\S+) and enter the code (\w+)", alert["message"])
                if found and not approved:
                    assert found.group(1) == f"{sandbox.authority_host}/devicelogin"
                    sandbox.tenant.approve_device_code(found.group(2))
                    approved.append(found.group(2))
            time.sleep(0.05)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        run = run_process(argv, env, stdin_closed=True)
    finally:
        stop.set()
        thread.join(timeout=5)

    assert approved, "the alert carried the URL and the code"
    assert run.returncode == 0, run.stdout + run.stderr
    assert sandbox.maestro.tasks[task_id].finish_status == "SUCCESS"
    assert json.loads(sandbox.maestro.secret(LABEL, "token"))["RefreshToken"]


# -- app-only ------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", ["secret", "certificate"])
def test_app_only_survives_two_expiries_in_one_process(sandbox, credential):
    app = {"client_secret": sandbox.app.secret} if credential == "secret" else {
        "client_certificate": sandbox.add_certificate().pem}
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, **app,
                                    tenant_id=sandbox.tenant.tenant_id, auth_flow="app")
    plugin.authenticate()
    directory = plugin.ms365_account.directory()
    upn = sandbox.tenant.user.upn
    assert directory.get_user(upn).user_principal_name == upn

    backend = plugin.ms365_account.con.token_backend
    for _ in range(2):
        sandbox.tenant.expire_access_tokens()
        for entry in backend._cache.get("AccessToken", {}).values():
            entry["expires_on"] = str(int(time.time()) - 60)
        assert directory.get_user(upn).user_principal_name == upn

    grants = sandbox.token_requests("client_credentials")
    assert len(grants) == 3
    assert all(g.form()["scope"] == "https://graph.microsoft.com/.default" for g in grants)
    sent = "client_secret" if credential == "secret" else "client_assertion"
    assert all(sent in g.form() for g in grants)
    if credential == "certificate":
        # msal signs one assertion and sends it again for up to 9 minutes (same jti):
        # Entra ID accepts that (docs/notes/certificates.md), and so must the sandbox
        assert len({g.form()["client_assertion"] for g in grants}) == 1
        assert plugin.credentials[1] == ""  # no secret: the 0.2.0 tuple says so
    assert plugin.ms365_account.con.refresh_count == 3
    assert sandbox.requests("identity", path_contains="/authorize") == []


def test_app_only_needs_a_tenant(sandbox, monkeypatch):
    monkeypatch.delenv("MS365_TENANT_ID")
    with pytest.raises(ConfigurationError, match="auth_flow='app' needs the tenant"):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret, auth_flow="app")
    with pytest.raises(ConfigurationError, match="auth_flow must be"):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret, auth_flow="user")


def test_app_only_with_a_wrong_secret(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, "wrong-secret",
                                    tenant_id=sandbox.tenant.tenant_id, auth_flow="app")
    with pytest.raises(AuthorizationError, match="AADSTS7000215"):
        plugin.authenticate()
