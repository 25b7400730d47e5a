"""Every message of ``errors.MESSAGES``, made to happen as a user meets it, and compared
word for word: its one cause, then its one next step, with the command complete (its
``--label`` and ``--scopes``). docs/troubleshooting.md's table is made from the same
``MESSAGES`` (``tests/test_docs.py`` checks it is current), so the table says what these
tests saw (issue 26).

What varies (a port, a path) is filled in from the test's own sandbox; nothing else is
left out of the comparison."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import requests
from botcity.maestro import BotMaestroSDK

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    MS365CredentialsPlugin,
    Scopes,
    StoreError,
    task_execution,
)
from botcity.plugins.ms365.credentials._maestro import failure
from botcity.plugins.ms365.credentials.errors import MESSAGES, told
from botcity.plugins.ms365.sandbox import Sandbox
from conftest import BOT_SCOPES, bot_env, consent_answerer, run_process

LABEL = "ms365"
SCRIPT = str(Path(sys.executable).with_name("botcity-ms365"))
WITH_MAESTRO = "(with BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace set)"


def made(name: str) -> str:
    """Marks the message a test makes happen (every one of MESSAGES is marked somewhere in
    this file: the last tests check)."""
    return name


def command(label: str = LABEL, scopes: str = "basic", *extra: str) -> str:
    return " ".join(["botcity-ms365 login --label", label, "--scopes", scopes, *extra,
                     WITH_MAESTRO])


def raised(exc: BaseException, name: str, **values: object) -> None:
    """``exc`` is the error of MESSAGES ``name``, word for word."""
    assert type(exc) is MESSAGES[name].raised_as, repr(exc)
    assert str(exc) == told(name, **values)


def maestro_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return bot_env(sandbox, **{"BOTCITY_SERVER": sandbox.maestro_url,
                               "BOTCITY_LOGIN": sandbox.maestro.login,
                               "BOTCITY_KEY": sandbox.maestro.key, **extra})


def app_keys_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    """A developer's machine: the app's keys in the environment too (the usual case)."""
    return maestro_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                       MS365_CLIENT_SECRET=sandbox.app.secret,
                       MS365_TENANT_ID=sandbox.tenant.tenant_id, **extra)


def cli(env: dict[str, str], *args: str, cwd: Path, answer=None):
    return run_process([SCRIPT, *args], env, cwd=cwd, answer=answer,
                       stdin_closed=answer is None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def authorized(sandbox: Sandbox, maestro, scopes=("basic",)) -> None:
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        list(scopes), consent=sandbox.consent_redirect)


# -- the Maestro credential and the app's keys ---------------------------------------------
def test_a_mistyped_label_is_no_such_label_even_with_the_app_keys_in_the_environment(
        sandbox, maestro, monkeypatch, tmp_path):
    """Issue 26, 1: MS365_CLIENT_* set, label ms365-prod (which does not exist)."""
    sandbox.put_app_credentials(LABEL)
    monkeypatch.setenv("MS365_CLIENT_ID", sandbox.app.client_id)
    monkeypatch.setenv("MS365_CLIENT_SECRET", sandbox.app.secret)
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label="ms365-prod", consent="none")
    raised(caught.value, made("no-such-label"), label="ms365-prod", server=sandbox.maestro_url,
           command=f"botcity-ms365 login --label ms365-prod {WITH_MAESTRO}")
    assert "ms365-prod" not in sandbox.maestro.credentials

    # botcity-ms365 status says the same, and only that
    run = cli(app_keys_env(sandbox), "status", "--label", "nope", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == "error: " + told(
        "no-such-label", label="nope", server=sandbox.maestro_url,
        command=f"botcity-ms365 login --label nope {WITH_MAESTRO}") + "\n"


def test_a_credential_holding_only_a_token_has_no_app_keys_on_a_runner(sandbox, maestro,
                                                                        tmp_path):
    sandbox.maestro.put_secret("ms365-prod", "token", "")
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label="ms365-prod")
    raised(caught.value, made("label-without-app-keys"), label="ms365-prod",
           server=sandbox.maestro_url, keys="only the key token")

    # on a developer's machine it works with the environment's keys; status warns
    run = cli(app_keys_env(sandbox), "status", "--label", "ms365-prod", cwd=tmp_path)
    assert "warning: " + told("label-without-app-keys", label="ms365-prod",
                              server=sandbox.maestro_url, keys="only the key token") in (
        run.stderr)


def test_a_token_copied_into_a_credential_without_app_keys_is_warned_of(sandbox, maestro,
                                                                        tmp_path):
    authorized(sandbox, maestro)
    run = cli(maestro_env(sandbox), "copy", "--from", f"maestro:{LABEL}", "--to",
              "maestro:ms365-prod", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "warning: " + told("label-without-app-keys", label="ms365-prod",
                                            server=sandbox.maestro_url,
                                            keys="only the key token") + "\n"


def test_no_app_keys_anywhere(sandbox):
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin()
    raised(caught.value, made("no-app-keys"), searched=(
        "the client_id/client_secret/client_certificate arguments; the environment variables "
        "MS365_CLIENT_ID and MS365_CLIENT_SECRET or MS365_CLIENT_CERTIFICATE"))


# -- botcity-ms365 login never makes a credential a Runner cannot use ---------------------
def test_login_into_a_missing_label_without_app_keys_here_stops(sandbox, tmp_path):
    run = cli(maestro_env(sandbox), "login", "--label", "ms365-prod", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(
        made("login-needs-app-keys"), label="ms365-prod", server=sandbox.maestro_url,
        state="does not exist", command=command("ms365-prod")) + "\n"
    assert "ms365-prod" not in sandbox.maestro.credentials
    assert sandbox.requests("identity") == [], "nobody was asked to sign in"


@pytest.mark.parametrize("answer", [None, "n"], ids=["nobody-at-a-terminal", "says-no"])
def test_login_into_a_missing_label_writes_nothing_unless_told_to(sandbox, tmp_path, answer):
    """Issue 26, 1: following the old message made a credential holding only `token`."""
    said: list[str] = []

    def person(line: str) -> str | None:
        if line.startswith("Maestro credential 'ms365-prod'"):
            said.append(line.strip())
            return answer
        return None

    run = cli(app_keys_env(sandbox), "login", "--label", "ms365-prod", "--scopes", "basic",
              "mail_send", cwd=tmp_path, answer=person if answer else None)
    assert run.returncode == 1
    source = ("this machine's environment (MS365_CLIENT_ID, MS365_CLIENT_SECRET and "
              "MS365_TENANT_ID)")
    assert run.stderr == "error: " + told(
        made("login-declined-app-keys"), label="ms365-prod", server=sandbox.maestro_url,
        state="does not exist", source=source,
        command=command("ms365-prod", "basic mail_send", "--write-app-keys")) + "\n"
    assert "ms365-prod" not in sandbox.maestro.credentials, "no token-only credential"
    assert sandbox.requests("identity") == []
    if answer:
        assert said == [
            f"Maestro credential 'ms365-prod' at {sandbox.maestro_url} does not exist. Write "
            f"client_id, client_secret and tenant_id into it, from {source}, so that Runners "
            "can use it? [y/N]"]


@pytest.mark.parametrize("how", ["yes", "--write-app-keys"])
def test_login_writes_the_app_keys_then_the_token_and_a_runner_uses_them(sandbox, tmp_path,
                                                                         how):
    sandbox.maestro.put_secret("ms365-prod", "token", "")  # a token-only credential of old
    consent = consent_answerer(sandbox)

    def person(line: str) -> str | None:
        return "y" if line.startswith("Maestro credential 'ms365-prod'") else consent(line)

    extra = ["--write-app-keys"] if how == "--write-app-keys" else []
    run = cli(app_keys_env(sandbox), "login", "--label", "ms365-prod", "--scopes",
              *BOT_SCOPES, *extra, cwd=tmp_path, answer=person)
    assert run.returncode == 0, run.stdout + run.stderr
    assert ("Wrote client_id, client_secret and tenant_id to Maestro credential 'ms365-prod', "
            "from this machine's environment (MS365_CLIENT_ID, MS365_CLIENT_SECRET and "
            "MS365_TENANT_ID).") in run.stdout
    keys = {item["key"]: item["value"] for item in sandbox.maestro.credentials["ms365-prod"]}
    assert keys["client_id"] == sandbox.app.client_id
    assert keys["client_secret"] == sandbox.app.secret
    assert keys["tenant_id"] == sandbox.tenant.tenant_id
    assert json.loads(keys["token"])["RefreshToken"]

    # a Runner: none of those variables, only the credential
    task_id, token = sandbox.maestro.start_task("ms365-bot",
                                                {"ms365_credential_label": "ms365-prod"})
    from conftest import BOT

    done = run_process([sys.executable, str(BOT),
                        *sandbox.maestro.runner_argv(task_id, token)], bot_env(sandbox),
                       cwd=BOT.parent, stdin_closed=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox.maestro.tasks[task_id].finish_status == "SUCCESS"


# -- the token --------------------------------------------------------------------------
def test_no_token_yet(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate([Scopes.BASIC, Scopes.MAIL_SEND])
    raised(caught.value, made("no-token"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           command=command(LABEL, "basic mail_send"))
    [alert] = sandbox.maestro.alerts
    assert alert["message"] == str(caught.value)


def test_a_token_without_the_permissions_the_bot_asks_for(sandbox, maestro):
    authorized(sandbox, maestro)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate([Scopes.MAIL_SEND])
    raised(caught.value, made("token-lacks-permissions"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           missing="Mail.Send", command=command(LABEL, "basic mail_send"))
    assert caught.value.missing_permissions == ("Mail.Send",)


def test_a_token_to_replace_with_nobody_here(sandbox, maestro):
    authorized(sandbox, maestro)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate(force=True)
    raised(caught.value, made("token-replaced"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           command=command())


def test_a_revoked_token_says_microsoft_s_reason_and_one_command(sandbox, maestro):
    """Issue 26, 3: one sign-in command, with its --label, and "again", not "once"."""
    authorized(sandbox, maestro, BOT_SCOPES)
    sandbox.force_expiry()
    sandbox.tenant.kill_refresh_tokens("revoked")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate(list(BOT_SCOPES))
    assert str(caught.value) == (
        "Microsoft refused refreshing the access token: invalid_grant (AADSTS70008: the "
        "refresh token expired or was revoked). A person must sign in again, on a machine "
        f"with a browser: {command(LABEL, 'basic mail_send')}.")
    assert caught.value.code == "AADSTS70008"


def test_an_expired_token_without_a_refresh_token(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    stored = json.loads(sandbox.maestro.secret(LABEL, "token"))
    stored["RefreshToken"] = {}
    sandbox.maestro.put_secret(LABEL, "token", json.dumps(stored))
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate()
    raised(caught.value, made("token-expired-no-refresh"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           command=command())


def test_a_refresh_token_of_another_account(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    stored = json.loads(sandbox.maestro.secret(LABEL, "token"))
    for entry in stored["RefreshToken"].values():
        entry["home_account_id"] = "someone.else"
    sandbox.maestro.put_secret(LABEL, "token", json.dumps(stored))
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate()
    raised(caught.value, made("no-refresh-token"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           command=command())


def test_another_bot_was_refused_for_want_of_a_person():
    from conftest import FakeClock
    from test_renewal_rules import Bot, InMemory, expired

    clock = FakeClock()
    shared = InMemory(clock)
    expired(shared)
    claimer, waiter = Bot(shared, clock), Bot(shared, clock)

    def a_person_must_sign_in() -> None:
        raise AuthorizationRequired("Microsoft refused it.", error="invalid_grant",
                                    code="AADSTS50173")

    claimer.refresh = a_person_must_sign_in  # type: ignore[method-assign]
    with pytest.raises(AuthorizationRequired):
        claimer.renew()
    with pytest.raises(AuthorizationRequired) as caught:
        waiter.renew()
    caught.value.complete(command())
    raised(caught.value, made("refused-for-another-bot"), location="memory",
           reason="AADSTS50173: the grant was revoked: an administrator revoked the user's "
                  "sessions, or the user changed or reset their password", command=command())
    assert caught.value.code == "AADSTS50173", "Microsoft's reason, from the other bot's note"


def test_graph_refuses_even_a_renewed_token(sandbox, maestro, monkeypatch):
    authorized(sandbox, maestro)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    monkeypatch.setattr(sandbox.tenant, "access_token", lambda secret: None)  # Graph takes none
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()
    raised(caught.value, made("graph-refused-renewed"),
           location=f"Maestro credential '{LABEL}' key 'token' at {sandbox.maestro_url}",
           why="InvalidAuthenticationToken: IDX14100: JWT is not well formed.",
           command=command())
    [alert] = sandbox.maestro.alerts
    assert alert["message"] == str(caught.value)


def test_a_sign_in_asked_for_with_nobody_here(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.sign_in([Scopes.MAIL_SEND], consent="none")
    raised(caught.value, made("sign-in-unattended"), command=command(LABEL, "basic mail_send"))


def test_nobody_pastes_the_address_in_time(sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("MS365_CONSENT_TIMEOUT", "1")
    read, write = os.pipe()  # a person who never answers
    stdin = os.fdopen(read)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                    token_path=tmp_path)
    try:
        with pytest.raises(AuthorizationRequired) as caught:
            plugin.authenticate(consent="console")
    finally:
        os.close(write)
    raised(caught.value, made("consent-timeout"), timeout="1", command=(
        f"botcity-ms365 login --token-path {tmp_path / 'o365_token.txt'} --scopes basic "
        "(with MS365_CLIENT_ID and MS365_CLIENT_SECRET set)"))


def test_the_console_with_stdin_closed(sandbox, tmp_path):
    """`botcity-ms365 login` run where nobody can type (a script, a scheduler): the
    command to run at a terminal, with its label and scopes."""
    sandbox.put_app_credentials(LABEL)
    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "mail_send",
              cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(made("console-without-stdin"),
                                          command=command(LABEL, "basic mail_send")) + "\n"


def test_a_mistyped_scope_is_told_before_anything_else(sandbox, tmp_path):
    sandbox.put_app_credentials(LABEL)
    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "mail_sned",
              cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == (
        "error: Unknown scope 'mail_sned' (did you mean mail_send?). Use a Scopes member (for "
        "example Scopes.MAIL_READ_WRITE), its name in lower case ('mail_read_write') or a "
        "Microsoft Graph permission such as 'Calendars.ReadWrite'.\n")


def test_status_of_a_credential_without_a_token_says_what_to_run(sandbox, tmp_path):
    sandbox.put_app_credentials(LABEL)
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--scopes", "mail_send",
              cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "problem: " + told(
        "no-token", location=f"Maestro credential '{LABEL}' key 'token' at "
        f"{sandbox.maestro_url}", command=command(LABEL, "basic mail_send")) + "\n"


@pytest.mark.parametrize("subcommand", ["status", "logout", "login", "doctor"])
def test_a_command_without_label_says_that_label_is_required(sandbox, tmp_path, subcommand):
    """Issue 26, 6: it says that --label is required, rather than explaining."""
    run = cli(maestro_env(sandbox), subcommand, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        "botcity-ms365: error: the argument --label is required with a Maestro connection "
        "(--server or BOTCITY_SERVER): it names the credential, such as --label ms365")


def test_stdin_ends_before_the_address(sandbox, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                    token_path=tmp_path)
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate(consent="console")
    raised(caught.value, made("consent-stdin-ended"), command=(
        f"botcity-ms365 login --token-path {tmp_path / 'o365_token.txt'} --scopes basic "
        "(with MS365_CLIENT_ID and MS365_CLIENT_SECRET set)"))


# -- BotCity Maestro: each way it fails, told apart --------------------------------------
def test_maestro_refuses_the_connection(sandbox, tmp_path):
    """Issue 26, 2: a refused connection is not an HTTP 500, and says what to check."""
    server = f"http://127.0.0.1:{free_port()}"
    run = cli(maestro_env(sandbox, BOTCITY_SERVER=server), "status", "--label", LABEL,
              cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(made("maestro-refused-connection"),
                                          server=server) + "\n"


def test_maestro_s_host_name_does_not_resolve():
    """Unit: no test may ask a DNS server, so the error is the one requests raises."""
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    reason = NameResolutionError("maestro.invalid", None, OSError("Name or service not known"))
    exc = requests.ConnectionError(MaxRetryError(None, "/api/v2/maestro/version", reason))
    raised(failure(exc, server="https://maestro.invalid", doing="the login"),
           made("maestro-unknown-host"), server="https://maestro.invalid")


def test_maestro_s_certificate_is_not_trusted(sandbox, tmp_path):
    """A Maestro over HTTPS whose CA this machine does not trust (only the public CAs)."""
    with Sandbox(maestro_tls=True) as tls:
        env = {**maestro_env(tls), "REQUESTS_CA_BUNDLE": requests.certs.where()}
        run = cli(env, "status", "--label", LABEL, cwd=tmp_path)
        assert run.returncode == 1
        assert run.stderr == "error: " + told(made("maestro-untrusted"),
                                              server=tls.maestro_url) + "\n"


def test_maestro_drops_the_connection(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.fail_maestro(times=1, status=0)
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    raised(caught.value, made("maestro-dropped"), server=sandbox.maestro_url,
           error="RemoteDisconnected: Remote end closed connection without response")


def test_maestro_answers_too_slowly(sandbox, maestro, monkeypatch):
    monkeypatch.setenv("MS365_HTTP_TIMEOUT", "1")
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(200, path_contains="/api/v2/credential/", delay=3.0)
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    raised(caught.value, made("maestro-slow"), server=sandbox.maestro_url,
           doing=f"the read of credential '{LABEL}'", seconds="1")


def test_maestro_answers_5xx_to_the_login(sandbox, tmp_path):
    sandbox.maestro.fail_next(503, times=2, path_contains="/api/v2/")  # version and login
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(made("maestro-failing"), server=sandbox.maestro_url,
                                          status=503, doing="the login") + "\n"


def test_maestro_answers_5xx_to_a_credential_read(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{LABEL}", method="GET")
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    raised(caught.value, made("maestro-failing-read"), server=sandbox.maestro_url, status=500,
           label=LABEL)


def test_maestro_refuses_the_login_s_key(sandbox, tmp_path):
    run = cli(maestro_env(sandbox, BOTCITY_KEY="wrong-key"), "status", "--label", LABEL,
              cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(made("maestro-refused-login"),
                                          server=sandbox.maestro_url, user="sandbox",
                                          status=401) + "\n"


def test_maestro_refuses_a_logged_in_sdk_s_token(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.expire_tokens()
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    raised(caught.value, made("maestro-refused-key"), server=sandbox.maestro_url,
           user="sandbox", doing=f"the read of credential '{LABEL}'", status=401)
    assert caught.value.status == 401


def test_maestro_refuses_a_runner_s_token(sandbox, monkeypatch):
    sandbox.put_app_credentials(LABEL)
    task_id, token = sandbox.maestro.start_task()
    monkeypatch.setattr(sys, "argv", ["bot.py", *sandbox.maestro.runner_argv(task_id, token)])
    runner = BotMaestroSDK.from_sys_args()
    sandbox.maestro.expire_tokens()
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=runner, credential_label=LABEL)
    raised(caught.value, made("maestro-refused-runner"), server=sandbox.maestro_url,
           task=task_id, doing=f"the read of credential '{LABEL}'", status=401)


def test_an_address_that_is_not_maestro_s(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(200, path_contains=f"/credential/{LABEL}",
                              html="<html><body>Sign in to the proxy</body></html>")
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    raised(caught.value, made("maestro-not-maestro"), server=sandbox.maestro_url,
           doing=f"the read of credential '{LABEL}'", what="not the JSON Maestro sends")


def test_an_sdk_that_was_never_logged_in():
    """Unit: the SDK's own check, as it raises it."""
    exc = RuntimeError("Access Token not available. Make sure to invoke login first.")
    raised(failure(exc, server="https://developers.botcity.dev",
                   doing="the read of credential 'ms365'"),
           made("maestro-not-logged-in"), doing="the read of credential 'ms365'",
           error="Access Token not available. Make sure to invoke login first")


def test_a_maestro_older_than_3_cannot_change_a_key(sandbox):
    with Sandbox(maestro_version="2.4.0") as old:
        old.put_app_credentials(LABEL)
        old.maestro.put_secret(LABEL, "token", "x")
        from botcity.plugins.ms365.credentials._maestro import MaestroVault

        with pytest.raises(StoreError) as caught:
            MaestroVault(old.maestro_sdk()).write(LABEL, "token", "y")
        raised(caught.value, made("maestro-too-old"), server=old.maestro_url,
               version="2.4.0", key="token", label=LABEL)


def test_a_task_maestro_does_not_know(sandbox, monkeypatch):
    task_id, token = sandbox.maestro.start_task()
    argv = sandbox.maestro.runner_argv(task_id, token)
    argv[1] = "999"
    monkeypatch.setattr(sys, "argv", ["bot.py", *argv])
    with pytest.raises(StoreError) as caught:
        task_execution(BotMaestroSDK.from_sys_args())
    raised(caught.value, made("maestro-no-task"), server=sandbox.maestro_url, task="999")


def test_task_execution_tells_a_refused_connection_apart_from_a_5xx(sandbox, monkeypatch):
    """Issue 26, 2: what bot_example's start meets when Maestro is down, or failing."""
    task_id, token = sandbox.maestro.start_task()
    monkeypatch.setattr(sys, "argv", ["bot.py", *sandbox.maestro.runner_argv(task_id, token)])
    maestro = BotMaestroSDK.from_sys_args()
    assert task_execution(maestro).task_id == str(task_id)
    sandbox.maestro.fail_next(500, path_contains=f"/api/v2/task/{task_id}")
    with pytest.raises(StoreError) as caught:
        task_execution(maestro)
    raised(caught.value, "maestro-failing", server=sandbox.maestro_url, status=500,
           doing=f"the read of task {task_id}")
    maestro.server = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreError) as caught:
        task_execution(maestro)
    raised(caught.value, "maestro-refused-connection", server=maestro.server)


# -- the table itself ----------------------------------------------------------------------
def test_every_message_of_the_table_is_made_to_happen_above():
    """Every entry of MESSAGES is made to happen by a test of this file, so
    docs/troubleshooting.md's table lists what users meet, word for word."""
    made_here = re.findall(r'made\("([\w-]+)"\)', Path(__file__).read_text(encoding="utf-8"))
    assert set(MESSAGES) - set(made_here) == set(), "a message no test makes happen"
    assert len(made_here) == len(set(made_here)), "each is made by one test"


def test_every_message_is_one_cause_then_one_step():
    for name, said in MESSAGES.items():
        assert issubclass(said.raised_as, MS365CredentialsError), name
        for part in (said.cause, said.step):
            assert part.endswith("."), (name, part)
            # one sentence: no full stop inside but in names, addresses and parentheses
            inside = part[:-1].replace("Dev. Environment", "Dev Environment")
            assert ". " not in inside.replace("e.g. ", ""), (name, part)
        assert said.step.count("{command}") <= 1, name
        assert "botcity-ms365 login." not in said.step, name  # the whole command, or none
