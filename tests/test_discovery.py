"""The discovery answers saved with the token (``discovery.py``) and which of msal's
requests they answer (``_o365.discovery_url``): the rules, without a server."""

from __future__ import annotations

import json

import pytest

from botcity.plugins.ms365.credentials._o365 import discovery_url
from botcity.plugins.ms365.credentials.discovery import (
    KEY,
    LIFETIME,
    MAX_BYTES,
    Discovery,
    acceptable,
)

NOW = 1_800_000_000
URL = "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
BASE = "https://login.microsoftonline.com/0c6f/oauth2/v2.0"
DOC = {"issuer": "https://login.microsoftonline.com/0c6f/v2.0",
       "authorization_endpoint": f"{BASE}/authorize", "token_endpoint": f"{BASE}/token",
       "device_authorization_endpoint": f"{BASE}/devicecode"}


#: Azure AD's answer, as login.microsoftonline.com gives it (tenant id shortened).
AZURE_AD = json.loads("""{"token_endpoint":"https://login.microsoftonline.com/0c6f/oauth2/v2.0/
token","token_endpoint_auth_methods_supported":["client_secret_post","private_key_jwt",
"client_secret_basic"],"jwks_uri":"https://login.microsoftonline.com/0c6f/discovery/v2.0/keys",
"response_modes_supported":["query","fragment","form_post"],"subject_types_supported":
["pairwise"],"id_token_signing_alg_values_supported":["RS256"],"response_types_supported":
["code","id_token","code id_token","id_token token"],"scopes_supported":["openid","profile",
"email","offline_access"],"issuer":"https://login.microsoftonline.com/0c6f/v2.0",
"request_uri_parameter_supported":false,"userinfo_endpoint":
"https://graph.microsoft.com/oidc/userinfo","authorization_endpoint":
"https://login.microsoftonline.com/0c6f/oauth2/v2.0/authorize","device_authorization_endpoint":
"https://login.microsoftonline.com/0c6f/oauth2/v2.0/devicecode","http_logout_supported":true,
"frontchannel_logout_supported":true,"end_session_endpoint":
"https://login.microsoftonline.com/0c6f/oauth2/v2.0/logout","claims_supported":["sub","iss",
"cloud_instance_name","cloud_instance_host_name","cloud_graph_host_name","msgraph_host","aud",
"exp","iat","auth_time","acr","nonce","preferred_username","name","tid","ver","at_hash",
"c_hash","email"],"kerberos_endpoint":"https://login.microsoftonline.com/0c6f/kerberos",
"tenant_region_scope":"EU","cloud_instance_name":"microsoftonline.com",
"cloud_graph_host_name":"graph.windows.net","msgraph_host":"graph.microsoft.com",
"rbac_url":"https://pas.windows.net"}""".replace("\n", ""))


def stored(*pairs: tuple[str, dict], at: int = NOW) -> dict:
    return {url: {"at": at, "doc": doc} for url, doc in pairs}


def test_an_answer_learned_is_given_back_and_saved():
    discovery = Discovery()
    assert discovery.learn(URL, json.dumps(DOC), NOW)

    assert json.loads(discovery.answer(URL, NOW + 10) or "") == DOC
    assert discovery.entry() == {KEY: stored((URL, DOC))}


def test_a_saved_answer_is_used_for_its_url_only_and_for_a_day():
    discovery = Discovery()
    discovery.load(stored((URL, DOC)), NOW)

    assert discovery.answer(URL, NOW + LIFETIME - 1) is not None
    assert discovery.answer(URL, NOW + LIFETIME) is None
    assert discovery.answer(URL.replace("contoso", "fabrikam"), NOW) is None
    assert discovery.answer(URL.replace(".com/", ".us/"), NOW) is None


def test_only_the_answers_used_are_saved_again():
    discovery = Discovery()
    other = URL.replace("contoso", "fabrikam")
    discovery.load(stored((URL, DOC), (other, DOC)), NOW)
    assert discovery.entry() == {}, "nothing used yet: nothing to save"

    discovery.answer(URL, NOW)

    assert list(discovery.entry()[KEY]) == [URL]


@pytest.mark.parametrize("entry", [
    "garbage", ["?"], 42, {URL: "?"}, {URL: {"doc": DOC}}, {URL: {"at": "1", "doc": DOC}},
    {URL: {"at": True, "doc": DOC}}, {URL: {"at": NOW + 3600, "doc": DOC}},
    {URL: {"at": NOW - LIFETIME, "doc": DOC}}, {URL: {"at": NOW, "doc": ["?"]}},
    {URL: {"at": NOW, "doc": {**DOC, "token_endpoint": "https://evil.example/token"}}},
    {URL: {"at": NOW, "doc": {**DOC, "token_endpoint": f"http://{BASE[8:]}/token"}}},
    {URL: {"at": NOW, "doc": {**DOC, "token_endpoint": None}}},
    {URL.replace("https", "http"): {"at": NOW, "doc": DOC}},
    {URL: {"at": NOW, "doc": {**DOC, "refresh_token": "1.Aabc"}}},
    {URL: {"at": NOW, "doc": {**DOC, "padding": "x" * MAX_BYTES}}},
], ids=lambda e: json.dumps(e)[:40])
def test_a_malformed_saved_entry_is_ignored(entry):
    discovery = Discovery()
    discovery.load(entry, NOW)
    assert discovery.answer(URL, NOW) is None
    assert discovery.answer(URL.replace("https", "http"), NOW) is None


@pytest.mark.parametrize("text", ["<html>proxy</html>", "[1]", '{"token_endpoint": 1}',
                                  json.dumps({**DOC, "x": "y" * MAX_BYTES})])
def test_an_unusable_answer_is_not_kept_and_drops_the_one_held(text):
    discovery = Discovery()
    discovery.learn(URL, json.dumps(DOC), NOW)

    assert not discovery.learn(URL, text, NOW)
    assert discovery.answer(URL, NOW) is None
    assert discovery.entry() == {}


def test_the_saved_answers_are_bounded_newest_first():
    discovery = Discovery()
    big = {**DOC, "claims_supported": ["c" * 100] * 20}  # about 2.4 KB
    urls = [URL.replace("contoso", f"tenant{n}") for n in range(4)]
    for n, url in enumerate(urls):
        assert discovery.learn(url, json.dumps(big), NOW + n)

    kept = discovery.entry()[KEY]

    assert list(kept) == [urls[3], urls[2]]
    assert len(json.dumps(kept)) < MAX_BYTES + 200


def test_forget_drops_an_answer():
    discovery = Discovery()
    discovery.learn(URL, json.dumps(DOC), NOW)
    discovery.forget([URL])
    assert discovery.answer(URL, NOW) is None and discovery.entry() == {}


def test_acceptable_needs_https_and_endpoints_on_the_host():
    assert acceptable(URL, DOC)
    assert acceptable(URL, AZURE_AD), "Azure AD's own answer (userinfo is on Graph's host)"
    assert len(json.dumps(AZURE_AD, separators=(",", ":"))) < 2048
    assert acceptable(URL, {"api-version": "1.1", "metadata": []})
    assert not acceptable(URL, {**DOC, "device_authorization_endpoint": "https://x.net/d"})
    assert not acceptable(URL.replace("https", "http"), DOC)


def test_discovery_url_names_msal_discovery_requests_only():
    assert discovery_url(URL) == URL
    instance = "https://login.microsoftonline.com/common/discovery/instance"
    params = {"authorization_endpoint": "https://login.microsoftonline.com/common/oauth2/"
              "authorize", "api-version": "1.1"}
    assert discovery_url(instance, params) == (
        f"{instance}?api-version=1.1&authorization_endpoint=https%3A%2F%2Flogin."
        "microsoftonline.com%2Fcommon%2Foauth2%2Fauthorize")
    for url, query in [
        (f"{BASE}/token", None),  # the token endpoint: never
        (f"{BASE}/devicecode", None),
        (URL.replace("https", "http"), None),
        (URL + "?x=1", None),
        (URL, {"x": "1"}),
        (instance, None),
        ("https://graph.microsoft.com/v1.0/me", None),
    ]:
        assert discovery_url(url, query) is None, url

