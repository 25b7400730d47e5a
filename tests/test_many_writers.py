"""One Maestro credential, many writers: Runners of two workspaces on one machine, an
operator editing the credential or logging out, a Runner whose clock is wrong, bots
starting together on an expired token. Nothing is lost, leaked, resurrected or hung."""

from __future__ import annotations

import json
import re
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    MS365CredentialsPlugin,
    ServiceUnavailable,
)
from botcity.plugins.ms365.credentials.persistence import FileText
from botcity.plugins.ms365.credentials.stores import fallback_path
from botcity.plugins.ms365.sandbox.identity import Secret
from conftest import BOT, BOT_SCOPES, bot_env, consent_answerer, newest_token, run_process, script
from herd_bot import run_cold_starts

LABEL = "ms365"
SCRIPT = str(Path(sys.executable).with_name("botcity-ms365"))


def authorize(sandbox, sdk, scopes=BOT_SCOPES, organization=None):
    sandbox.put_app_credentials(LABEL)
    if organization:
        for key in ("client_id", "client_secret", "tenant_id"):
            sandbox.maestro.put_secret(LABEL, key, sandbox.maestro.secret(LABEL, key),
                                       organization=organization)
    MS365CredentialsPlugin(maestro=sdk, credential_label=LABEL).authenticate(
        list(scopes), consent=sandbox.consent_redirect)


def sdk_of(sandbox, organization):
    from botcity.maestro import BotMaestroSDK

    sdk = BotMaestroSDK(sandbox.maestro_url, organization,
                        sandbox.maestro.workspaces[organization].key)
    sdk.login()
    return sdk


def runner_run(sandbox, organization=None, **env):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL},
                                                organization=organization)
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    run = run_process(argv, bot_env(sandbox, **env), stdin_closed=True)
    return sandbox.maestro.tasks[task_id], run


def accounts(text: str | None) -> set[str]:
    return {e["username"] for e in json.loads(text or "{}").get("Account", {}).values()}


def fail_saves(sandbox, organization_token_label=LABEL, times=10):
    """Maestro refuses every write to the credential (the claim, the save)."""
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{organization_token_label}",
                              method="POST", times=times)


# -- 1. two workspaces, one Runner machine -------------------------------------------------


def test_a_runner_shared_by_two_workspaces_never_mixes_their_tokens(sandbox):
    other = sandbox.maestro.add_workspace("acme").login
    authorize(sandbox, sandbox.maestro_sdk())
    second = sandbox.tenant.add_user("acme-bot@contoso.onmicrosoft.com", "Acme Bot")
    sandbox.tenant.signing_in = second
    authorize(sandbox, sdk_of(sandbox, other), organization=other)
    sandbox.tenant.signing_in = None
    mine = {sandbox.tenant.user.upn}
    theirs = {second.upn}

    # workspace 1's Runner renews while Maestro fails at save: its token waits locally
    sandbox.force_expiry()
    fail_saves(sandbox)
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    sandbox.maestro.clear_faults()
    kept = fallback_path(sandbox.maestro_url, LABEL, "token", sandbox.maestro.login)
    assert accounts(kept.read_text()) == mine

    # the same machine runs workspace 2's bot, same label: nothing of workspace 1 goes there
    task, run = runner_run(sandbox, organization=other)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert f"as {second.upn}" in run.stdout
    assert accounts(sandbox.maestro.secret(LABEL, "token", organization=other)) == theirs
    assert accounts(kept.read_text()) == mine, "workspace 1's token still waits for it"

    # workspace 1's next start takes its own token back
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert accounts(newest_token(sandbox, LABEL)) == mine
    assert accounts(sandbox.maestro.secret(LABEL, "token", organization=other)) == theirs
    assert not kept.exists()


# -- 2. logout stays logged out -------------------------------------------------------------


def test_logout_is_not_undone_by_a_token_kept_on_a_runner(sandbox, tmp_path):
    authorize(sandbox, sandbox.maestro_sdk())
    sandbox.force_expiry()
    fail_saves(sandbox)
    task, run = runner_run(sandbox)  # renewed; the token waits on the Runner
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    sandbox.maestro.clear_faults()
    kept = fallback_path(sandbox.maestro_url, LABEL, "token", sandbox.maestro.login)
    assert kept.exists()

    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    status = run_process([SCRIPT, "status", "--label", LABEL], env, cwd=tmp_path,
                         stdin_closed=True)
    assert status.returncode == 0 and kept.exists(), "status reads; it writes nothing"
    logout = run_process([SCRIPT, "logout", "--label", LABEL], env, cwd=tmp_path,
                         stdin_closed=True)
    assert logout.returncode == 0, logout.stderr

    task, run = runner_run(sandbox)

    assert newest_token(sandbox, LABEL) is None, "logged out stays logged out"
    assert task.finish_status == "FAILED" and "No token is stored in Maestro credential" in (
        task.finish_message)
    assert len(sandbox.maestro.alerts) == 1
    assert not kept.exists()


def test_logout_on_the_runner_removes_its_kept_token_too(sandbox, tmp_path):
    authorize(sandbox, sandbox.maestro_sdk())
    sandbox.force_expiry()
    fail_saves(sandbox)
    assert runner_run(sandbox)[0].finish_status == "SUCCESS"
    sandbox.maestro.clear_faults()
    kept = fallback_path(sandbox.maestro_url, LABEL, "token", sandbox.maestro.login)
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    run = run_process([SCRIPT, "logout", "--label", LABEL], env, cwd=tmp_path,
                      stdin_closed=True)
    assert run.returncode == 0, run.stderr
    assert not kept.exists()


# -- 3. an operator edits the credential while bots run -------------------------------------


def test_keys_an_operator_changes_while_a_bot_runs_survive_its_save(sandbox, maestro):
    from botcity.plugins.ms365.credentials.renewal import Schedule

    authorize(sandbox, maestro)
    sandbox.tenant.access_token_lifetime = 8
    sandbox.force_expiry()
    bot = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    bot.authenticate()  # renewed at start: it leads the next renewal, without looking
    bot.ms365_account.con.lifecycle.schedule = Schedule(draw=lambda: 0.0)
    bot.ms365_account.con.lifecycle.schedule.leading = True
    # the operator rotates the app's secret (the old one expires) and adds a key
    new = Secret("sbx~rotated-" + "x" * 20)
    sandbox.app.secrets.append(new)
    sandbox.maestro.put_secret(LABEL, "client_secret", new.value)
    sandbox.maestro.put_secret(LABEL, "notes", "rotated on Monday")
    sandbox.tenant.expire_client_secret(sandbox.app)
    new.expires_at = time.time() + 86400
    held = bot.token_store.get_access_token(username=bot.ms365_account.con.username)
    time.sleep(max(0.0, bot.ms365_account.con.lifecycle.schedule.due_at(held) - time.time()) + 0.05)
    assert float(held["expires_on"]) > time.time(), "due, not expired"
    sandbox.requests.clear()

    user = bot.ms365_account.get_current_user_data()  # renews with the new secret, saves

    assert user.user_principal_name == sandbox.tenant.user.upn
    assert sandbox.maestro.secret(LABEL, "client_secret") == new.value
    assert sandbox.maestro.secret(LABEL, "notes") == "rotated on Monday"
    grants = sandbox.token_requests("refresh_token")
    assert [g.status for g in grants] == [401, 200], "refused the old secret, then the new"
    assert grants[-1].form()["client_secret"] == new.value
    assert sandbox.maestro.alerts == []


# -- 4. a Runner whose clock is two hours fast ---------------------------------------------

FAST_CLOCK = """
import time
_real = time.time
time.time = lambda: _real() + 7200  # this Runner's clock runs two hours ahead
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_runner_with_a_fast_clock_stores_times_every_bot_can_trust(sandbox, maestro,
                                                                     tmp_path):
    authorize(sandbox, maestro)
    sandbox.force_expiry()
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL})
    argv = [*script(tmp_path / "fast.py", FAST_CLOCK), str(BOT),
            *sandbox.maestro.runner_argv(task_id, token)]

    run = run_process(argv, bot_env(sandbox), stdin_closed=True)

    assert sandbox.maestro.tasks[task_id].finish_status == "SUCCESS", run.stdout + run.stderr
    # two hours, give or take the second of the Date header's grain
    assert re.search(r"clock is 720[01] s ahead of Microsoft's", run.stderr), run.stderr
    stored = json.loads(newest_token(sandbox, LABEL))
    [access] = stored["AccessToken"].values()
    issued = sandbox.tenant.access_tokens[access["secret"]]
    assert abs(int(access["expires_on"]) - issued.expires_at) < 120, (
        "expiry in Microsoft's time, not the Runner's")

    # the others use it without renewing, and renew in time
    sandbox.requests.clear()
    other = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    other.ms365_account.get_current_user_data()
    assert sandbox.token_requests() == []
    due_at = other.ms365_account.con.lifecycle.schedule.due_at(
        other.token_store.get_access_token(username=other.ms365_account.con.username))
    assert time.time() + 3000 < due_at < int(access["expires_on"])

    # a person's later consent is stored, and wins over what that Runner holds
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL).authenticate(
        ["Mail.Read", *BOT_SCOPES], consent=sandbox.consent_redirect, force=True)
    after = json.loads(newest_token(sandbox, LABEL))
    assert "Mail.Read" in after["botcity"]["permissions"]
    assert after["botcity"]["generation"] > stored["botcity"]["generation"]


# -- 5. bots that start together on an expired token ----------------------------------------

#: The credential run_cold_starts authorizes and its bot processes share.
HERD_LABEL = "herd"


def stored_generation(sandbox, label=LABEL) -> int:
    return json.loads(newest_token(sandbox, label))["botcity"]["generation"]


def test_bot_processes_starting_together_on_an_expired_token_refresh_once_between_them(
        sandbox):
    """Bot processes (one per Runner: nothing shared but Maestro) start at the same moment on
    a token that expired a second before, five times over: at most two refresh grants each
    time, every bot gets to Graph, and Maestro ends with the last renewal. Four processes
    are enough for a race between processes; the number of contenders is the threaded test's
    concern."""
    result = run_cold_starts(sandbox, processes=4, repetitions=5)
    print(f"\n4 bot processes, 5 starts together on an expired token: refresh grants per "
          f"start {result.grants}")
    assert result.failures == []
    assert result.succeeded == 5, "every bot got to Graph every time"
    assert all(1 <= grants <= 2 for grants in result.grants), result.grants
    stored = json.loads(newest_token(sandbox, HERD_LABEL))
    [access] = stored["AccessToken"].values()
    issued = sandbox.tenant.access_tokens
    assert issued[access["secret"]].generation == max(t.generation for t in issued.values()), (
        "Maestro holds a token of the last refresh")
    signed_in = result.signed_in_generation
    assert signed_in + 5 <= stored["botcity"]["generation"] <= signed_in + sum(
        result.grants), "the sign-in's generation, then one more for each start"
    assert sandbox.maestro.alerts == []


def start_together(bots: list[MS365CredentialsPlugin]) -> list[object]:
    """Each bot, in its own thread, at the same moment: authenticate, then call Graph.
    What each got: the signed-in user's address, or the exception."""
    together = threading.Barrier(len(bots))
    got: list[object] = [None] * len(bots)

    def start(i: int) -> None:
        try:
            together.wait(timeout=30)
            bots[i].authenticate()
            got[i] = bots[i].ms365_account.get_current_user_data().user_principal_name
        except Exception as exc:  # noqa: BLE001 - what each bot got is the result
            got[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(bots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return got


def test_sixteen_bots_starting_together_on_an_expired_token_refresh_once_between_them(
        sandbox, maestro):
    """Sixteen bots (each its own plugin, its own Maestro session: threads of one process,
    since what coordinates them is Maestro, not the process) start at the same moment on a
    token that expired in Maestro and at Microsoft, ten times over: at most two refresh
    grants each time, every bot gets to Graph, each start stores one renewal, and a bot
    that starts afterwards uses it without a grant."""
    authorize(sandbox, maestro)
    sdks = [sandbox.maestro_sdk() for _ in range(16)]
    per_start: list[int] = []
    for _ in range(10):
        sandbox.force_expiry()
        generation = stored_generation(sandbox)
        before = len(sandbox.token_requests("refresh_token"))
        got = start_together([MS365CredentialsPlugin(maestro=sdk, credential_label=LABEL,
                                                     consent="none") for sdk in sdks])
        per_start.append(len(sandbox.token_requests("refresh_token")) - before)
        assert got == [sandbox.tenant.user.upn] * len(sdks), got
        assert stored_generation(sandbox) == generation + 1, "one renewal stored per start"
    print(f"\n16 bots, 10 starts together on an expired token: refresh grants per start "
          f"{per_start} (mean {statistics.mean(per_start):.2f})")
    assert all(1 <= grants <= 2 for grants in per_start), per_start
    assert sandbox.maestro.alerts == []

    sandbox.requests.clear()
    later = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    assert later.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)
    assert sandbox.token_requests() == [], "the stored renewal works for the next bot"


# -- 6. nothing hangs -----------------------------------------------------------------------


def test_a_graph_that_never_answers_fails_within_the_timeout(sandbox, maestro, monkeypatch):
    authorize(sandbox, maestro)
    monkeypatch.setenv("MS365_HTTP_TIMEOUT", "3")
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    sandbox.graph.fail_next(200, delay=30, path_contains="/me")  # accepts, never answers
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="did not answer GET /v1.0/me"):
        plugin.ms365_account.get_current_user_data()
    assert time.monotonic() - started < 3 + 2, "one timeout, not one per retry"
    assert len(sandbox.requests("graph")) == 1


def test_retry_after_zero_is_not_a_hot_loop(sandbox, maestro, monkeypatch):
    authorize(sandbox, maestro)
    sandbox.force_expiry()
    monkeypatch.setenv("MS365_RETRY_SECONDS", "10")
    sandbox.identity.fail_next(429, retry_after=0, path_contains="/token", times=1000)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    sandbox.requests.clear()
    with pytest.raises(ServiceUnavailable):
        plugin.authenticate()
    tried = len(sandbox.token_requests())
    print(f"\ntoken requests in a 10 s budget of Retry-After: 0: {tried}")
    assert 2 <= tried < 20


def test_an_idle_connection_does_not_keep_the_browser_out(sandbox, monkeypatch):
    from botcity.plugins.ms365.credentials import consent

    idle: list[socket.socket] = []

    def browser(url: str) -> None:
        """A browser that first opens a connection and says nothing (as browsers do when
        they guess the next page), then signs in."""
        def run() -> None:
            redirect = sandbox.consent_redirect(url)
            port = int(redirect.split("localhost:")[1].split("/")[0].split("?")[0])
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            requests.get(redirect.replace("localhost", "127.0.0.1"), timeout=10)
        threading.Thread(target=run, daemon=True).start()

    monkeypatch.setattr(consent, "_open_browser", browser)
    monkeypatch.setenv("MS365_CONSENT_TIMEOUT", "20")
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent="browser")
    assert idle, "the idle connection was open while the browser came"
    assert plugin.is_authenticated
    for connection in idle:
        connection.close()


# -- 7. temporary files, and a machine without a home ---------------------------------------


def test_a_temporary_file_a_killed_save_left_goes_at_the_next_save(tmp_path):
    import os
    import subprocess

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that has ended: its pid names no running process
    target = FileText(tmp_path / "o365_token.txt")
    dead = tmp_path / f".o365_token.txt.{gone.pid}.abcd1234.tmp"
    dead.write_text("a refresh token")
    running = tmp_path / f".o365_token.txt.{os.getppid()}.ijkl9012.tmp"
    running.write_text("a save under way in another process")
    mine = tmp_path / f".o365_token.txt.{os.getpid()}.mnop3456.tmp"
    mine.write_text("a save under way in another thread of this process")
    orphan = tmp_path / ".o365_token.txt.qrstuvwx.tmp"  # an older version's, no pid
    orphan.write_text("a refresh token")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    fresh_orphan = tmp_path / ".o365_token.txt.yzabcdef.tmp"
    fresh_orphan.write_text("an older version's save under way")

    target.save("{}")

    assert not dead.exists() and not orphan.exists()
    assert running.exists() and mine.exists() and fresh_orphan.exists(), (
        "saves that may still be under way are left alone")


def no_home(monkeypatch):
    """A container with a random UID: no HOME, no passwd entry (Path.home() raises as
    Python does then: RuntimeError 'Could not determine home directory.')."""
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("MS365_FALLBACK_DIR")

    def home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(home))


def test_without_a_home_the_plugin_builds_and_works(sandbox, maestro, monkeypatch):
    authorize(sandbox, maestro)
    sandbox.force_expiry()
    no_home(monkeypatch)

    plugin = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    plugin.authenticate()
    assert plugin.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)


def test_a_fallback_that_cannot_be_written_is_a_warning_not_a_failed_bot(
        sandbox, maestro, monkeypatch, caplog):
    authorize(sandbox, maestro)
    sandbox.force_expiry()
    no_home(monkeypatch)
    fail_saves(sandbox)

    plugin = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    plugin.authenticate()
    assert plugin.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)
    assert "set MS365_FALLBACK_DIR" in caplog.text
    assert "in this bot's memory only" in caplog.text


# -- honest CLI -----------------------------------------------------------------------------


def test_status_check_says_when_the_rotated_token_waits_on_this_machine(sandbox, maestro,
                                                                        tmp_path):
    authorize(sandbox, maestro)
    fail_saves(sandbox)
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    run = run_process([SCRIPT, "status", "--label", LABEL, "--check"], env, cwd=tmp_path,
                      stdin_closed=True)
    assert run.returncode == 0, run.stderr
    assert "the store failed: the rotated token waits on this machine" in run.stdout
    assert "was saved" not in run.stdout


def test_migrate_converts_only_the_file_it_is_given(sandbox, maestro, tmp_path):
    authorize(sandbox, maestro)
    in_maestro = newest_token(sandbox, LABEL)
    refresh = "sbxrt-old"
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    (tmp_path / "old.txt").write_text(json.dumps({"access_token": "a", "refresh_token": refresh,
                                                  "scope": ["Mail.Read"]}))
    run = run_process([SCRIPT, "migrate", "old.txt", "--token-label", LABEL], env,
                      cwd=tmp_path, stdin_closed=True)
    assert run.returncode == 2 and "copy --from file:PATH" in run.stderr
    assert newest_token(sandbox, LABEL) == in_maestro


def test_the_cli_explains_a_path_it_cannot_use_without_a_traceback(sandbox, tmp_path):
    (tmp_path / "a-folder" / "o365_token.txt").mkdir(parents=True)  # a folder, not a file
    env = bot_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                  MS365_CLIENT_SECRET=sandbox.app.secret)
    run = run_process([SCRIPT, "migrate", "a-folder"], env, cwd=tmp_path, stdin_closed=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "Is a directory (a-folder)" in run.stderr
    run = run_process([SCRIPT, "status", "--token-path", "a-folder"], env, cwd=tmp_path,
                      stdin_closed=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "Cannot read file" in run.stderr and "Is a directory" in run.stderr
    (tmp_path / "a-file").write_text("x")
    run = run_process([SCRIPT, "login", "--token-path", "a-file/sub/token.json", "--scopes",
                       "basic"], env, cwd=tmp_path, answer=consent_answerer(sandbox))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "a-file/sub/token.json: Not a directory" in run.stderr


def test_a_bot_that_was_removed_from_maestro_meanwhile_is_not_recreated(sandbox, maestro):
    authorize(sandbox, maestro)
    sandbox.tenant.access_token_lifetime = 4
    sandbox.force_expiry()
    bot = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    bot.authenticate()
    items = sandbox.maestro.credentials[LABEL]
    items[:] = [i for i in items if i["key"] != "token"]  # logout, while the bot runs
    time.sleep(4.5)
    bot.ms365_account.get_current_user_data()  # renews; does not write the token back
    assert newest_token(sandbox, LABEL) is None
    with pytest.raises(AuthorizationRequired):
        MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL
                               ).authenticate(consent="none")
