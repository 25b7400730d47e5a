"""The plugin leans on a few O365 2.1 / msal internals, all in ``_o365.py``. These tests
fail loudly, naming the piece, when a new O365 or msal release moves one of them."""

from __future__ import annotations

import inspect
import json
from importlib.metadata import version

import msal
import pytest
import requests
from O365.utils.token import BaseTokenBackend

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials._clock import Clock
from botcity.plugins.ms365.credentials._o365 import (
    MsalTransport,
    PluginConnection,
    discovery_url,
    graph_protocol,
)
from botcity.plugins.ms365.credentials.discovery import KEY, Discovery
from conftest import newest_token

LABEL = "ms365"
NOW = 1_800_000_000


def test_o365_version_is_the_one_we_support():
    installed = version("O365")
    assert installed.startswith("2.1."), installed


@pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")
def test_o365s_own_sign_in_asks_the_plugins_msal_client_at_the_plugins_authority(sandbox):
    """The plugin replaces Connection._msal_authority and the msal_client property, and
    Account builds its connection with Account.connection_constructor: O365's own
    get_authorization_url must then ask the plugin's authority (the sandbox here)."""
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    con = plugin.ms365_account.con
    assert type(con) is PluginConnection, "Account no longer builds connection_constructor"
    tenant = sandbox.tenant.tenant_id

    url, flow = con.get_authorization_url([f"{plugin.ms365_account.protocol.prefix_scope('')}"
                                          "User.Read"])

    assert url.startswith(f"{sandbox.authority_host}/{tenant}/oauth2/v2.0/authorize?"), (
        "O365's sign-in no longer goes through the msal_client property / _msal_authority")
    assert flow["state"] in url
    assert [r.path for r in sandbox.requests("identity")] == [
        f"/{tenant}/v2.0/.well-known/openid-configuration"], "msal asked the plugin's authority"


def test_every_graph_verb_of_o365_goes_through_oauth_request():
    """The early renewal lives in PluginConnection.oauth_request: O365's get/post/put/
    patch/delete (what every O365 API object calls) must reach it."""
    con = MS365CredentialsPlugin("id", "secret").ms365_account.con
    seen: list[tuple[str, str]] = []

    def recorder(url: str, method: str, **kwargs: object) -> str:
        seen.append((method, url))
        return "answer"

    con.oauth_request = recorder  # type: ignore[method-assign]
    verbs = ("get", "post", "put", "patch", "delete")
    answers = [getattr(con, verb)(f"https://graph/{verb}") for verb in verbs]

    assert seen == [(verb, f"https://graph/{verb}") for verb in verbs], (
        "a Connection verb no longer calls oauth_request(url, method)")
    assert answers == ["answer"] * len(verbs)


def test_after_graph_answers_401_o365_s_refresh_goes_to_the_lifecycle_and_is_retried(
        sandbox, maestro, monkeypatch):
    """When Graph answers 401 and O365 judges the access token expired (by the machine's
    clock, which may disagree with the one the plugin keeps from Microsoft's answers),
    O365's oauth_request calls the connection's _try_refresh_token, which the plugin
    overrides: the lifecycle renews (once), and O365 retries the request with the new
    token."""
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    store = plugin.token_store
    lifecycle = plugin.ms365_account.con.lifecycle
    plugin.ms365_account.get_current_user_data()
    sandbox.tenant.expire_access_tokens()  # Microsoft ended the token early
    monkeypatch.setattr(store, "token_is_expired", lambda **kw: True)  # O365's judgement
    asked: list[bool] = []
    renew = lifecycle.renew
    monkeypatch.setattr(lifecycle, "renew", lambda **kw: asked.append(True) or renew(**kw))
    sandbox.requests.clear()

    user = plugin.ms365_account.get_current_user_data()

    assert user.user_principal_name == sandbox.tenant.user.upn
    assert asked == [True], "O365's refresh after a 401 no longer reaches the lifecycle"
    assert [r.status for r in sandbox.requests("graph")] == [401, 200], (
        "O365 no longer retries the request after _try_refresh_token")
    assert len(sandbox.token_requests("refresh_token")) == 1
    stored = json.loads(newest_token(sandbox, LABEL))
    [access] = stored["AccessToken"].values()
    assert sandbox.tenant.access_tokens[access["secret"]].generation == 1, "renewal stored"


def test_graph_protocol_override_point():
    assert graph_protocol("https://graph.microsoft.us").service_url == (
        "https://graph.microsoft.us/v1.0/")
    assert graph_protocol("https://graph.microsoft.us").prefix_scope("Mail.Read") == (
        "https://graph.microsoft.us/Mail.Read")
    assert graph_protocol("http://127.0.0.1:9/").prefix_scope("Mail.Read") == (
        "https://graph.microsoft.com/Mail.Read")


def test_token_backend_interface():
    for name in ("load_token", "save_token", "delete_token", "check_token",
                 "should_refresh_token", "get_token_scopes", "get_access_token",
                 "get_refresh_token", "serialize", "deserialize"):
        assert callable(getattr(BaseTokenBackend, name, None)), f"BaseTokenBackend.{name}"
    assert issubclass(BaseTokenBackend, msal.TokenCache)


def test_o365_still_calls_what_the_connection_overrides():
    """The plugin's connection overrides these O365 methods; O365 must still have them (a
    rename would leave O365's own path, bypassing the lifecycle)."""
    from O365.connection import Connection

    for name in ("oauth_request", "load_token_from_backend", "_try_refresh_token",
                 "refresh_token", "get_session", "msal_client"):
        assert hasattr(Connection, name), f"Connection.{name}"
        assert name in PluginConnection.__dict__, f"PluginConnection no longer overrides {name}"


def test_msal_accepts_the_arguments_we_pass():
    parameters = inspect.signature(msal.ConfidentialClientApplication.__init__).parameters
    assert "instance_discovery" in parameters
    assert "force_refresh" in inspect.signature(
        msal.ClientApplication.acquire_token_silent_with_error).parameters


def test_sovereign_cloud_settings_reach_o365(monkeypatch):
    monkeypatch.delenv("MS365_AUTHORITY_HOST", raising=False)
    monkeypatch.delenv("MS365_GRAPH_URL", raising=False)
    plugin = MS365CredentialsPlugin("id", "secret", tenant_id="contoso.us",
                                    authority_host="https://login.microsoftonline.us",
                                    graph_url="https://graph.microsoft.us")
    con = plugin.ms365_account.con
    assert isinstance(con, PluginConnection)
    assert con._msal_authority == "https://login.microsoftonline.us/contoso.us"
    assert con.oauth_redirect_url == (
        "https://login.microsoftonline.us/common/oauth2/nativeclient")
    assert plugin.ms365_account.protocol.service_url == "https://graph.microsoft.us/v1.0/"
    default = MS365CredentialsPlugin("id", "secret").ms365_account
    assert default.con._msal_authority == "https://login.microsoftonline.com/common"
    assert default.protocol.service_url == "https://graph.microsoft.com/v1.0/"


def test_o365s_retry_settings_still_retry_a_graph_5xx_on_the_plugins_session(sandbox):
    """PluginConnection.get_session mounts the plugin's Graph adapter
    (``_transport.graph_adapter``, O365's number of retries and its RETRIES_STATUS_LIST,
    every wait out of MS365_RETRY_SECONDS) on the session O365 builds: a 503 from Graph is
    retried once more, and the bot gets its answer. (That MS365_HTTP_TIMEOUT reaches
    O365's request, and that a silent Graph is not waited for again, is
    test_many_writers' test_a_graph_that_never_answers_fails_within_the_timeout.)"""
    from O365 import connection

    assert 503 in connection.RETRIES_STATUS_LIST
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)
    sandbox.graph.fail_next(503, path_contains="/me")
    sandbox.requests.clear()

    user = plugin.ms365_account.get_current_user_data()

    assert user.user_principal_name == sandbox.tenant.user.upn
    assert [r.status for r in sandbox.requests("graph")] == [503, 200]


def test_msal_takes_the_time_and_the_sign_in_options_we_pass():
    for method in (msal.TokenCache.add, msal.TokenCache.search):
        assert "now" in inspect.signature(method).parameters, method.__name__
    flow = inspect.signature(msal.ClientApplication.initiate_auth_code_flow).parameters
    assert "prompt" in flow and "claims_challenge" in flow
    assert "claims_challenge" in inspect.signature(
        msal.PublicClientApplication.initiate_device_flow).parameters
    # msal drops access tokens it finds expired while searching: our clock must be the one
    cache = msal.TokenCache()
    cache.add({"client_id": "app", "scope": ["User.Read"],
               "token_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
               "response": {"access_token": "at", "token_type": "Bearer",
                            "expires_in": 3600}}, now=NOW)

    def found(now: float) -> list[str]:
        return [e["secret"] for e in cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN,
                                                  target=["User.Read"], now=now)]

    assert found(NOW + 3000) == ["at"], "msal no longer times the token by the now we pass"
    assert found(NOW + 3700) == [], "msal no longer judges expiry by the now we pass"



def test_msal_still_asks_the_discovery_the_plugin_answers_from_the_store():
    """_o365.MsalTransport answers msal's discovery GETs (those discovery_url names) from
    the answers saved with the token. msal must still ask them through the get() of the
    http_client it is given, at these URLs, and read the answer's status_code and text."""
    authority = "https://login.microsoftonline.com/contoso.onmicrosoft.com"

    class Answer:
        def __init__(self, body: dict) -> None:
            self.status_code, self.text, self.headers = 200, json.dumps(body), {}

    class Recorder:  # msal's documented http_client interface
        def __init__(self) -> None:
            self.asked: list[str | None] = []

        def get(self, url, params=None, headers=None, **kwargs):
            self.asked.append(discovery_url(url, params))
            if url.endswith("/openid-configuration"):
                return Answer({"issuer": f"{authority}/v2.0",
                               "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                               "token_endpoint": f"{authority}/oauth2/v2.0/token"})
            return Answer({"api-version": "1.1", "metadata": [{
                "preferred_network": "login.microsoftonline.com",
                "preferred_cache": "login.windows.net",
                "aliases": ["login.microsoftonline.com", "login.windows.net"]}]})

        def post(self, *args, **kwargs):
            raise AssertionError("msal made a request that is not discovery")

        def close(self) -> None:
            pass

    recorder = Recorder()
    app = msal.ConfidentialClientApplication("id", client_credential="s", authority=authority,
                                             http_client=recorder)
    assert recorder.asked == [f"{authority}/v2.0/.well-known/openid-configuration"], (
        "msal's OpenID configuration request moved (msal/authority.py Authority)")
    assert app.get_accounts() == []  # none under this host: msal asks for its other names
    assert len(recorder.asked) == 2 and str(recorder.asked[1]).startswith(
        "https://login.microsoftonline.com/common/discovery/instance?"), (
        "msal's instance metadata request moved "
        "(msal/application.py ClientApplication._get_instance_metadata)")


def test_msal_built_on_saved_discovery_answers_asks_nothing_of_the_network(monkeypatch):
    """MsalTransport (a requests Session, given as msal's http_client) keeps the discovery
    answers msal fetched, and gives them back to the next msal app: msal must still reach
    them through the http_client's get(), read only their status and text, and ask
    nothing else before its first token request. The network is a fake Microsoft."""
    authority = "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    fetched: list[str] = []

    def microsoft(self, method, url, *args, **kwargs):
        fetched.append(url)
        if url.endswith("/openid-configuration"):
            body = {"issuer": f"{authority}/v2.0",
                    "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{authority}/oauth2/v2.0/token"}
        else:
            body = {"api-version": "1.1", "metadata": [{
                "preferred_network": "login.microsoftonline.com",
                "preferred_cache": "login.windows.net",
                "aliases": ["login.microsoftonline.com", "login.windows.net"]}]}
        response = requests.Response()
        response.status_code, response.url, response.encoding = 200, url, "utf-8"
        response._content = json.dumps(body).encode()
        return response

    monkeypatch.setattr(requests.Session, "request", microsoft)
    saved = Discovery()

    def app(serve: bool) -> tuple[msal.ConfidentialClientApplication, MsalTransport]:
        transport = MsalTransport(saved, serve=serve, clock=Clock(), budget=1, timeout=1)
        client = msal.ConfidentialClientApplication("id", client_credential="s",
                                                    authority=authority, http_client=transport)
        assert client.get_accounts() == []  # msal asks the host's other names here
        return client, transport

    app(serve=False)
    assert len(fetched) == 2, fetched
    assert len(saved.entry()[KEY]) == 2, "both of msal's answers were kept"

    _, transport = app(serve=True)

    assert len(fetched) == 2, "the second msal app fetched discovery again"
    assert sorted(transport.served) == sorted(saved.entry()[KEY]), (
        "msal no longer asks its discovery through the http_client's get()")
