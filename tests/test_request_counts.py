"""What a bot run costs in requests (the fast check of benchmarks/costs.py): counts, not
times. Every extra Maestro or token request is paid by every bot run.

    warm start                         1 read
    refresh during a run (the leader)  1 token request + 1 write (added), no Graph 401
    another bot refreshed already      1 read
    refresh at start (token expired)   the start's read + 1 claim write + 1 read
                                       + 1 token request + 1 write (added)
    ... of a lone bot (after QUIET_STARTS such starts met no other bot)
                                       the start's read + 1 token request + 1 write

A renewal asks the identity platform one thing, the token: msal's discovery answers are
saved with the token (``discovery.py``). When they are missing or unusable, the renewal
fetches them (one more request) and saves them, and the next one is back to one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials.renewal import QUIET_STARTS, Schedule, window
from botcity.plugins.ms365.sandbox import expire_token_text
from conftest import newest_token, with_discovery

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
    leading = plugin.ms365_account.con.lifecycle.schedule.leading  # it renewed at start: it leads
    plugin.ms365_account.con.lifecycle.schedule = Schedule(draw=lambda: 0.0)
    plugin.ms365_account.con.lifecycle.schedule.leading = leading
    return plugin


def until_due(plugin: MS365CredentialsPlugin) -> float:
    """Wait (bounded by the token's life) until the plugin's access token is due; return
    when it expires."""
    token = plugin.token_store.get_access_token(username=plugin.ms365_account.con.username)
    expires_on = float(token["expires_on"])
    assert expires_on - time.time() <= LIFETIME
    schedule = plugin.ms365_account.con.lifecycle.schedule
    time.sleep(max(0.0, schedule.due_at(token) - time.time()) + 0.05)
    assert plugin.ms365_account.con.lifecycle.due()
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
    assert stored.requests("identity") == [grant], "no discovery"
    assert grant.at < expires_on, "renewed before the access token expired"
    assert plugin.ms365_account.con.refresh_count == 2
    assert credential_requests(stored, "GET") == 0, "the leader does not look"
    assert credential_requests(stored, "POST") == 1, "the renewed token, added"
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
    schedule = first.ms365_account.con.lifecycle.schedule
    assert schedule.due_at(renewed) == pytest.approx(begin, abs=0.01), (
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
    assert len(stored.requests("identity")) == 1, "the token request only: no discovery"
    assert credential_requests(stored, "GET") == 2, (
        "the start's read, the claim's read back (the renewed token is added: no read)")
    assert credential_requests(stored, "POST") == 2, "the claim, and the rotated token"
    token = json.loads(newest_token(stored, LABEL))
    assert "renewing" not in token["botcity"], "the renewed token carries no claim"
    assert token["botcity"]["quiet"] == 1, "it met no other bot"
    assert plugin.ms365_account.con.lifecycle.schedule.leading, (
        "the bot that renewed goes first next time")


def cold_start(sandbox, maestro) -> MS365CredentialsPlugin:
    sandbox.force_expiry()
    sandbox.requests.clear()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()
    plugin.ms365_account.get_current_user_data()
    return plugin


def test_a_lone_bot_s_cold_start_is_one_read_one_token_request_one_write(stored, maestro):
    """A bot that runs alone on its credential (its last starts met no other bot) renews
    an expired token as a hand-written bot does: no claim (issue 23)."""
    for _ in range(QUIET_STARTS):
        cold_start(stored, maestro)  # claimed: they meet nobody
        assert credential_requests(stored, "POST") == 2

    cold_start(stored, maestro)

    assert len(stored.token_requests()) == 1
    assert len(stored.requests("identity")) == 1, "the token request only"
    assert credential_requests(stored, "GET") == 1, "the start's read"
    [write] = stored.requests("maestro", path_contains="/api/v2/credential", method="POST")
    assert write.path == f"/api/v2/credential/{LABEL}/key" and ".next." in write.json()["key"]
    assert [r.status for r in stored.requests("graph")] == [200]
    assert json.loads(newest_token(stored, LABEL))["botcity"]["quiet"] == QUIET_STARTS + 1


def test_bots_that_met_at_a_lone_bot_s_start_claim_at_the_next(stored, maestro):
    """Two bots start together on a credential that had been a lone bot's: both renew
    (what a lone bot's start costs a herd, once), both renewals are added, and the next
    start claims before renewing again."""
    for _ in range(QUIET_STARTS):
        cold_start(stored, maestro)
    stored.force_expiry()
    stored.requests.clear()
    first = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    second = MS365CredentialsPlugin(maestro=stored.maestro_sdk(), credential_label=LABEL)
    first.authenticate()  # both read the expired token before either renewed
    second.authenticate()
    assert len(stored.token_requests("refresh_token")) == 2
    assert len([k for k in (i["key"] for i in stored.maestro.credentials[LABEL])
                if k.startswith("token.next.")]) == QUIET_STARTS + 2, "both renewals added"

    plugin = cold_start(stored, maestro)

    assert plugin.ms365_account.con.refresh_count == 1
    writes = stored.requests("maestro", path_contains="/api/v2/credential", method="POST")
    assert [".claim." in w.json()["key"] for w in writes] == [True, False], (
        "a claim first: the credential is shared")
    assert json.loads(newest_token(stored, LABEL))["botcity"].get("quiet", 0) == 0


def test_with_coordination_off_a_bot_renews_only_at_expiry_without_looking(
        stored, maestro, monkeypatch):
    monkeypatch.setenv("MS365_COORDINATE_REFRESH", "0")
    stored.tenant.access_token_lifetime = LIFETIME
    stored.force_expiry()
    plugin = started(stored, maestro)
    con = plugin.ms365_account.con
    token = plugin.token_store.get_access_token(username=con.username)
    schedule = plugin.ms365_account.con.lifecycle.schedule
    time.sleep(max(0.0, schedule.due_at(token) - time.time()) + 0.05)
    assert not plugin.ms365_account.con.lifecycle.due(), "no early renewal"
    time.sleep(max(0.0, float(token["expires_on"]) - time.time()) + 0.05)
    stored.requests.clear()

    plugin.ms365_account.get_current_user_data()

    assert len(stored.token_requests()) == 1
    assert credential_requests(stored, "GET") == 0, "no look"
    assert credential_requests(stored, "POST") == 1, "the renewed token, added"


# -- one identity request per renewal, whichever store ------------------------------------
class Bots:
    """Bot processes of one store (``file``: o365_token.txt in the working directory;
    ``maestro``: the Maestro credential), on a token a person authorized. Each plugin is
    a new process as far as msal is concerned (a new msal client)."""

    def __init__(self, sandbox, kind: str) -> None:
        self.sandbox, self.kind = sandbox, kind
        if kind == "maestro":
            sandbox.put_app_credentials(LABEL)
        self.start().authenticate(consent=sandbox.consent_redirect)

    def start(self) -> MS365CredentialsPlugin:
        if self.kind == "maestro":
            return MS365CredentialsPlugin(maestro=self.sandbox.maestro_sdk(),
                                          credential_label=LABEL)
        return MS365CredentialsPlugin(self.sandbox.app.client_id, self.sandbox.app.secret)

    @property
    def text(self) -> str:
        if self.kind == "maestro":
            return str(newest_token(self.sandbox, LABEL))
        return Path("o365_token.txt").read_text()

    @text.setter
    def text(self, value: str) -> None:
        if self.kind == "maestro":  # an operator replaces the token and its renewals
            items = self.sandbox.maestro.credentials[LABEL]
            items[:] = [i for i in items if not i["key"].startswith("token.")]
            self.sandbox.maestro.put_secret(LABEL, "token", value)
        else:
            Path("o365_token.txt").write_text(value)

    def expire(self) -> None:
        """The stored access token expired (a bot starts after a quiet hour)."""
        self.sandbox.tenant.expire_access_tokens()
        self.text = expire_token_text(self.text)

    def saved_discovery(self) -> dict:
        return json.loads(self.text)["botcity"].get("discovery", {})

    def renew_at_start(self) -> MS365CredentialsPlugin:
        """A bot starts on the expired stored token and makes a Graph call."""
        self.expire()
        self.sandbox.requests.clear()
        plugin = self.start()
        plugin.authenticate()
        plugin.ms365_account.get_current_user_data()
        assert plugin.ms365_account.con.refresh_count == 1
        return plugin


@pytest.fixture(params=["file", "maestro"])
def bots(request, sandbox) -> Bots:
    return Bots(sandbox, request.param)


def test_a_renewal_at_start_is_one_identity_request(bots):
    sandbox = bots.sandbox

    bots.renew_at_start()

    assert [r.path for r in sandbox.requests("identity")] == [
        r.path for r in sandbox.token_requests()], "the token request only"
    assert len(sandbox.token_requests()) == 1
    if bots.kind == "maestro":  # the claim protocol is kept: its writes are not saved
        assert credential_requests(sandbox, "GET") == 2
        assert credential_requests(sandbox, "POST") == 2
    assert [r.status for r in sandbox.requests("graph")] == [200]


def test_a_renewal_during_a_run_started_warm_is_one_identity_request(bots):
    """A bot that started on a valid token (no msal client yet) renews during its run."""
    sandbox = bots.sandbox
    sandbox.tenant.access_token_lifetime = LIFETIME
    bots.renew_at_start()  # another bot stored a short-lived token
    plugin = bots.start()
    plugin.authenticate()
    plugin.ms365_account.con.lifecycle.schedule = Schedule(draw=lambda: 0.0)
    until_due(plugin)
    sandbox.requests.clear()

    plugin.ms365_account.get_current_user_data()

    assert len(sandbox.token_requests()) == 1
    assert len(sandbox.requests("identity")) == 1, "no discovery"
    if bots.kind == "maestro":  # a follower looks, then adds the renewed token
        assert credential_requests(sandbox, "GET") == 1
        assert credential_requests(sandbox, "POST") == 1
    assert [r.status for r in sandbox.requests("graph")] == [200]


def _other_host(entry: dict) -> dict:
    """The saved answers, their token endpoint moved to another host."""
    [(url, item)] = entry.items()
    doc = dict(item["doc"], token_endpoint="https://login.example.net/t/oauth2/v2.0/token")
    return {url: {**item, "doc": doc}}


def _other_tenant(entry: dict) -> dict:
    """The saved answers, as if fetched for another tenant."""
    [(url, item)] = entry.items()
    return {url.replace("/v2.0/", "x/v2.0/"): item}


BROKEN = {
    "removed": lambda entry: None,
    "not-an-object": lambda entry: "garbage",
    "not-a-document": lambda entry: {url: {"at": item["at"], "doc": ["?"]}
                                     for url, item in entry.items()},
    "without-endpoints": lambda entry: {url: {"at": item["at"], "doc": {"issuer": "x"}}
                                        for url, item in entry.items()},
    "a-day-old": lambda entry: {url: {**item, "at": item["at"] - 86_401}
                                for url, item in entry.items()},
    "another-host": _other_host,
    "another-tenant": _other_tenant,
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_without_usable_saved_discovery_a_renewal_fetches_it_once(bots, how):
    """Missing, malformed, old, or for another host or tenant: the renewal works (msal
    fetches: 2 identity requests) and saves Microsoft's answers; the next is back to 1."""
    sandbox = bots.sandbox
    good = bots.saved_discovery()
    assert len(good) == 1
    bots.text = with_discovery(bots.text, BROKEN[how](good))

    bots.renew_at_start()

    assert [r.path.rsplit("/", 1)[-1] for r in sandbox.requests("identity")] == [
        "openid-configuration", "token"]
    assert bots.saved_discovery().keys() == good.keys(), "Microsoft's answers saved again"

    bots.renew_at_start()  # the next bot process

    assert len(sandbox.requests("identity")) == 1


def test_an_out_of_date_saved_discovery_costs_one_failed_request_once(bots):
    """A saved answer that looks right but names a token endpoint that is no more: the
    token request fails, Microsoft's current answer is fetched, and the renewal is made
    with it; the next one needs the token request only."""
    sandbox = bots.sandbox
    [(url, item)] = bots.saved_discovery().items()
    moved = item["doc"]["token_endpoint"].replace("/oauth2/v2.0/token", "/oauth2/v1/token")
    bots.text = with_discovery(bots.text, {
        url: {**item, "doc": {**item["doc"], "token_endpoint": moved}}})

    plugin = bots.renew_at_start()

    assert [r.path.rsplit("/", 2)[-2:] for r in sandbox.requests("identity")] == [
        ["v1", "token"], [".well-known", "openid-configuration"], ["v2.0", "token"]]
    assert plugin.ms365_account.con.lifecycle.outcome == "saved"
    assert bots.saved_discovery()[url]["doc"]["token_endpoint"] != moved

    bots.renew_at_start()

    assert [r.path for r in sandbox.requests("identity")] == [
        r.path for r in sandbox.token_requests()]
