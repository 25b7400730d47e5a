"""Whether a stored token can be used, and what happens when it cannot."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    MS365CredentialsPlugin,
    Scopes,
)
from botcity.plugins.ms365.credentials.consent import choose_mode, is_unattended
from botcity.plugins.ms365.credentials.settings import Settings
from botcity.plugins.ms365.sandbox import expire_token_text


def authorized_file(sandbox, tmp_path, scopes=(Scopes.MAIL_READ,)):
    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret).authenticate(
        list(scopes), consent=sandbox.consent_redirect)
    return tmp_path / "o365_token.txt"


def same_token(text: str, other: str) -> bool:
    """The same tokens, and the same ``botcity`` entry."""
    return json.loads(text) == json.loads(other)


def expire(sandbox, token_file):
    token_file.write_text(expire_token_text(token_file.read_text()))
    sandbox.tenant.expire_access_tokens()


def test_missing_permissions_consent_again_for_the_union(sandbox, tmp_path):
    authorized_file(sandbox, tmp_path)
    sandbox.requests.clear()
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    plugin.authenticate([Scopes.FILES_READ], consent=sandbox.consent_redirect)

    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    asked = {s.rsplit("/", 1)[-1] for s in authorize.query["scope"].split()}
    assert asked == {"User.Read", "Mail.Read", "Files.Read.All", "openid", "profile",
                     "offline_access"}


def test_missing_permissions_unattended(sandbox, tmp_path):
    token_file = authorized_file(sandbox, tmp_path)
    stored = token_file.read_text()
    sandbox.requests.clear()
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate([Scopes.FILES_READ, Scopes.MAIL_READ], consent="none")

    assert caught.value.missing_permissions == ("Files.Read.All",)
    assert "lacks the permissions Files.Read.All." in str(caught.value)
    assert token_file.read_text() == stored
    assert sandbox.requests("identity", path_contains="/authorize") == []


def test_held_permissions_ask_nothing(sandbox, tmp_path):
    authorized_file(sandbox, tmp_path, scopes=(Scopes.MAIL_READ_WRITE,))
    sandbox.requests.clear()
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate([Scopes.MAIL_SEND, "Mail.ReadWrite"], consent="none")
    assert sandbox.requests("identity") == []


@pytest.mark.parametrize("how,code", [("revoked", "AADSTS70008"),
                                      ("inactive", "AADSTS700082"),
                                      ("password_reset", "AADSTS50173"),
                                      ("consent_revoked", "AADSTS65001")])
def test_a_rejected_refresh_token_is_not_authenticated_and_is_kept(
    sandbox, tmp_path, how, code
):
    token_file = authorized_file(sandbox, tmp_path)
    expire(sandbox, token_file)
    sandbox.tenant.kill_refresh_tokens(how)
    stored = token_file.read_text()
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    assert plugin.is_authenticated is False
    assert plugin.is_authenticated is False
    assert len(sandbox.token_requests("refresh_token")) == 1, "asked Microsoft once"
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate([Scopes.MAIL_READ], consent="none")
    assert caught.value.code == code
    assert same_token(token_file.read_text(), stored), "the dead token stays for an operator"

    # a person consents again: the token is replaced and usable
    plugin.authenticate([Scopes.MAIL_READ], consent=sandbox.consent_redirect)
    assert plugin.is_authenticated is True
    assert token_file.read_text() != stored


def test_a_rejected_refresh_token_seen_first_by_a_graph_call(sandbox, tmp_path):
    token_file = authorized_file(sandbox, tmp_path)
    expire(sandbox, token_file)
    sandbox.tenant.kill_refresh_tokens("inactive")
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    with pytest.raises(AuthorizationRequired, match="AADSTS700082"):
        plugin.ms365_account.get_current_user_data()
    assert plugin.is_authenticated is False
    assert len(sandbox.token_requests("refresh_token")) == 1


class FakeMaestro:
    def __init__(self, task_id):
        self.task_id = task_id


@pytest.mark.parametrize(
    ("maestro", "environ", "stdin", "expected"),
    [
        (None, {}, "tty-like", False),
        (FakeMaestro(0), {}, "tty-like", False),  # from_sys_args() without a Runner
        (FakeMaestro("17"), {}, "tty-like", True),  # started by a Runner
        (None, {"MS365_CONSENT": "none"}, "tty-like", True),
        (None, {}, None, True),
        (None, {}, "closed", True),
        (None, {}, "devnull", True),
        (None, {}, "pipe", False),  # an IDE's Run window
    ],
)
def test_unattended_detection(maestro, environ, stdin, expected, tmp_path):
    if stdin == "tty-like":
        stream = io.StringIO()
    elif stdin == "closed":
        stream = io.StringIO()
        stream.close()
    elif stdin == "devnull":
        stream = open(os.devnull)  # noqa: SIM115
    elif stdin == "pipe":
        read, write = os.pipe()
        stream = os.fdopen(read)
    else:
        stream = None
    try:
        configured = Settings.from_environ(environ).consent
        assert is_unattended(maestro, stream, consent=configured) is expected
        assert choose_mode(configured or None, maestro, stream) == ("none" if expected
                                                                    else "console")
    finally:
        if stream is not None:
            stream.close()
        if stdin == "pipe":
            os.close(write)


def test_explicit_consent_wins_over_detection():
    assert choose_mode("none", None, sys.stdin) == "none"
    configured = Settings.from_environ({"MS365_CONSENT": "console"}).consent
    assert choose_mode(configured, None, io.StringIO()) == "console"
    handler = lambda url: url  # noqa: E731
    assert choose_mode(handler, FakeMaestro(5), None) is handler


def test_a_refresh_token_rejected_during_a_run_raises_and_alerts_maestro_once(sandbox,
                                                                            maestro):
    sandbox.put_app_credentials("ms365")
    MS365CredentialsPlugin(maestro=maestro, credential_label="ms365").authenticate(
        [Scopes.MAIL_READ], consent=sandbox.consent_redirect)
    sandbox.force_expiry()
    sandbox.tenant.kill_refresh_tokens("revoked")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")

    with pytest.raises(AuthorizationRequired, match="AADSTS70008") as caught:
        plugin.ms365_account.get_current_user_data()  # the bot's own Graph call

    [alert] = sandbox.maestro.alerts
    said = ("Microsoft refused refreshing the access token: invalid_grant (AADSTS70008: the "
            "refresh token expired or was revoked). A person must sign in again, on a machine "
            "with a browser: botcity-ms365 login --label ms365 --scopes basic mail_read (with "
            "BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace set).")
    assert alert["message"] == said
    assert str(caught.value) == said, "the bot's error names the whole command too"
    assert plugin.is_authenticated is False
    with pytest.raises(AuthorizationRequired):
        plugin.authenticate(consent="none")
    assert len(sandbox.maestro.alerts) == 1, "one alert per process"


def test_a_consent_to_more_permissions_leaves_one_token_a_new_process_reads_whole(
        sandbox, tmp_path):
    """msal keys a refresh token by its permissions: a second consent, to more, would leave
    the first beside it, and O365 reads the first it finds; a new process (a Runner's next
    start) would then say the token lacks what was just granted. A sign-in keeps only the
    tokens it was given."""
    first = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                   token_path=tmp_path)
    first.authenticate([Scopes.FILES_READ_WRITE_ALL], consent=sandbox.consent_redirect)
    first.authenticate([Scopes.MAIL_READ_WRITE], consent=sandbox.consent_redirect)
    stored = json.loads((tmp_path / "o365_token.txt").read_text())
    assert len(stored["RefreshToken"]) == len(stored["AccessToken"]) == 1
    [entry] = stored["RefreshToken"].values()
    assert {"Files.ReadWrite.All", "Mail.ReadWrite", "Mail.Send"} <= set(entry["target"].split())

    later = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                   token_path=tmp_path)
    later.authenticate([Scopes.FILES_READ_WRITE_ALL, Scopes.MAIL_READ_WRITE], consent="none")
    assert later.is_authenticated
