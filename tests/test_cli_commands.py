"""``botcity-ms365 login/status/logout/copy/migrate``, run as a person runs them."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials.errors import told
from botcity.plugins.ms365.sandbox import expire_token_text
from conftest import DEADLINE, bot_env, consent_answerer, newest_token, run_process

LABEL = "ms365"
SCRIPT = str(Path(sys.executable).with_name("botcity-ms365"))


def maestro_env(sandbox, **extra):
    connection = {"BOTCITY_SERVER": sandbox.maestro_url, "BOTCITY_LOGIN": sandbox.maestro.login,
                  "BOTCITY_KEY": sandbox.maestro.key}
    return bot_env(sandbox, **{**connection, **extra})


def file_env(sandbox, **extra):
    return bot_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                   MS365_CLIENT_SECRET=sandbox.app.secret, **extra)


def cli(env, *args, cwd, answer=None):
    return run_process([SCRIPT, *args], env, cwd=cwd, answer=answer,
                       stdin_closed=answer is None)


@pytest.fixture
def logged_in(sandbox, tmp_path):
    """A token in Maestro, stored by ``botcity-ms365 login``."""
    sandbox.put_app_credentials(LABEL)
    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "mail_read",
              cwd=tmp_path, answer=consent_answerer(sandbox))
    assert run.returncode == 0, run.stdout + run.stderr
    return run


# -- login ---------------------------------------------------------------------------------


def test_login_into_maestro(sandbox, logged_in):
    out = logged_in.stdout
    assert f"Signed in as {sandbox.tenant.user.upn}." in out
    assert "Permissions granted: Mail.Read, User.Read." in out
    assert f"Token stored in Maestro credential '{LABEL}' key 'token'" in out
    assert json.loads(newest_token(sandbox, LABEL))["RefreshToken"]
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret


def test_login_into_a_file(sandbox, tmp_path):
    run = cli(file_env(sandbox), "login", "--token-path", "tokens/bot.json", "--scopes",
              "files_read_write_all", "Calendars.Read", cwd=tmp_path,
              answer=consent_answerer(sandbox))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Permissions granted: Calendars.Read, Files.ReadWrite.All, User.Read." in run.stdout
    assert json.loads((tmp_path / "tokens" / "bot.json").read_text())["RefreshToken"]


def test_login_with_device_code_quietly(sandbox, tmp_path):
    sandbox.app.public_client_flows = True
    sandbox.put_app_credentials(LABEL)
    stop = threading.Event()

    def phone() -> None:
        end = time.monotonic() + DEADLINE
        while not stop.is_set() and time.monotonic() < end:
            for code in list(sandbox.tenant.device_codes.values()):
                if code.state == "pending":
                    sandbox.tenant.approve_device_code(code.user_code)
            time.sleep(0.05)

    threading.Thread(target=phone, daemon=True).start()
    try:
        run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--consent", "device_code",
                  "--quiet", cwd=tmp_path)
    finally:
        stop.set()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "enter the code" in run.stdout  # the person still sees what to do
    assert "Permissions granted" not in run.stdout
    assert "waiting for the sign-in" not in run.stderr
    assert len(sandbox.maestro.alerts) == 1


def test_login_shows_what_it_waits_for_and_a_countdown(sandbox, tmp_path):
    sandbox.app.public_client_flows = True
    sandbox.put_app_credentials(LABEL)
    stop = threading.Event()

    def phone() -> None:  # the person signs in after a little while
        end = time.monotonic() + DEADLINE
        while not stop.is_set() and time.monotonic() < end:
            for code in list(sandbox.tenant.device_codes.values()):
                if code.state == "pending" and time.time() > code.expires_at - 900 + 1.5:
                    sandbox.tenant.approve_device_code(code.user_code)
            time.sleep(0.05)

    threading.Thread(target=phone, daemon=True).start()
    try:
        run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--consent", "device_code",
                  cwd=tmp_path)
    finally:
        stop.set()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Waiting for the sign-in..." in run.stdout
    assert re.search(r"waiting for the sign-in: \d+:\d\d left", run.stderr)
    assert "\x1b" not in run.stderr + run.stdout, "no ANSI escapes (old Windows consoles)"


def test_login_with_a_wrong_maestro_key(sandbox, tmp_path):
    env = maestro_env(sandbox, BOTCITY_KEY="wrong-key")
    run = cli(env, "login", "--label", LABEL, cwd=tmp_path)
    assert run.returncode == 1
    assert "refused the login 'sandbox'" in run.stderr and "wrong-key" not in run.stderr


def test_maestro_down_at_login_is_not_called_a_wrong_key(sandbox, tmp_path):
    sandbox.maestro.fail_next(503, times=2, path_contains="/api/v2/")  # version and login
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, cwd=tmp_path)
    assert run.returncode == 1
    assert "answered HTTP 503 to the login: it is failing or overloaded" in run.stderr
    assert "refused the login" not in run.stderr


def test_login_with_an_unknown_label_and_no_app_keys_here_stops(sandbox, tmp_path):
    run = cli(maestro_env(sandbox), "login", "--label", "nope", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == "error: " + told(
        "login-needs-app-keys", label="nope", server=sandbox.maestro_url,
        state="does not exist", command="botcity-ms365 login --label nope --scopes basic "
        "(with BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace set)") + "\n"
    assert "nope" not in sandbox.maestro.credentials


@pytest.mark.parametrize(
    "args",
    [["login"], ["login", "--label", LABEL, "--scopes"], ["copy", "--from", "x:y",
                                                          "--to", "file:t"]],
    ids=["maestro-without-label", "scopes-without-values", "bad-spec"],
)
def test_usage_errors_exit_2(sandbox, tmp_path, args):
    assert cli(maestro_env(sandbox), *args, cwd=tmp_path).returncode == 2


def test_half_a_maestro_connection_is_a_usage_error(sandbox, tmp_path):
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url)
    run = cli(env, "status", "--label", LABEL, cwd=tmp_path)
    assert run.returncode == 2 and "server, login and key together" in run.stderr


# -- status --------------------------------------------------------------------------------


def test_status_reads_without_contacting_microsoft(sandbox, logged_in, tmp_path):
    sandbox.requests.clear()
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--scopes", "mail_read",
              cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Account:        {sandbox.tenant.user.upn}" in run.stdout
    assert "Permissions:    Mail.Read, User.Read" in run.stdout
    assert "dies if unused after" in run.stdout and "(in 90 days)" in run.stdout
    assert "Requested:      Mail.Read, User.Read: all covered" in run.stdout
    assert sandbox.requests("identity") == []


def test_status_json_and_missing_permissions(sandbox, logged_in, tmp_path):
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--json", "--scopes",
              "files_read", "mail_read", cwd=tmp_path)
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["ok"] is False and report["missing"] == ["Files.Read.All"]
    assert report["account"] == sandbox.tenant.user.upn
    assert "the token lacks Files.Read.All" in run.stderr
    assert not any(len(str(v)) > 200 for v in report.values()), "no token in the report"


def test_status_check_refreshes_and_writes_back(sandbox, logged_in, tmp_path):
    before = newest_token(sandbox, LABEL)
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--check", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the refresh token works" in run.stdout
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert newest_token(sandbox, LABEL) != before


def test_status_check_finds_a_dead_refresh_token(sandbox, logged_in, tmp_path):
    sandbox.tenant.kill_refresh_tokens("inactive")
    quick = cli(maestro_env(sandbox), "status", "--label", LABEL, cwd=tmp_path)
    assert quick.returncode == 0, "without --check Microsoft is not asked"
    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--check", cwd=tmp_path)
    assert run.returncode == 1
    assert "rejected by Microsoft (AADSTS700082)" in run.stdout
    assert "90 days without use" in run.stderr


def test_status_without_a_token(sandbox, tmp_path):
    run = cli(file_env(sandbox), "status", cwd=tmp_path)
    assert run.returncode == 1
    assert "(none)" in run.stdout and "No token is stored in file" in run.stderr


# -- logout and copy -------------------------------------------------------------------------


def test_logout_removes_only_the_token_key(sandbox, logged_in, tmp_path):
    run = cli(maestro_env(sandbox), "logout", "--label", LABEL, cwd=tmp_path)
    assert run.returncode == 0 and "Removed the token" in run.stdout
    assert [i["key"] for i in sandbox.maestro.credentials[LABEL]] == ["client_id",
                                                                      "client_secret",
                                                                      "tenant_id"]
    again = cli(maestro_env(sandbox), "logout", "--label", LABEL, cwd=tmp_path)
    assert again.returncode == 0 and "No token was stored" in again.stdout


def test_copy_a_local_token_to_maestro_and_back(sandbox, tmp_path):
    local = cli(file_env(sandbox), "login", "--scopes", "mail_send", cwd=tmp_path,
                answer=consent_answerer(sandbox))
    assert local.returncode == 0, local.stderr
    up = cli(maestro_env(sandbox), "copy", "--from", "file:o365_token.txt", "--to",
             f"maestro:{LABEL}", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert (f"Copied the token of {sandbox.tenant.user.upn} (Mail.Send, User.Read)"
            in up.stdout)
    def tokens(text):
        return {k: v for k, v in json.loads(text).items() if k != "botcity"}

    uploaded = newest_token(sandbox, LABEL)
    assert tokens(uploaded) == tokens((tmp_path / "o365_token.txt").read_text()), "unchanged"
    # a copy is written as a sign-in is: a generation never below the time it was made
    assert json.loads(uploaded)["botcity"]["generation"] >= int(time.time()) - 60, (
        "the newest in Maestro")

    down = cli(maestro_env(sandbox), "copy", "--from", f"maestro:{LABEL}", "--to",
               "file:copy.json", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert tokens((tmp_path / "copy.json").read_text()) == tokens(uploaded)


def test_copy_refuses_a_broken_token(sandbox, tmp_path):
    (tmp_path / "broken.txt").write_text('{"access_token": "x", "refresh_token": "y"}')
    run = cli(maestro_env(sandbox), "copy", "--from", "file:broken.txt", "--to",
              f"maestro:{LABEL}", cwd=tmp_path)
    assert run.returncode == 1 and "O365 1.x format" in run.stderr
    assert LABEL not in sandbox.maestro.credentials


def test_copy_to_maestro_needs_a_connection(sandbox, tmp_path):
    run = cli(file_env(sandbox), "copy", "--from", "file:a", "--to", "maestro:x", cwd=tmp_path)
    assert run.returncode == 2 and "needs a Maestro connection" in run.stderr


# -- migrate -------------------------------------------------------------------------------


def o365_1x_file(sandbox, tmp_path) -> Path:
    """A token file as O365 1.x wrote it, holding a refresh token Microsoft still honours."""
    current = cli(file_env(sandbox), "login", "--token-path", "seed.json", "--scopes",
                  "mail_read", cwd=tmp_path, answer=consent_answerer(sandbox))
    assert current.returncode == 0, current.stderr
    cache = json.loads((tmp_path / "seed.json").read_text())
    [refresh] = cache["RefreshToken"].values()
    path = tmp_path / "o365_token.txt"
    path.write_text(json.dumps({
        "token_type": "Bearer", "scope": ["https://graph.microsoft.com/Mail.Read",
                                          "https://graph.microsoft.com/User.Read",
                                          "offline_access"],
        "expires_in": 3599, "ext_expires_in": 3599, "access_token": "eyJ0eXAiOi.old",
        "refresh_token": refresh["secret"], "expires_at": 1600000000.0}))
    return path


def test_migrate_an_o365_1x_file(sandbox, tmp_path):
    path = o365_1x_file(sandbox, tmp_path)
    original = path.read_text()

    run = cli(file_env(sandbox), "migrate", "o365_token.txt", cwd=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{sandbox.tenant.user.upn}, Mail.Read, User.Read" in run.stdout
    assert (tmp_path / "o365_token.txt.1x-backup").read_text() == original
    migrated = json.loads(path.read_text())
    assert migrated["RefreshToken"] and migrated["botcity"]["account"] == sandbox.tenant.user.upn
    status = cli(file_env(sandbox), "status", "--scopes", "mail_read", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json at all", "not JSON"), ('{"hello": 1}', "has no refresh_token"),
     ("[1, 2]", "has no refresh_token")],
)
def test_migrate_refuses_what_is_not_a_token_file(sandbox, tmp_path, content, message):
    path = tmp_path / "o365_token.txt"
    path.write_text(content)
    run = cli(file_env(sandbox), "migrate", "o365_token.txt", cwd=tmp_path)
    assert run.returncode == 1 and message in run.stderr
    assert path.read_text() == content


def test_migrate_with_a_dead_refresh_token_leaves_the_file(sandbox, tmp_path):
    path = o365_1x_file(sandbox, tmp_path)
    original = path.read_text()
    sandbox.tenant.kill_refresh_tokens("password_reset")
    run = cli(file_env(sandbox), "migrate", "o365_token.txt", cwd=tmp_path)
    assert run.returncode == 1
    assert "AADSTS50173" in run.stderr and "is unchanged" in run.stderr
    assert path.read_text() == original


def test_migrate_a_current_file_does_nothing(sandbox, tmp_path):
    path = o365_1x_file(sandbox, tmp_path)
    (tmp_path / "seed.json").replace(path)
    before = path.read_text()
    run = cli(file_env(sandbox), "migrate", "o365_token.txt", cwd=tmp_path)
    assert run.returncode == 0 and "already in the current format" in run.stdout
    assert path.read_text() == before


# -- the message a Runner gives points at login ----------------------------------------------


def test_the_unattended_error_names_the_login_command(sandbox, tmp_path):
    from botcity.plugins.ms365.credentials import AuthorizationRequired, MS365CredentialsPlugin

    sandbox.put_app_credentials(LABEL)
    maestro = sandbox.maestro_sdk()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate(["mail_read"], consent="none")
    assert ("botcity-ms365 login --label ms365 --scopes basic mail_read (with "
            "BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY") in str(caught.value)

    # ...and that command, run as printed, fixes it
    run = cli(maestro_env(sandbox), "login", "--label", "ms365", "--scopes", "basic",
              "mail_read", cwd=tmp_path, answer=consent_answerer(sandbox))
    assert run.returncode == 0, run.stderr
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL).authenticate(
        ["mail_read"], consent="none")


def test_expire_helper_only_touches_access_tokens(sandbox, logged_in):
    stored = json.loads(newest_token(sandbox, LABEL))
    expired = json.loads(expire_token_text(json.dumps(stored)))
    assert expired["RefreshToken"] == stored["RefreshToken"]


def test_an_account_name_a_windows_code_page_cannot_print(sandbox, tmp_path):
    """stdout redirected on Windows uses the ANSI code page (cp1252): the command prints
    what it can instead of crashing."""
    sandbox.tenant.signing_in = sandbox.tenant.add_user(
        "łukasz.źdźbło@contoso.onmicrosoft.com", "Łukasz")  # none of ł, ź in cp1252
    env = file_env(sandbox, PYTHONIOENCODING="cp1252")
    login = cli(env, "login", "--scopes", "basic", cwd=tmp_path,
                answer=consent_answerer(sandbox))
    status = cli(env, "status", cwd=tmp_path)
    for run in (login, status):
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    assert "Account:        ?ukasz.?d?b?o@contoso.onmicrosoft.com" in status.stdout
