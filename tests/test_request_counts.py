"""What a bot run costs in requests (the fast check of benchmarks/costs.py): counts, not
times. Every extra Maestro or token request is paid by every bot run.

    warm start                         1 read
    refresh during a run (the leader)  1 token request + 1 read + 1 write, no Graph 401
    another bot refreshed already      1 read
    refresh at start (token expired)   the start's read + 1 claim write + 1 read
                                       + 1 token request + 1 read + 1 write
"""

from __future__ import annotations

import time

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials.renewal import Schedule, window

LABEL = "ms365"
#: access tokens this short come due (at the earliest draw) 2.4 s before they expire
LIFETIME = 4


def credential_requests(sandbox, method):
    return len(sandbox.requests("maestro", path_contains="/api/v2/credential", method=method))


@pytest.fixture
def stored(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    return sandbox


def started(sandbox, maestro) -> MS365CredentialsPlugin:
    """A bot that started on a valid token and will renew it at the earliest moment of
    the refresh window."""
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()
    leading = plugin.token_store.schedule.leading  # it renewed at start: it leads
    plugin.token_store.schedule = Schedule(draw=lambda: 0.0)
    plugin.token_store.schedule.leading = leading
    return plugin


def until_due(plugin: MS365CredentialsPlugin) -> float:
    """Wait (bounded by the token's life) until the plugin's access token is due; return
    when it expires."""
    token = plugin.token_store.get_access_token(username=plugin.ms365_account.con.username)
    expires_on = float(token["expires_on"])
    assert expires_on - time.time() <= LIFETIME
    time.sleep(max(0.0, plugin.token_store.schedule.due_at(token) - time.time()) + 0.05)
    assert plugin.token_store.refresh_due(plugin.ms365_account.con.username)
    return expires_on


def test_warm_start_is_one_maestro_read_and_no_token_request(stored, maestro):
    stored.requests.clear()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()
    plugin.ms365_account.get_current_user_data()

    assert credential_requests(stored, "GET") == 1
    assert credential_requests(stored, "POST") == 0
    assert stored.requests("identity") == []


def test_a_refresh_during_a_run_is_one_read_one_token_request_one_write(stored, maestro):
    stored.tenant.access_token_lifetime = LIFETIME
    stored.force_expiry()
    plugin = started(stored, maestro)  # refreshes to a short-lived token
    expires_on = until_due(plugin)
    stored.requests.clear()

    plugin.ms365_account.get_current_user_data()

    [grant] = stored.token_requests()
    assert grant.at < expires_on, "renewed before the access token expired"
    assert plugin.ms365_account.con.refresh_count == 2
    assert credential_requests(stored, "GET") == 1
    assert credential_requests(stored, "POST") == 1
    assert [r.status for r in stored.requests("graph")] == [200], "no 401 round trip"


def test_a_bot_due_after_another_refreshed_reads_once_and_adopts(stored, maestro):
    stored.tenant.access_token_lifetime = LIFETIME
    stored.force_expiry()
    first = started(stored, maestro)
    second = started(stored, stored.maestro_sdk())  # both hold the same token
    until_due(first)
    first.ms365_account.get_current_user_data()  # renews, writes
    renewed = first.token_store.get_access_token(username=first.ms365_account.con.username)
    begin, _ = window(renewed)
    assert first.token_store.schedule.due_at(renewed) == pytest.approx(begin, abs=0.01), (
        "the renewer goes first next time: its moment opens the next window")
    until_due(second)  # a follower: its moment comes after the leader's
    stored.requests.clear()

    second.ms365_account.get_current_user_data()

    assert stored.token_requests() == []
    assert second.ms365_account.con.refresh_count == 0, "it started on the first one's token"
    assert credential_requests(stored, "GET") == 1
    assert credential_requests(stored, "POST") == 0
    assert [r.status for r in stored.requests("graph")] == [200]


def test_a_bot_starting_on_an_expired_token_claims_it_then_renews(stored, maestro):
    stored.force_expiry()
    stored.requests.clear()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()  # at start: the token in Maestro has expired

    assert len(stored.token_requests()) == 1
    assert credential_requests(stored, "GET") == 3, (
        "the start's read, the claim's read back, the read before writing")
    assert credential_requests(stored, "POST") == 2, "the claim, and the rotated token"
    token = __import__("json").loads(stored.maestro.secret(LABEL, "token"))
    assert "renewing" not in token["botcity"], "the renewed token carries no claim"
    assert plugin.token_store.schedule.leading, "the bot that renewed goes first next time"


def test_with_coordination_off_a_bot_renews_only_at_expiry_without_looking(
        stored, maestro, monkeypatch):
    monkeypatch.setenv("MS365_COORDINATE_REFRESH", "0")
    stored.tenant.access_token_lifetime = LIFETIME
    stored.force_expiry()
    plugin = started(stored, maestro)
    con = plugin.ms365_account.con
    token = plugin.token_store.get_access_token(username=con.username)
    time.sleep(max(0.0, plugin.token_store.schedule.due_at(token) - time.time()) + 0.05)
    assert not plugin.token_store.refresh_due(con.username), "no early renewal"
    time.sleep(max(0.0, float(token["expires_on"]) - time.time()) + 0.05)
    stored.requests.clear()

    plugin.ms365_account.get_current_user_data()

    assert len(stored.token_requests()) == 1
    assert credential_requests(stored, "GET") == 1, "no look; the save's newest-wins read"
    assert credential_requests(stored, "POST") == 1
