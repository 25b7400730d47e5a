"""Continuous access evaluation end to end (issue 24): the sandbox issues day-long tokens
to a client that declares ``cp1``, and after a critical event (sessions revoked, password
changed, account disabled, the Runner's address out of a location policy's range) Graph
refuses them with a claims challenge. The plugin renews once with the challenge's claims
for every bot of the credential: the request is repeated and succeeds where Microsoft
allows it, and otherwise the bot ends with ``AuthorizationRequired`` naming the reason and
the command that fixes it, with one Maestro alert. Without CAE (the tenant's switch, or
``MS365_CAE=0``) tokens live 60 to 90 minutes and nothing is refused before it expires.

Microsoft's side, as the sandbox models it: "How to use Continuous Access Evaluation
enabled APIs in your applications" and "Claims challenges, claims requests and client
capabilities" (learn.microsoft.com/entra/identity-platform), the answers quoted in
Azure/azure-cli#23635 (the challenge's claims after ``revokeSignInSessions``, then
AADSTS50173) and microsoftgraph/msgraph-sdk-powershell#1741 (Graph's message)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from botcity.plugins.ms365.credentials import AuthorizationRequired, MS365CredentialsPlugin
from botcity.plugins.ms365.credentials._clock import CLOCK
from botcity.plugins.ms365.credentials.renewal import window
from botcity.plugins.ms365.sandbox.graph import claims_challenge
from conftest import DEADLINE, bot_env, newest_token, script

LABEL = "ms365"
HOUR = 3600


def authorized(sandbox, maestro) -> MS365CredentialsPlugin:
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(["basic"], consent=sandbox.consent_redirect)
    return plugin


def stored(sandbox) -> dict:
    return json.loads(newest_token(sandbox, LABEL))


def access_entry(sandbox) -> dict:
    [entry] = stored(sandbox)["AccessToken"].values()
    return entry


def life(entry: dict) -> int:
    return int(entry["expires_on"]) - int(entry["cached_at"])


def request_claims(request) -> dict:
    claims = request.form().get("claims")
    return json.loads(claims) if claims else {}


def with_challenge(sandbox) -> list:
    """Token requests that carry a claims challenge (``nbf``), not only msal's ``xms_cc``."""
    return [r for r in sandbox.token_requests()
            if "nbf" in request_claims(r).get("access_token", {})]


def me_calls(sandbox) -> list[int]:
    return [r.status for r in sandbox.requests("graph") if r.path == "/v1.0/me"]


# -- Graph and the identity platform as Microsoft's are ---------------------------------------

def test_a_cp1_token_lives_20_to_28_hours_and_says_when_to_refresh(sandbox, maestro):
    authorized(sandbox, maestro)
    entry = access_entry(sandbox)

    assert 20 * HOUR <= life(entry) <= 28 * HOUR
    # Microsoft's refresh_in (half the life), which msal keeps as refresh_on
    assert int(entry["refresh_on"]) - int(entry["cached_at"]) == life(entry) // 2
    assert sandbox.tenant.access_tokens[entry["secret"]].cae
    [grant] = sandbox.token_requests()
    assert request_claims(grant) == {"access_token": {"xms_cc": {"values": ["CP1"]}}}


def test_graph_s_challenge_is_microsoft_s_and_a_plain_401_has_none(sandbox, maestro):
    authorized(sandbox, maestro)
    secret = access_entry(sandbox)["secret"]
    me = f"{sandbox.graph_url}/v1.0/me"
    event = sandbox.tenant.revoke_sessions()

    answer = requests.get(me, headers={"Authorization": f"Bearer {secret}"},
                          verify=sandbox.ca_file, timeout=10)

    assert answer.status_code == 401
    header = answer.headers["WWW-Authenticate"]
    assert header.startswith('Bearer realm="", authorization_uri="https://login.microsoftonline'
                             '.com/common/oauth2/authorize"')
    assert 'error="insufficient_claims"' in header
    claims = re.search(r'claims="([^"]+)"', header).group(1)
    assert base64.b64decode(claims).decode() == (
        '{"access_token":{"nbf":{"essential":true, "value":"EPOCH"}}}'.replace(
            "EPOCH", str(int(event))))
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "TokenIssuedBeforeRevocationTimestamp" in answer.json()["error"]["message"]

    # byte for byte the challenge of Microsoft's documentation, for its event's time
    assert claims_challenge(1604106651) == (
        "eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYwNDEwNjY1MSJ9fX0=")

    plain = requests.get(me, headers={"Authorization": "Bearer not-a-token"},
                         verify=sandbox.ca_file, timeout=10)
    assert plain.status_code == 401 and "error=" not in plain.headers["WWW-Authenticate"]
    assert plain.json()["error"]["code"] == "InvalidAuthenticationToken"


# -- a day-long token, renewed in its window ----------------------------------------------------

def test_the_bot_renews_a_day_long_token_inside_its_window(sandbox, maestro, monkeypatch):
    """The sandbox's clock is moved forward (its ``Date`` headers, which the plugin's clock
    follows), not slept through: before the window nothing is renewed; at this bot's moment in
    it, one renewal, which is again a day-long token."""
    monkeypatch.setattr(CLOCK, "offset", CLOCK.offset)  # the process's clock, put back after
    authorized(sandbox, maestro)
    entry = access_entry(sandbox)
    begin, end = window(entry)
    assert begin == int(entry["refresh_on"]), "the window opens where Microsoft says"
    bot = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    account = bot.ms365_account
    account.get_current_user_data()
    held = bot.token_store.get_access_token(username=account.con.username)
    due = account.con.lifecycle.schedule.due_at(held)
    assert begin <= due <= end
    sandbox.requests.clear()

    sandbox.skew_clock(begin - 120 - time.time())  # two minutes before the window
    for _ in range(2):  # the first answer's Date sets the clock, the second call reads it
        account.get_current_user_data()
    assert sandbox.token_requests() == [], "not before refresh_on"

    sandbox.skew_clock(due + 2 - time.time())
    for _ in range(2):
        account.get_current_user_data()

    [grant] = sandbox.token_requests("refresh_token")
    assert begin <= grant.at + sandbox.identity.clock_offset <= end + 5, "inside the window"
    renewed = access_entry(sandbox)
    assert 20 * HOUR <= life(renewed) <= 28 * HOUR
    assert stored(sandbox)["botcity"]["generation"] > 0
    account.get_current_user_data()
    assert len(sandbox.token_requests()) == 1


# -- critical events during a run ------------------------------------------------------------

#: event -> (Microsoft's code, the reason the error names, what it says to do)
EVENTS = {
    "revoke_sessions": ("AADSTS50173", "revoked", "botcity-ms365 login"),
    "change_password": ("AADSTS50173", "password", "botcity-ms365 login"),
    "disable_account": ("AADSTS50057", "disabled", "botcity-ms365 login"),
    # a location policy: the tenant's administrator must let the Runner's network in
    "fail_ip_policy": ("AADSTS53003", "conditional access",
                       "Signing in again does not help until the policy allows the bot"),
}


@pytest.mark.parametrize("event", list(EVENTS))
def test_a_critical_event_ends_the_run_with_its_reason_the_login_command_and_one_alert(
        sandbox, maestro, event):
    plugin = authorized(sandbox, maestro)
    plugin.ms365_account.get_current_user_data()
    sandbox.requests.clear()
    at = getattr(sandbox.tenant, event)()

    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()

    code, reason, fix = EVENTS[event]
    message = str(caught.value)
    assert caught.value.code == code and reason in message and fix in message
    assert me_calls(sandbox) == [401], "the refused call is not repeated"
    [grant] = sandbox.token_requests()
    assert grant.status == 400
    assert request_claims(grant) == {"access_token": {
        "nbf": {"essential": True, "value": str(int(at))}, "xms_cc": {"values": ["CP1"]}}}, (
        "Graph's challenge, merged with msal's client capability")
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and alert["message"] == message, "the same words"
    assert code in alert["message"] and fix in alert["message"]

    with pytest.raises(AuthorizationRequired):
        plugin.ms365_account.get_current_user_data()
    assert me_calls(sandbox) == [401] and len(sandbox.token_requests()) == 1, (
        "nothing more is asked once Microsoft said a person is needed")
    assert len(sandbox.maestro.alerts) == 1


def test_an_ip_policy_back_in_range_renews_with_the_claims_and_repeats_the_request(
        sandbox, maestro):
    """The Runner's address left the range and came back: Graph refuses the token issued
    before, the renewal with the challenge's claims is granted, the call is repeated once."""
    plugin = authorized(sandbox, maestro)
    plugin.ms365_account.get_current_user_data()
    generation = stored(sandbox)["botcity"]["generation"]
    sandbox.requests.clear()
    at = sandbox.tenant.fail_ip_policy()
    sandbox.tenant.pass_ip_policy()

    user = plugin.ms365_account.get_current_user_data()

    assert user.user_principal_name == sandbox.tenant.user.upn
    assert me_calls(sandbox) == [401, 200]
    [grant] = with_challenge(sandbox)
    assert grant.status == 200
    assert request_claims(grant)["access_token"]["nbf"]["value"] == str(int(at))
    assert len(sandbox.token_requests()) == 1
    assert stored(sandbox)["botcity"]["generation"] == generation + 1, (
        "the renewed token is stored for the other bots")
    assert sandbox.maestro.alerts == []
    sandbox.requests.clear()
    other = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    other.ms365_account.get_current_user_data()
    assert sandbox.token_requests() == [] and me_calls(sandbox) == [200]


def test_after_revoked_sessions_a_person_s_sign_in_gets_every_bot_going_again(
        sandbox, maestro):
    plugin = authorized(sandbox, maestro)
    sandbox.tenant.revoke_sessions()
    with pytest.raises(AuthorizationRequired):
        plugin.ms365_account.get_current_user_data()

    # botcity-ms365 login: a person signs in again
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL).authenticate(
        ["basic"], consent=sandbox.consent_redirect, force=True)
    sandbox.requests.clear()
    later = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)

    assert later.ms365_account.get_current_user_data().user_principal_name
    assert sandbox.token_requests() == [] and me_calls(sandbox) == [200]


# -- eight bots, one challenge -------------------------------------------------------------------

HERD_BOT = """
import os, sys, time
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import AuthorizationRequired, MS365CredentialsPlugin

maestro = BotMaestroSDK(os.environ["BOTCITY_SERVER"], os.environ["BOTCITY_LOGIN"],
                        os.environ["BOTCITY_KEY"])
maestro.login()
plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365", consent="none")
plugin.ms365_account.get_current_user_data()
print("ready", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.01)
try:
    plugin.ms365_account.get_current_user_data()
    print("ok", flush=True)
except AuthorizationRequired as exc:
    print("refused", exc.code, flush=True)
"""


def herd_meets(sandbox, tmp_path: Path, event, bots: int = 8) -> list[str]:
    """``bots`` bot processes (one per Runner) load the stored token and call Graph; then
    ``event()`` happens, and they all call Graph again at the same moment: what each
    printed last."""
    go = tmp_path / "go"
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    argv = [*script(tmp_path / "herd_bot.py", HERD_BOT), str(go)]
    procs = [subprocess.Popen(argv, env=env, text=True, stdin=subprocess.DEVNULL,  # noqa: S603
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(bots)]
    try:
        for proc in procs:  # each one's first line, bounded by the bot's own 60 s
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", line + proc.stderr.read()[-2000:] if proc.stderr else line
        sandbox.requests.clear()
        event()
        go.touch()
        outputs = [proc.communicate(timeout=DEADLINE) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [out.strip().splitlines()[-1] if out.strip() else err[-2000:]
            for out, err in outputs]


def test_eight_bots_meeting_the_same_challenge_renew_once_with_its_claims(
        sandbox, maestro, tmp_path):
    authorized(sandbox, maestro)
    generation = stored(sandbox)["botcity"]["generation"]

    def out_of_range_and_back() -> None:
        sandbox.tenant.fail_ip_policy()
        sandbox.tenant.pass_ip_policy()

    said = herd_meets(sandbox, tmp_path, out_of_range_and_back)

    assert said == ["ok"] * 8, said
    assert sorted(me_calls(sandbox)) == [200] * 8 + [401] * 8, "all met it; each asked again"
    assert len(with_challenge(sandbox)) == 1, "one bot renewed with the claims, for all"
    assert len(sandbox.token_requests()) == 1
    assert stored(sandbox)["botcity"]["generation"] == generation + 1
    assert sandbox.maestro.alerts == []


def test_eight_bots_meeting_revoked_sessions_ask_microsoft_once_and_alert_once(
        sandbox, maestro, tmp_path):
    authorized(sandbox, maestro)

    said = herd_meets(sandbox, tmp_path, sandbox.tenant.revoke_sessions)

    assert len(said) == 8 and all(s.startswith("refused") for s in said), said
    assert me_calls(sandbox) == [401] * 8, "all met it, none asked again"
    assert said == ["refused AADSTS50173"] * 8, (
        "the bot that asked, and the others from its note, name Microsoft's code")
    assert len(with_challenge(sandbox)) == 1 and len(sandbox.token_requests()) == 1, (
        "the others read the refusal beside the token instead of asking again")
    [alert] = sandbox.maestro.alerts
    assert "botcity-ms365 login --label ms365" in alert["message"]


# -- without continuous access evaluation ------------------------------------------------------

def ordinary(entry: dict) -> bool:
    return 60 * 60 <= life(entry) <= 90 * 60 and "refresh_on" not in entry


@pytest.mark.parametrize("sandbox_options", [{"cae": False}], ids=["tenant without CAE"])
def test_a_tenant_without_cae_issues_60_to_90_minute_tokens_and_everything_works(
        sandbox, maestro, sandbox_options):
    plugin = authorized(sandbox, maestro)
    entry = access_entry(sandbox)
    assert ordinary(entry) and not sandbox.tenant.access_tokens[entry["secret"]].cae
    sandbox.force_expiry()

    assert plugin.ms365_account.get_current_user_data().user_principal_name
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert ordinary(access_entry(sandbox))
    sandbox.tenant.revoke_sessions()
    assert plugin.ms365_account.get_current_user_data().user_principal_name, (
        "no challenge: an ordinary token works until it expires")
    assert len(sandbox.token_requests()) == 2


def test_ms365_cae_0_gets_ordinary_tokens_that_work_until_they_expire(
        sandbox, maestro, monkeypatch):
    monkeypatch.setenv("MS365_CAE", "0")
    plugin = authorized(sandbox, maestro)
    assert ordinary(access_entry(sandbox))
    sandbox.tenant.revoke_sessions()
    sandbox.requests.clear()

    assert plugin.ms365_account.get_current_user_data().user_principal_name
    assert sandbox.token_requests() == [] and me_calls(sandbox) == [200]

    sandbox.force_expiry()  # its hour is over: the renewal meets the revocation
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()
    assert caught.value.code == "AADSTS50173"
    assert all("claims" not in r.form() for r in sandbox.token_requests())
    assert len(sandbox.maestro.alerts) == 1


def test_the_sandbox_keeps_a_fixed_lifetime_for_tests(sandbox, maestro):
    sandbox.tenant.access_token_lifetime = 600
    authorized(sandbox, maestro)
    assert life(access_entry(sandbox)) == 600 and "refresh_on" not in access_entry(sandbox), (
        "a short fixed lifetime applies to CAE tokens too, without refresh_in")
    sandbox.tenant.cae_access_token_lifetime = 86400
    sandbox.force_expiry()
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL
                           ).ms365_account.get_current_user_data()
    renewed = access_entry(sandbox)
    assert life(renewed) == 86400 and int(renewed["refresh_on"]) - int(
        renewed["cached_at"]) == 43200


def test_a_day_of_hourly_runs_renews_twice_with_cp1_and_about_hourly_without():
    """``benchmarks/cae_days.py``'s simulation (the plugin's lifecycle, the sandbox's
    lifetimes, a simulated clock) over three days: a bot scheduled hourly never starts on an
    expired day-long token and renews it about every 12 hours; without cp1 it renews more
    than ten times a day, and many of its runs start on an expired token."""
    import random

    from cae_days import simulate

    random.seed(24)
    with_cp1, without = simulate(1, 60, True, days=3), simulate(1, 60, False, days=3)

    assert with_cp1["starts_per_day"] == without["starts_per_day"] == 24
    assert with_cp1["cold_starts_per_day"] == 0 and 1.5 <= with_cp1["grants_per_day"] <= 3
    assert without["grants_per_day"] >= 10 and without["cold_starts_per_day"] >= 5
