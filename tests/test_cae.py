"""Continuous access evaluation (issue 24, the plugin's side): the plugin declares the
client capability CP1 (msal's ``client_capabilities``) on every sign-in and token request,
unless ``MS365_CAE=0``; a token Microsoft says to refresh early (``refresh_in``, kept by
msal as ``refresh_on``: a day-long CAE token is to be refreshed after about half of it)
has its refresh window drawn there, not an hour before its expiry."""

from __future__ import annotations

import json

import pytest
import requests

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials._o365 import claims_challenge
from botcity.plugins.ms365.credentials.renewal import SPREAD_MAX, Schedule, window
from conftest import START, FakeClock

LABEL = "ms365"


def capabilities(claims: str | None) -> list[str]:
    """The client capabilities a request's ``claims`` declares (msal's xms_cc)."""
    if not claims:
        return []
    return json.loads(claims).get("access_token", {}).get("xms_cc", {}).get("values", [])


def signed_in_and_renewed(sandbox, maestro) -> None:
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(["basic"], consent=sandbox.consent_redirect)
    sandbox.force_expiry()
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL
                           ).ms365_account.get_current_user_data()


def test_the_plugin_declares_cp1_at_the_sign_in_and_every_renewal(sandbox, maestro):
    signed_in_and_renewed(sandbox, maestro)

    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    assert capabilities(authorize.query.get("claims")) == ["CP1"]
    grants = sandbox.token_requests()
    assert [g.form()["grant_type"] for g in grants] == ["authorization_code", "refresh_token"]
    assert all(capabilities(g.form().get("claims")) == ["CP1"] for g in grants)


def test_ms365_cae_0_declares_nothing(sandbox, maestro, monkeypatch):
    monkeypatch.setenv("MS365_CAE", "0")
    signed_in_and_renewed(sandbox, maestro)

    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    assert "claims" not in authorize.query
    assert all("claims" not in g.form() for g in sandbox.token_requests())




def cae_token(life: float = 86400.0, refresh_in: float = 43200.0) -> dict[str, str]:
    return {"cached_at": str(int(START)), "expires_on": str(int(START + life)),
            "refresh_on": str(int(START + refresh_in))}


def test_a_day_long_token_s_window_opens_where_microsoft_says_to_refresh():
    begin, end = window(cae_token())
    assert begin == START + 43200, "not an hour before a 24-hour expiry"
    assert end == START + 43200 + SPREAD_MAX


@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_a_bot_renews_a_day_long_token_after_refresh_on_and_long_before_its_expiry(draw):
    clock = FakeClock()
    schedule = Schedule(draw=lambda: draw, clock=clock)
    token = cae_token()
    clock.t = START + 43200 - 1
    assert not schedule.due(token), "not before Microsoft's refresh_on"
    clock.t = START + 43200 + SPREAD_MAX + 1
    assert schedule.due(token), "within the window after refresh_on, not 12 hours later"


def test_without_refresh_on_the_window_is_the_hour_before_expiry_as_before():
    token = {"cached_at": str(int(START)), "expires_on": str(int(START + 3600))}
    begin, end = window(token)
    assert (begin, end) == (START + 3600 - 60 - SPREAD_MAX, START + 3600 - 60)
    odd = {**token, "refresh_on": str(int(START + 7200))}  # after the expiry: ignored
    assert window(odd) == (begin, end)


def graph_401(header: str | None):
    response = requests.Response()
    response.status_code = 401
    if header is not None:
        response.headers["WWW-Authenticate"] = header
    return requests.HTTPError(response=response)


def test_graph_s_claims_challenge_is_read_as_microsoft_documents_it():
    # "How to use Continuous Access Evaluation enabled APIs in your applications"
    # (learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-
    # evaluation): HTTP 401; WWW-Authenticate=Bearer authorization_uri="...",
    # error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlh
    # bCI6dHJ1ZSwgInZhbHVlIjoiMTYwNDEwNjY1MSJ9fX0="
    claims = ('eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYwNDEw'
              'NjY1MSJ9fX0=')
    header = ('Bearer authorization_uri="https://login.windows.net/common/oauth2/authorize",'
              f' error="insufficient_claims", claims="{claims}"')
    assert json.loads(claims_challenge(graph_401(header))) == {
        "access_token": {"nbf": {"essential": True, "value": "1604106651"}}}
    assert claims_challenge(graph_401('Bearer realm="", error="invalid_token"')) is None
    assert claims_challenge(graph_401(None)) is None
    assert claims_challenge(graph_401(
        'Bearer error="insufficient_claims", claims="not base64 json!"')) is None
