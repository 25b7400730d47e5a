"""Bad input gets a clear error of the plugin's own types, and the stored token is never
replaced by a broken or empty one."""

from __future__ import annotations

import json

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    MS365CredentialsPlugin,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    TokenFormatError,
)
from botcity.plugins.ms365.credentials.errors import MESSAGES, told
from botcity.plugins.ms365.sandbox import expire_token_text
from conftest import bot_env, run_process, script

LABEL = "ms365"

# -- where the app credentials come from ----------------------------------------------


def test_nothing_found_names_every_place_searched(sandbox):
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(credential_label="ms365")  # Maestro not connected
    assert str(caught.value) == told(
        "no-app-keys", searched="the client_id/client_secret/client_certificate arguments; "
        "Maestro credential 'ms365' (skipped: Maestro is not connected); the environment "
        "variables MS365_CLIENT_ID and MS365_CLIENT_SECRET or MS365_CLIENT_CERTIFICATE")


@pytest.mark.parametrize("environment", [False, True], ids=["alone", "with-app-keys-in-env"])
def test_a_label_the_workspace_lacks_is_no_such_label_whatever_the_environment(
        sandbox, maestro, monkeypatch, environment):
    """A mistyped label is told as such, even on a developer's machine whose environment
    holds the app's keys (which would otherwise have made a token-only credential)."""
    if environment:
        monkeypatch.setenv("MS365_CLIENT_ID", sandbox.app.client_id)
        monkeypatch.setenv("MS365_CLIENT_SECRET", sandbox.app.secret)
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label="missing-label")
    assert str(caught.value) == told(
        "no-such-label", label="missing-label", server=sandbox.maestro_url,
        command="botcity-ms365 login --label missing-label (with BOTCITY_SERVER, "
                "BOTCITY_LOGIN and BOTCITY_KEY of this workspace set)")
    assert "missing-label" not in sandbox.maestro.credentials


def test_label_with_only_a_client_id(sandbox, maestro):
    sandbox.maestro.put_secret(LABEL, "client_id", sandbox.app.client_id)
    with pytest.raises(ConfigurationError, match="client_id is set but client_secret or "
                       "client_certificate is missing"):
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)


def test_only_one_argument(sandbox):
    with pytest.raises(ConfigurationError,
                       match="The arguments: client_id is set but client_secret or "
                             "client_certificate is missing"):
        MS365CredentialsPlugin(client_id=sandbox.app.client_id)


def test_environment_is_the_last_source(sandbox, maestro, monkeypatch, caplog):
    """A credential without the app's keys (a token alone) works on a machine whose
    environment has them, with a warning that a Runner cannot use it."""
    monkeypatch.setenv("MS365_CLIENT_ID", sandbox.app.client_id)
    monkeypatch.setenv("MS365_CLIENT_SECRET", sandbox.app.secret)
    monkeypatch.setenv("MS365_TENANT_ID", "contoso.onmicrosoft.com")
    sandbox.maestro.put_secret("token-only", "token", "")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="token-only")
    assert plugin.credentials == (sandbox.app.client_id, sandbox.app.secret)
    assert plugin.ms365_account.con.tenant_id == "contoso.onmicrosoft.com"
    assert "A Runner, which has no such variables, cannot use this credential" in caplog.text


def test_a_label_without_app_keys_on_a_runner(sandbox, maestro):
    sandbox.maestro.put_secret("token-only", "token", "")
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label="token-only")
    assert str(caught.value) == told("label-without-app-keys", label="token-only",
                                     server=sandbox.maestro_url, keys="only the key token")


@pytest.mark.parametrize("label", ["a/b", "a?b", "a#b", "with space", ""])
def test_labels_that_would_break_the_url(sandbox, maestro, label):
    with pytest.raises(ConfigurationError, match="Invalid Maestro credential label"):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                               maestro=maestro, token_label=label or None,
                               credential_label=label or "x/")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"authority_host": "http://login.microsoftonline.com"}, "authority_host must be"),
        ({"graph_url": "graph.microsoft.com"}, "graph_url must be"),
        ({"maestro": "https://maestro"}, "maestro must be a BotMaestroSDK"),
    ],
)
def test_malformed_arguments(sandbox, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret, **kwargs)


def test_unknown_consent_way(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(ConfigurationError, match="Unknown consent way 'telepathy'"):
        plugin.authenticate(consent="telepathy")


# -- the token is missing ---------------------------------------------------------------


def test_missing_token_key_unattended(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert plugin.is_authenticated is False
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.authenticate(["Mail.Read"], consent="none")
    assert f"Maestro credential '{LABEL}' key 'token'" in str(caught.value)
    assert caught.value.missing_permissions == ("Mail.Read", "User.Read")
    assert sandbox.maestro.secret(LABEL, "token") is None


# -- Maestro fails ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "name", "values"),
    [
        ({"status": 401}, "maestro-refused-key",
         {"user": "sandbox", "doing": f"the read of credential '{LABEL}'", "status": 401}),
        ({"status": 500}, "maestro-failing-read", {"label": LABEL, "status": 500}),
        ({"status": 0, "drop": True}, "maestro-dropped",
         {"error": "RemoteDisconnected: Remote end closed connection without response"}),
        ({"status": 200, "delay": 2.0}, "maestro-slow",
         {"doing": f"the read of credential '{LABEL}'", "seconds": "0.5"}),
    ],
    ids=["401", "500", "dropped", "timeout"],
)
def test_maestro_failing_at_start(sandbox, maestro, fault, name, values):
    sandbox.put_app_credentials(LABEL)
    maestro.timeout = 0.5
    sandbox.maestro.fail_next(path_contains="/api/v2/credential/", **fault)
    with pytest.raises(StoreError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert str(caught.value) == told(name, server=sandbox.maestro_url, **values)
    assert type(caught.value) is MESSAGES[name].raised_as
    assert maestro.access_token not in str(caught.value)


def authorized(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    return sandbox.maestro.secret(LABEL, "token")


def test_maestro_older_than_3_cannot_update_a_key(sandbox):
    from botcity.plugins.ms365.sandbox import Sandbox

    with Sandbox(maestro_version="2.4.0") as old:
        import os
        os.environ["REQUESTS_CA_BUNDLE"] = old.ca_file
        os.environ["MS365_AUTHORITY_HOST"] = old.authority_host
        os.environ["MS365_GRAPH_URL"] = old.graph_url
        old_sdk = old.maestro_sdk()
        old.put_app_credentials(LABEL)
        plugin = MS365CredentialsPlugin(maestro=old_sdk, credential_label=LABEL)
        plugin.authenticate(consent=old.consent_redirect)  # creating the key works
        assert old.maestro.secret(LABEL, "token")
        again = MS365CredentialsPlugin(maestro=old_sdk, credential_label=LABEL)
        with pytest.raises(StoreError, match="needs Maestro 3.0.0"):
            again.authenticate(["Mail.Read"], consent=old.consent_redirect)


# -- the stored token is broken ---------------------------------------------------------

BROKEN = {
    "not JSON": "{this is not json",
    "O365 1.x": json.dumps({"token_type": "Bearer", "access_token": "eyJ0eXAi",
                            "refresh_token": "0.AAAA", "expires_at": 1700000000}),
    "not a cache": json.dumps({"hello": "world"}),
    "JSON list": "[1, 2, 3]",
    "bad section": json.dumps({"RefreshToken": ["x"]}),
}


def _broken(name: str, good: str) -> str:
    return good[: len(good) // 2] if name == "truncated" else BROKEN[name]


@pytest.mark.parametrize("name", [*BROKEN, "truncated"])
def test_broken_token_in_maestro_is_refused_and_kept(sandbox, maestro, name):
    good = authorized(sandbox, maestro)
    broken = _broken(name, good)
    sandbox.maestro.put_secret(LABEL, "token", broken)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)

    with pytest.raises(TokenFormatError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)
    with pytest.raises(TokenFormatError):
        _ = plugin.is_authenticated

    text = str(caught.value)
    assert f"Maestro credential '{LABEL}' key 'token'" in text
    assert f"delete key 'token' of the Maestro credential '{LABEL}'" in text
    if name == "O365 1.x":
        assert "1.x format" in text
    assert sandbox.maestro.secret(LABEL, "token") == broken


@pytest.mark.parametrize("name", [*BROKEN, "truncated", "binary"])
def test_broken_token_file_is_refused_and_kept(sandbox, tmp_path, name):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)
    token_file = tmp_path / "o365_token.txt"
    broken = b"\xff\xfe\x00junk" if name == "binary" else _broken(
        name, token_file.read_text()).encode()
    token_file.write_bytes(broken)

    again = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(TokenFormatError, match=f"delete {token_file}"):
        again.authenticate(consent=sandbox.consent_redirect)
    assert token_file.read_bytes() == broken


# -- the person pastes the wrong thing ----------------------------------------------------

CONSOLE_BOT = """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
plugin = MS365CredentialsPlugin(os.environ["APP_ID"], os.environ["APP_SECRET"])
plugin.authenticate()
print("DONE", plugin.is_authenticated)
"""


def paste(sandbox, answers):
    """Answer the console prompts in order; each answer is a function of the right URL."""
    seen = {}

    def answer(line):
        text = line.strip()
        if text.startswith(sandbox.authority_host) and "/authorize?" in text:
            seen["redirect"] = sandbox.consent_redirect(text)
        elif text.startswith("Paste the address") and answers:
            return answers.pop(0)(seen["redirect"])
        return None
    return answer


def run_console(sandbox, tmp_path, answers):
    env = bot_env(sandbox, APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)
    return run_process(script(tmp_path / "console_bot.py", CONSOLE_BOT), env, cwd=tmp_path,
                       answer=paste(sandbox, answers))


def test_wrong_pastes_are_explained_and_asked_again(sandbox, tmp_path):
    run = run_console(sandbox, tmp_path, [
        lambda url: "https://evil.example/common/oauth2/nativeclient?code=x&state=y",
        lambda url: url.replace("state=", "state=other"),
        lambda url: f'   "{url}"  ',
    ])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "That is not the address the sign-in sends you back to" in run.stdout
    assert "belongs to another sign-in" in run.stdout
    assert "DONE True" in run.stdout


def test_three_wrong_pastes_end_with_a_clear_error(sandbox, tmp_path):
    run = run_console(sandbox, tmp_path, [lambda url: "nonsense"] * 3)
    assert run.returncode == 1
    assert "AuthorizationError" in run.stderr and "Nothing was pasted" not in run.stderr
    assert "not the address the sign-in sends you back to" in run.stderr
    assert not (tmp_path / "o365_token.txt").exists()


def test_refused_consent(sandbox):
    sandbox.tenant.consent = "deny"
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(AuthorizationError, match="Consent was not given: access_denied"):
        plugin.authenticate(consent=sandbox.consent_redirect)


def test_callable_consent_returning_another_flows_address(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    foreign = f"{sandbox.authority_host}/common/oauth2/nativeclient?code=abc&state=forged"
    with pytest.raises(AuthorizationError, match="belongs to another sign-in"):
        plugin.authenticate(consent=lambda url: foreign)


# -- Microsoft refuses the app --------------------------------------------------------------


def test_wrong_client_secret_at_first_authorization(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, "not-the-secret")
    with pytest.raises(AuthorizationError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)
    assert not isinstance(caught.value, AuthorizationRequired)
    assert caught.value.code == "AADSTS7000215"
    assert "the client secret is wrong (or it is the secret's ID instead of its Value)" in str(
        caught.value)
    assert "not-the-secret" not in str(caught.value)


def test_wrong_client_secret_at_refresh(sandbox, tmp_path):
    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret).authenticate(
        consent=sandbox.consent_redirect)
    token_file = tmp_path / "o365_token.txt"
    token_file.write_text(expire_token_text(token_file.read_text()))
    sandbox.tenant.expire_access_tokens()
    stored = token_file.read_text()

    plugin = MS365CredentialsPlugin(sandbox.app.client_id, "expired-secret")
    with pytest.raises(AuthorizationError, match="AADSTS7000215"):
        plugin.ms365_account.get_current_user_data()
    now, before = json.loads(token_file.read_text()), json.loads(stored)
    assert now["RefreshToken"] == before["RefreshToken"]
    assert now["AccessToken"] == before["AccessToken"]
    assert now == before, "the stored token was left exactly as it was"


# -- one except clause for all of it -------------------------------------------------------


def _no_such_label(sandbox):
    return "missing-label"


def _maestro_fails(sandbox):
    authorized(sandbox, sandbox.maestro_sdk())
    sandbox.maestro.fail_next(500, path_contains="/api/v2/credential/", times=5)
    return LABEL


def _broken_token(sandbox):
    authorized(sandbox, sandbox.maestro_sdk())
    sandbox.maestro.put_secret(LABEL, "token", "{this is not json")
    return LABEL


def _wrong_secret(sandbox):
    authorized(sandbox, sandbox.maestro_sdk())
    sandbox.force_expiry()
    sandbox.maestro.put_secret(LABEL, "client_secret", "not-the-secret")
    return LABEL


def _revoked(sandbox):
    authorized(sandbox, sandbox.maestro_sdk())
    sandbox.force_expiry()
    sandbox.tenant.kill_refresh_tokens("revoked")
    return LABEL


def _microsoft_down(sandbox):
    authorized(sandbox, sandbox.maestro_sdk())
    sandbox.force_expiry()
    sandbox.identity.fail_next(503, path_contains="/token", times=100)
    return LABEL


@pytest.mark.parametrize(("setup", "expected", "fix"), [
    (_no_such_label, ConfigurationError, "does not exist at"),
    (_maestro_fails, StoreUnavailable, "answered HTTP 500"),
    (_broken_token, TokenFormatError, f"delete key 'token' of the Maestro credential '{LABEL}'"),
    (_wrong_secret, AuthorizationError, "AADSTS7000215: the client secret is wrong"),
    (_revoked, AuthorizationRequired, f"botcity-ms365 login --label {LABEL}"),
    (_microsoft_down, ServiceUnavailable, "Try again later"),
], ids=["settings", "maestro", "stored-token", "app-secret", "revoked", "microsoft-down"])
def test_one_except_clause_catches_every_failure_and_its_type_names_the_fix(
        sandbox, monkeypatch, setup, expected, fix):
    """A bot wraps its start in ``except MS365CredentialsError``: failures of every origin
    (its settings, Maestro, the stored token, Microsoft's answers, whose own libraries raise
    ValueError, RuntimeError or requests' errors) land there, as the type that says what to
    do, with the fix in the message."""
    monkeypatch.setenv("MS365_RETRY_SECONDS", "1")
    label = setup(sandbox)
    stored = sandbox.maestro.secret(LABEL, "token")
    caught = None
    try:
        plugin = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=label,
                                        consent="none")
        plugin.authenticate()
        plugin.ms365_account.get_current_user_data()
    except MS365CredentialsError as exc:
        caught = exc
    assert type(caught) is expected, repr(caught)
    assert fix in str(caught)
    sandbox.maestro.clear_faults()
    assert sandbox.maestro.secret(LABEL, "token") == stored, "the stored token is left as it was"


def test_console_without_stdin_is_a_configuration_error(sandbox, tmp_path):
    source = CONSOLE_BOT.replace("plugin.authenticate()", "plugin.authenticate(consent='console')")
    env = bot_env(sandbox, APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret)
    run = run_process(script(tmp_path / "b.py", source), env, cwd=tmp_path, stdin_closed=True)
    assert run.returncode == 1
    assert "ConfigurationError" in run.stderr and "stdin is closed" in run.stderr
