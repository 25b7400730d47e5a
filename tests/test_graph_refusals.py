"""Graph answers 401 to an access token that is valid by its expiry (a revoked session, a
signing key rolled over): O365 alone raises a raw ``HTTPError`` on every call until the
token expires by its own clock. The plugin renews once (for every bot of the credential),
repeats the call once, and when Graph refuses the renewed token too, says so with the
plugin's error and one alert (issue 25, item 2)."""

from __future__ import annotations

import json
import threading

import pytest

from botcity.plugins.ms365.credentials import AuthorizationRequired, MS365CredentialsPlugin
from conftest import newest_token

LABEL = "ms365"


def authorized(sandbox, maestro) -> MS365CredentialsPlugin:
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(["basic"], consent=sandbox.consent_redirect)
    return plugin


def generation(sandbox) -> int:
    return json.loads(newest_token(sandbox, LABEL))["botcity"]["generation"]


def me_calls(sandbox) -> list[int]:
    return [r.status for r in sandbox.requests("graph") if r.path == "/v1.0/me"]


def test_a_401_on_a_valid_token_renews_once_and_repeats_the_call(sandbox, maestro):
    plugin = authorized(sandbox, maestro)
    before = generation(sandbox)
    sandbox.tenant.expire_access_tokens()  # on the server only: the stored expiry is an hour off
    sandbox.requests.clear()

    user = plugin.ms365_account.get_current_user_data()

    assert user.user_principal_name == sandbox.tenant.user.upn
    assert me_calls(sandbox) == [401, 200], "the call was repeated once"
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert generation(sandbox) == before + 1, "the renewed token is in Maestro for the others"
    assert plugin.is_authenticated
    plugin.ms365_account.get_current_user_data()
    assert len(sandbox.token_requests("refresh_token")) == 1, "the new token is used from now on"


def test_a_second_401_is_the_plugin_s_error_and_stops_the_grants(sandbox, maestro, monkeypatch):
    plugin = authorized(sandbox, maestro)
    monkeypatch.setattr(sandbox.tenant, "access_token", lambda secret: None)  # Graph takes none
    sandbox.requests.clear()

    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()

    message = str(caught.value)
    assert "refused the access token" in message and "HTTP 401" in message
    assert "InvalidAuthenticationToken" in message and "botcity-ms365 login" in message
    assert me_calls(sandbox) == [401, 401]
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert plugin.is_authenticated is False
    with pytest.raises(AuthorizationRequired):
        plugin.ms365_account.get_current_user_data()
    assert me_calls(sandbox) == [401, 401], "no request and no grant once it is known refused"
    assert len(sandbox.token_requests("refresh_token")) == 1
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and "botcity-ms365 login --label ms365" in alert["message"]


def test_eight_bots_meeting_the_same_401_make_at_most_two_grants(sandbox, maestro):
    authorized(sandbox, maestro)
    bots = [MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
            for _ in range(8)]
    for bot in bots:
        bot.ms365_account.get_current_user_data()  # each holds the stored token
    assert sandbox.token_requests("refresh_token") == []
    sandbox.tenant.expire_access_tokens()
    errors: list[BaseException] = []

    def call(bot: MS365CredentialsPlugin) -> None:
        try:
            bot.ms365_account.get_current_user_data()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(bot,)) for bot in bots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors and not any(t.is_alive() for t in threads)
    assert 1 <= len(sandbox.token_requests("refresh_token")) <= 2


def test_the_account_used_before_any_token_is_stored_says_what_to_do(sandbox):
    """O365 raises a bare RuntimeError ("No auth token found") for a request without a
    token; the plugin's error says to authenticate first."""
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()
    assert str(caught.value) == (
        f"The account was used before authenticate(): no token is held for "
        f"{plugin.token_store.location}. Call service.authenticate(scopes=...) before using "
        "service.ms365_account.")
    assert sandbox.requests("graph") == [], "nothing was sent without a token"


def test_a_401_about_something_else_than_the_token_is_not_taken_for_a_refused_token(
        sandbox, maestro):
    """Only a 401 that refuses the access token (InvalidAuthenticationToken, or a
    WWW-Authenticate challenge) renews it; any other is that call's error, as O365 raises
    it, and the account goes on working."""
    import requests

    plugin = authorized(sandbox, maestro)
    sandbox.graph.fail_next(401, path_contains="/me", body={
        "error": {"code": "ErrorAccessDenied", "message": "Access is denied."}})
    sandbox.requests.clear()

    with pytest.raises(requests.HTTPError):
        plugin.ms365_account.get_current_user_data()
    assert sandbox.token_requests() == [], "no renewal for it"
    assert plugin.ms365_account.get_current_user_data().user_principal_name
    assert plugin.is_authenticated
