"""The plugin leans on a few O365 2.1 / msal internals, all in ``_o365.py``. These tests
fail loudly, naming the piece, when a new O365 or msal release moves one of them."""

from __future__ import annotations

import inspect
import json
from importlib.metadata import version

import msal
from O365 import Account
from O365.connection import Connection, MSGraphProtocol
from O365.utils.token import BaseTokenBackend

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials._o365 import (
    MsalTransport,
    PluginConnection,
    discovery_url,
    graph_protocol,
)


def test_o365_version_is_the_one_we_support():
    installed = version("O365")
    assert installed.startswith("2.1."), installed


def test_connection_internals_we_override_are_still_there():
    source = inspect.getsource(Connection.__init__)
    assert "self._msal_authority" in source, "Connection._msal_authority moved"
    assert "self._msal_client" in source, "Connection._msal_client moved"
    assert isinstance(Connection.__dict__["msal_client"], property)
    for name in ("refresh_token", "_try_refresh_token", "_set_username_from_token_backend",
                 "load_token_from_backend", "update_session_auth_header", "get_session"):
        assert callable(getattr(Connection, name, None)), f"Connection.{name} is gone"
    assert "self.refresh_token()" in inspect.getsource(Connection._try_refresh_token)
    # the early renewal hooks oauth_request: every Graph verb must go through it
    for verb in ("get", "post", "put", "patch", "delete"):
        assert "self.oauth_request(" in inspect.getsource(getattr(Connection, verb)), (
            f"Connection.{verb} no longer calls oauth_request")
    assert list(inspect.signature(Connection.oauth_request).parameters)[:3] == [
        "self", "url", "method"]
    assert Account.connection_constructor is Connection
    assert "connection_constructor(" in inspect.getsource(Account.__init__)


def test_graph_protocol_override_point():
    assert MSGraphProtocol._protocol_url == "https://graph.microsoft.com/"
    assert "self._protocol_url" in inspect.getsource(MSGraphProtocol.__init__)
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


def test_o365_still_logs_the_session_headers_we_redact():
    assert "Session default headers" in inspect.getsource(Connection._internal_request)


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


def test_the_session_settings_we_reuse_are_still_there():
    # the plugin's Graph adapter (_transport.graph_adapter) replaces O365's on the session
    # O365 builds, with O365's number of retries and its timeout
    assert "timeout" in inspect.signature(Connection.__init__).parameters
    assert "request_retries" in inspect.signature(Connection.__init__).parameters
    assert "self.timeout" in inspect.getsource(Connection._internal_request)
    assert "session.mount(" in inspect.getsource(Connection.get_session)


def test_o365_lets_the_backend_renew_itself():
    """should_refresh_token may answer None: 'the backend refreshed, go on'."""
    source = inspect.getsource(Connection._try_refresh_token)
    assert "should_rt is True" in source and "should_rt is False" in source
    after_false = source.split("should_rt is False")[1]
    assert "else:" in after_false and "return True" in after_false.split("else:")[1], (
        "a None answer goes on with the request")


def test_msal_takes_the_time_and_the_sign_in_options_we_pass():
    for method in (msal.TokenCache.add, msal.TokenCache.search):
        assert "now" in inspect.signature(method).parameters, method.__name__
    flow = inspect.signature(msal.ClientApplication.initiate_auth_code_flow).parameters
    assert "prompt" in flow and "claims_challenge" in flow
    assert "claims_challenge" in inspect.signature(
        msal.PublicClientApplication.initiate_device_flow).parameters
    # msal drops access tokens it finds expired while searching: our clock must be the one
    assert "expires_on" in inspect.getsource(msal.TokenCache.search)


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


def test_msal_internals_of_the_discovery_seam_are_still_there():
    from msal import authority, throttled_http_client

    assert authority._get_instance_discovery_endpoint("login.microsoftonline.com") == (
        "https://login.microsoftonline.com/common/discovery/instance"), (
        "msal.authority._get_instance_discovery_endpoint moved")
    assert callable(getattr(msal.ClientApplication, "_get_instance_metadata", None)), (
        "ClientApplication._get_instance_metadata is gone")
    assert "/.well-known/openid-configuration" in inspect.getsource(
        authority.Authority._initialize_entra_authority), (
        "Authority._initialize_entra_authority no longer builds the OpenID configuration URL")
    # msal wraps our client and reaches it through get(); it keeps only these of the answer
    assert "self.http_client.get(" in inspect.getsource(
        throttled_http_client.ThrottledHttpClientBase.get), (
        "ThrottledHttpClientBase.get no longer calls the given http_client's get()")
    source = inspect.getsource(throttled_http_client.NormalizedResponse.__init__)
    assert all(f"raw_response.{name}" in source for name in ("status_code", "text")), (
        "NormalizedResponse reads other fields of an answer")
    # requests' Session.get goes through request(), which MsalTransport overrides
    assert "self.request(" in inspect.getsource(MsalTransport.get)
    assert "http_client" in inspect.signature(msal.ClientApplication.__init__).parameters
