"""Many bots on one token, a Maestro that fails, kills mid-write, a throttling Microsoft."""

from __future__ import annotations

import json
import sys
import time

import pytest

from botcity.plugins.ms365.credentials import (
    MS365CredentialsPlugin,
    ServiceUnavailable,
    StoreUnavailable,
)
from botcity.plugins.ms365.credentials.stores import fallback_path
from conftest import BOT, BOT_SCOPES, bot_env, run_process, script
from herd_bot import run_herd

LABEL = "ms365"


def refresh_secrets(text: str) -> set[str]:
    return {e["secret"] for e in json.loads(text)["RefreshToken"].values()}


# -- 1. many bots, one credential --------------------------------------------------------


def test_eight_bots_share_one_token_through_three_expiries(sandbox):
    """Eight bots through three expiries of 6 s access tokens (the first lives 12 s):
    each token is renewed by one bot, two at most (see renewal.py for the odds)."""
    result = run_herd(sandbox, processes=8, expiries=3, lifetime=6)
    print(f"\nrefresh-token grants per token renewed: {result.refreshes_per_token}; "
          f"graph calls: {result.graph_calls}; maestro credential requests: "
          f"{result.maestro_requests}; {result.wall_seconds:.1f} s")

    assert result.failures == []
    assert result.succeeded == 8
    assert len(result.refreshes_per_token) >= 3, "the token was renewed at least three times"
    assert max(result.refreshes_per_token) <= 2
    assert result.newest_token_stored, "Maestro ends holding a token of the last renewal"
    assert result.graph_calls > 8 * 3


# -- 2. Maestro fails while the rotated token is saved -------------------------------------


def authorized(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        BOT_SCOPES, consent=sandbox.consent_redirect)
    return sandbox.maestro.secret(LABEL, "token")


def runner_run(sandbox):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL})
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    run = run_process(argv, bot_env(sandbox), stdin_closed=True)
    return sandbox.maestro.tasks[task_id], run


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 0, "drop": True}],
                         ids=["500", "dropped"])
def test_maestro_failing_at_save_loses_nothing(sandbox, maestro, fault):
    before = authorized(sandbox, maestro)
    sandbox.force_expiry()
    expired = sandbox.maestro.secret(LABEL, "token")
    sandbox.maestro.fail_next(path_contains=f"/credential/{LABEL}", method="POST", times=5,
                              **fault)

    task, run = runner_run(sandbox)

    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert sandbox.maestro.secret(LABEL, "token") == expired, "Maestro kept what it had"
    local = fallback_path(sandbox.maestro_url, LABEL, "token", sandbox.maestro.login)
    kept = local.read_text()
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    assert refresh_secrets(kept) != refresh_secrets(before), "the rotated token is kept"
    assert "will be written to Maestro at the next start" in run.stderr

    sandbox.maestro.clear_faults()
    sandbox.requests.clear()
    task, run = runner_run(sandbox)  # the next start pushes it

    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert refresh_secrets(sandbox.maestro.secret(LABEL, "token")) == refresh_secrets(kept), (
        run.stderr + str([(r.method, r.path) for r in sandbox.requests()]))
    assert not local.exists()
    assert sandbox.token_requests() == [], "the pushed token was still valid"


STANDALONE = """
import logging, sys
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
logging.basicConfig(level=logging.WARNING)
maestro = BotMaestroSDK()
maestro.server, maestro.access_token, maestro.task_id = sys.argv[1], sys.argv[2], 0
maestro.organization = sys.argv[3]
maestro._version = "3.5.0"
maestro.timeout = 2
plugin = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
print("user:", plugin.ms365_account.get_current_user_data().user_principal_name)
"""


def test_maestro_down_at_start_uses_a_still_valid_local_token(sandbox, maestro, tmp_path):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{LABEL}", method="POST",
                              times=5)
    task, run = runner_run(sandbox)  # refreshed; the token waits in the fallback file
    assert task.finish_status == "SUCCESS", run.stderr
    server = sandbox.maestro_url
    sandbox.maestro.stop()  # Maestro is gone

    run = run_process([*script(tmp_path / "standalone.py", STANDALONE), server,
                       maestro.access_token, sandbox.maestro.login], bot_env(sandbox),
                      cwd=tmp_path, stdin_closed=True)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"user: {sandbox.tenant.user.upn}" in run.stdout
    assert "Using the token kept on this machine" in run.stderr
    assert "refused the connection" in run.stderr


def test_maestro_down_at_start_without_a_local_token_is_a_clear_error(sandbox, maestro):
    authorized(sandbox, maestro)
    maestro.timeout = 2
    server = sandbox.maestro_url
    sandbox.maestro.stop()
    with pytest.raises(StoreUnavailable) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert str(caught.value).startswith(f"BotCity Maestro at {server} "
                                        "refused the connection: nothing answers at that "
                                        "address and port.")


# -- 3. kill -9 while the token file is written ---------------------------------------------

KILLER = """
import json, os, random, signal, sys, time
from botcity.plugins.ms365.credentials.stores import FileTokenStore
from botcity.plugins.ms365.credentials.tokens import parse_token

path, token, rounds = sys.argv[1], open(sys.argv[2]).read(), int(sys.argv[3])
store = FileTokenStore(path)
store.persistence.save(token)
store.load_token()
bad = stale = seen = 0
for round_ in range(rounds):
    pid = os.fork()
    if pid == 0:  # the child saves a renewed token over and over until it is killed
        while True:
            store._has_state_changed = True
            store.save_token()  # reads the file, writes the next generation
    time.sleep(random.uniform(0.0005, 0.02))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        parse_token(open(path, encoding="utf-8").read(), path)
    except Exception as exc:
        bad += 1
        print("broken after kill", round_, type(exc).__name__)
    if round_ % 2:  # this process saves too: what the killed one left must go
        before = {n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")}
        seen += len(before)
        store.load_token()
        store._has_state_changed = True
        store.save_token()
        stale += len(before & {n for n in os.listdir(os.path.dirname(path))})
left = [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]
print(f"kills: {rounds}; unreadable afterwards: {bad}; left by a kill and kept by the next "
      f"save: {stale}; temporary files a kill left (before the next save): {seen}; left at "
      f"the end: {len(left)}")
sys.exit(1 if bad or stale else 0)
"""


def test_two_hundred_kills_never_leave_a_broken_file(sandbox, tmp_path):
    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                           token_path=tmp_path / "seed.json").authenticate(
        consent=sandbox.consent_redirect)
    target = tmp_path / "shared" / "o365_token.txt"
    target.parent.mkdir()

    run = run_process([*script(tmp_path / "killer.py", KILLER), str(target),
                       str(tmp_path / "seed.json"), "200"], bot_env(sandbox), cwd=tmp_path,
                      stdin_closed=True, timeout=120)

    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kills: 200; unreadable afterwards: 0; left by a kill and kept by the next save: 0" \
        in run.stdout


# -- 4. Microsoft throttles, or is down -------------------------------------------------------

THROTTLED = {"error": "temporarily_unavailable",
             "error_description": "AADSTS50196: The server terminated an operation because "
                                  "it encountered a client request loop."}


def test_throttled_then_ok_is_one_refresh(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.identity.fail_next(429, retry_after=1, body=THROTTLED, path_contains="/token")
    sandbox.requests.clear()

    task, run = runner_run(sandbox)

    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    grants = sandbox.token_requests("refresh_token")
    assert len(grants) == 2, "the throttled request, then the one that succeeded"
    assert grants[1].at - grants[0].at >= 0.9, "Retry-After was honoured"
    assert "answered HTTP 429; retrying in 1.0 s" in run.stderr


def test_a_permanent_outage_is_a_clear_error_within_the_budget(sandbox, maestro, monkeypatch):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    stored = sandbox.maestro.secret(LABEL, "token")
    sandbox.identity.fail_next(503, path_contains="/token", times=1000, body={
        "error": "temporarily_unavailable",
        "error_description": "AADSTS90033: A transient error has occurred."})
    monkeypatch.setenv("MS365_RETRY_SECONDS", "3")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        plugin.ms365_account.get_current_user_data()
    elapsed = time.monotonic() - started

    assert elapsed < 3 + 5, f"gave up after {elapsed:.1f} s"
    assert "answered HTTP 503 for 3 s while refreshing the access token" in str(caught.value)
    assert len(sandbox.token_requests("refresh_token")) >= 3, "it did retry"
    assert sandbox.maestro.secret(LABEL, "token") == stored, "the stored token is untouched"


def test_retry_budget_must_be_a_number(sandbox, monkeypatch):
    from botcity.plugins.ms365.credentials import ConfigurationError

    monkeypatch.setenv("MS365_RETRY_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="MS365_RETRY_SECONDS must be a number of seconds"):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)


def test_two_bots_starting_together_on_an_expired_token_both_work(sandbox, maestro):
    """Nothing to spread over: both may refresh (the documented cost); both work, and
    what Maestro keeps is a fresh token the next bot uses without a refresh."""
    import threading

    authorized(sandbox, maestro)
    sandbox.force_expiry()
    plugins = [MS365CredentialsPlugin(maestro=sdk, credential_label=LABEL)
               for sdk in (maestro, sandbox.maestro_sdk())]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda p=p: results.append(p.is_authenticated))
               for p in plugins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == [True, True]
    assert 1 <= len(sandbox.token_requests("refresh_token")) <= 2
    sandbox.requests.clear()
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert sandbox.token_requests() == [], "the stored token was fresh"
