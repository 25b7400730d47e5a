"""When a process renews the access token (renewal.py): its moment in the refresh
window, the last renewer first, and an early renewal that fails."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials.renewal import Schedule, window

HOUR = 3600


def token(issued_ago: float, life: int = HOUR) -> dict:
    now = int(time.time())
    return {"cached_at": str(int(now - issued_ago)), "expires_on": str(int(now - issued_ago)
                                                                       + life)}


def test_the_window_of_an_hour_long_token_is_the_ten_minutes_before_the_last_one():
    entry = token(0)
    begin, end = window(entry)
    assert end == int(entry["expires_on"]) - 60
    assert begin == end - 600


@pytest.mark.parametrize(("leading", "draw", "offset"), [
    (True, 0.0, 0), (True, 1.0, 60), (False, 0.0, 60), (False, 1.0, 600)])
def test_the_last_renewer_draws_in_the_first_tenth_the_others_in_the_rest(
        leading, draw, offset):
    entry = token(0)
    begin, _ = window(entry)
    schedule = Schedule(draw=lambda: draw)
    schedule.leading = leading
    assert schedule.due_at(entry) == pytest.approx(begin + offset, abs=0.01)
    assert not schedule.due(entry)


def test_a_token_first_seen_inside_its_window_is_drawn_in_what_is_left():
    entry = token(HOUR - 300)  # five minutes left: inside the window, after the tenth
    _, end = window(entry)
    early, late = Schedule(draw=lambda: 0.0), Schedule(draw=lambda: 1.0)
    assert early.due_at(entry) == pytest.approx(time.time(), abs=1)
    assert late.due_at(entry) == pytest.approx(end, abs=0.01)


def test_the_moment_is_drawn_once_per_token():
    draws = iter([0.25, 0.75])
    schedule = Schedule(draw=lambda: next(draws))
    first = schedule.due_at(token(0))
    assert schedule.due_at(token(0)) == first, "the same token keeps its moment"
    assert schedule.due_at(token(0, life=2 * HOUR)) != first, "a new token, a new draw"


def test_expired_or_missing_tokens_are_due():
    schedule = Schedule()
    assert schedule.due(None)
    assert schedule.due(token(HOUR + 5))


def due_plugin(sandbox, maestro) -> MS365CredentialsPlugin:
    """A bot on a 6 s access token, past its (earliest) moment to renew it."""
    sandbox.put_app_credentials("ms365")
    sandbox.tenant.access_token_lifetime = 6
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
    plugin.authenticate(consent=sandbox.consent_redirect)
    plugin.ms365_account.con.lifecycle.schedule = Schedule(draw=lambda: 0.0)
    entry = plugin.token_store.get_access_token(username=plugin.ms365_account.con.username)
    schedule = plugin.ms365_account.con.lifecycle.schedule
    time.sleep(max(0.0, schedule.due_at(entry) - time.time()) + 0.05)
    return plugin


def test_threads_of_one_bot_renew_once(sandbox, maestro):
    plugin = due_plugin(sandbox, maestro)
    sandbox.requests.clear()
    threads = [threading.Thread(target=plugin.ms365_account.get_current_user_data)
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(sandbox.token_requests()) == 1
    assert [r.status for r in sandbox.requests("graph")] == [200] * 4


def test_an_early_renewal_that_fails_goes_on_with_the_valid_token(sandbox, maestro,
                                                                  monkeypatch, caplog):
    """Microsoft is down when the bot's moment comes: the request goes out with the
    still-valid access token, and the next try waits for its expiry."""
    plugin = due_plugin(sandbox, maestro)
    con = plugin.ms365_account.con
    entry = plugin.token_store.get_access_token(username=con.username)
    monkeypatch.setenv("MS365_RETRY_SECONDS", "1")
    con.retry_budget = 1.0
    sandbox.identity.fail_next(503, path_contains="/token", times=1000)
    sandbox.requests.clear()

    with caplog.at_level(logging.WARNING):
        plugin.ms365_account.get_current_user_data()
        tried = len(sandbox.token_requests())
        plugin.ms365_account.get_current_user_data()

    assert tried >= 1, "it tried to renew"
    assert len(sandbox.token_requests()) == tried, "and waits for the expiry to try again"
    assert [r.status for r in sandbox.requests("graph")] == [200, 200]
    assert "Could not renew the access token before it expires" in caplog.text
    assert plugin.ms365_account.con.lifecycle.schedule.due_at(entry) == float(entry["expires_on"])
