"""Many bots, one token: bot processes sharing one Maestro credential through several
access-token expiries. The reliability tests and ``benchmarks/herd.py`` both run it
(benchmark code: it is in neither distribution).

Each bot is a real process: it logs in to the sandbox Maestro, builds the plugin on the
shared credential and calls Graph in a loop until a common deadline. The sandbox issues
short-lived access tokens, so the shared token expires several times while they run.

``python benchmarks/herd_bot.py`` is one such bot (the connection comes from the
environment, see :func:`run_herd`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

LABEL = "herd"
#: How long before the others the claimer of ``run_cold_starts`` starts: first, whatever a
#: write's delay (the tests' slow Maestro: 2 s at most).
CLAIMER_LEAD = 2.5


@dataclass
class HerdResult:
    processes: int
    expiries: int
    succeeded: int
    graph_calls: int
    #: refresh-token grants per token renewed: how many bots redeemed the same refresh
    #: token (in the order the tokens were renewed; 1 is ideal, 2 a collision)
    refreshes_per_token: list[int]
    token_requests: int
    maestro_requests: int
    #: Maestro ends holding a token of the last refresh (in a collision, either of the two
    #: tokens issued from the same refresh token counts: neither is older)
    newest_token_stored: bool
    wall_seconds: float
    failures: list[str] = field(default_factory=list)


def _per_token(grants: list[Any]) -> list[int]:
    """How many of ``grants`` redeemed each refresh token, in the order of first use."""
    counts: dict[str, int] = {}
    for grant in sorted(grants, key=lambda g: g.at):
        token = grant.form().get("refresh_token", "")
        counts[token] = counts.get(token, 0) + 1
    return list(counts.values())


def run_herd(sandbox: Any, *, processes: int = 8, expiries: int = 3, lifetime: float = 6.0,
             first_lifetime: float | None = None, timeout: float = 300.0,
             coordinate: bool = True) -> HerdResult:
    """Authorize once, then run ``processes`` bots through ``expiries`` expiries: of the
    token they start on, which lives ``first_lifetime`` seconds (default: twice
    ``lifetime``, so that every bot has started before its refresh window opens, as bots
    on Runners start long before an hour-long token's last minutes), then of tokens that
    live ``lifetime`` seconds; and half a life more. ``coordinate=False``: each bot
    refreshes at expiry without looking at the store, for comparison."""
    import json

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    sandbox.put_app_credentials(LABEL)
    first = first_lifetime or 2 * lifetime
    sandbox.tenant.access_token_lifetime = int(first)
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    sandbox.tenant.access_token_lifetime = int(lifetime)
    first_issue = time.time()
    sandbox.requests.clear()
    until = first_issue + first + (expiries - 0.5) * lifetime
    env = sandbox.process_env(
        BOTCITY_SERVER=sandbox.maestro_url, BOTCITY_LOGIN=sandbox.maestro.login,
        BOTCITY_KEY=sandbox.maestro.key, HERD_UNTIL=str(until),
        MS365_FALLBACK_DIR=os.environ.get("MS365_FALLBACK_DIR", ""),
        MS365_COORDINATE_REFRESH="1" if coordinate else "0")
    started = time.monotonic()
    bots = [subprocess.Popen(  # noqa: S603 - our own interpreter and file
        [sys.executable, __file__], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(processes)]
    outputs, failures, calls = [], [], 0
    for bot in bots:
        try:
            out, _ = bot.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            bot.kill()
            out, _ = bot.communicate()
            failures.append("timed out")
        outputs.append(out)
        if bot.returncode != 0:
            failures.append(out[-2000:])
        for line in out.splitlines():
            if line.startswith("graph calls: "):
                calls += int(line.split(": ")[1])
    wall = time.monotonic() - started

    stored = json.loads(sandbox.stored_token(LABEL))
    issued = sandbox.tenant.access_tokens
    stored_generations = {issued[e["secret"]].generation for e in stored["AccessToken"].values()
                          if e["secret"] in issued}
    newest = max((token.generation for token in issued.values()), default=0)
    return HerdResult(
        processes=processes, expiries=expiries,
        succeeded=sum(bot.returncode == 0 for bot in bots), graph_calls=calls,
        refreshes_per_token=_per_token(sandbox.token_requests("refresh_token")),
        token_requests=len(sandbox.token_requests()),
        maestro_requests=len(sandbox.requests("maestro", path_contains="/credential")),
        newest_token_stored=newest in stored_generations, wall_seconds=wall, failures=failures,
    )


@dataclass
class ColdStarts:
    processes: int
    #: refresh-token grants at each start (1 is ideal)
    grants: list[int]
    #: starts in which every bot got to Graph
    succeeded: int
    failures: list[str] = field(default_factory=list)
    #: the generation the sign-in stored (a sign-in's is at least its time in seconds)
    signed_in_generation: int = 0
    #: what the claimer process (``run_cold_starts(claimer=...)``) printed
    claimer_output: str = ""


def run_cold_starts(sandbox: Any, *, processes: int = 8, repetitions: int = 20,
                    period: float = 3.0, coordinate: bool = True,
                    during: Any = None, claimer: str = "") -> ColdStarts:
    """``processes`` bot processes start together ``repetitions`` times, each time on an
    access token that expired a second before (bots that run on a schedule after a quiet
    period): how many refresh grants each start costs. The processes start once; for each
    start they build the plugin half a second before the common moment, then
    authenticate and call Graph at it. ``during(moments)``, when given, runs in a thread
    of its own meanwhile (an operator's edit, a logout). ``claimer``: one more process
    starts 2.5 s before the others (its claim comes first) and then is killed with
    SIGKILL right after its claim (``"killed"``), or Maestro fails its token's write
    (``"failing"``)."""
    import threading

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    signed_in = int(json.loads(sandbox.stored_token(LABEL))["botcity"]["generation"])
    # every process has imported by then (the claimer, first to start, well before: it
    # must claim before the others start)
    first = time.time() + 6.0 + processes * 0.3 + (CLAIMER_LEAD + 3.0 if claimer else 0.0)
    moments = [first + k * period for k in range(repetitions)]
    env = sandbox.process_env(
        BOTCITY_SERVER=sandbox.maestro_url, BOTCITY_LOGIN=sandbox.maestro.login,
        BOTCITY_KEY=sandbox.maestro.key, HERD_STARTS=",".join(f"{m:.3f}" for m in moments),
        MS365_FALLBACK_DIR=os.environ.get("MS365_FALLBACK_DIR", ""),
        MS365_COORDINATE_REFRESH="1" if coordinate else "0")
    envs = [env] * processes
    if claimer:
        # on a Runner of its own: a token it keeps is not on the others' machine
        own = os.path.join(env["MS365_FALLBACK_DIR"], "claimer") if env[
            "MS365_FALLBACK_DIR"] else ""
        envs = [{**env, "HERD_CLAIMER": claimer, "MS365_FALLBACK_DIR": own}, *envs]
    bots = [subprocess.Popen(  # noqa: S603 - our own interpreter and file
        [sys.executable, __file__], env=one, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for one in envs]
    if during is not None:
        threading.Thread(target=during, args=(moments,), daemon=True).start()

    def expire() -> None:
        ahead = 1.0 + (CLAIMER_LEAD + 0.5 if claimer else 0.0)  # before anyone builds
        for moment in moments:
            time.sleep(max(0.0, moment - ahead - time.time()))
            sandbox.force_expiry()

    expirer = threading.Thread(target=expire, daemon=True)
    expirer.start()
    outputs = []
    for bot in bots:
        try:
            out, _ = bot.communicate(timeout=moments[-1] - time.time() + 60)
        except subprocess.TimeoutExpired:
            bot.kill()
            out, _ = bot.communicate()
        outputs.append(out)
    expirer.join(timeout=5)
    grants = sandbox.token_requests("refresh_token")
    # every grant counts, for the last start before it (a late one is not dropped)
    per_start = [sum(1 for g in grants if m - 0.5 <= g.at < following - 0.5)
                 for m, following in zip(moments, [*moments[1:], float("inf")],
                                         strict=True)]
    claimer_output = ""
    if claimer:  # the claimer's own outcome is the test's to judge
        bots, outputs, claimer_output = bots[1:], outputs[1:], outputs[0]
    done = [sum(f"start {k}: ok" in out for out in outputs) for k in range(repetitions)]
    failures = [out[-2000:] for bot, out in zip(bots, outputs, strict=True) if bot.returncode != 0]
    return ColdStarts(processes, per_start, sum(d == processes for d in done), failures,
                      signed_in, claimer_output)


def _as_claimer(plugin: Any, how: str) -> None:
    """Make this bot the claimer that fails: killed (SIGKILL) right after its claim is
    added, or its renewed token's write refused by Maestro (HTTP 500)."""
    import logging
    import signal

    from botcity.plugins.ms365.credentials import StoreUnavailable

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("botcity.plugins.ms365.credentials").setLevel(logging.DEBUG)  # told

    vault = plugin._vault
    add = vault.add

    def claimer_add(label: str, key: str, value: str) -> None:
        if ".next." in key and how == "failing":
            raise StoreUnavailable("Maestro answered HTTP 500.", status=500)
        add(label, key, value)
        if ".claim." in key and how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)

    vault.add = claimer_add


def _cold_starts(moments: list[float]) -> int:
    from botcity.maestro import BotMaestroSDK

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    claimer = os.environ.get("HERD_CLAIMER", "")
    lead = CLAIMER_LEAD if claimer else 0.0
    for k, moment in enumerate(moments):
        moment -= lead
        time.sleep(max(0.0, moment - 0.5 - time.time()))
        maestro = BotMaestroSDK(os.environ["BOTCITY_SERVER"], os.environ["BOTCITY_LOGIN"],
                                os.environ["BOTCITY_KEY"])
        maestro.login()
        plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL,
                                        consent="none")
        if claimer:
            _as_claimer(plugin, claimer)
        time.sleep(max(0.0, moment - time.time()))
        plugin.authenticate()
        plugin.ms365_account.get_current_user_data()
        sys.stdout.write(f"start {k}: ok\n")
        sys.stdout.flush()
    return 0


def _bot() -> int:
    from botcity.maestro import BotMaestroSDK

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    if os.environ.get("HERD_STARTS"):
        return _cold_starts([float(m) for m in os.environ["HERD_STARTS"].split(",")])
    maestro = BotMaestroSDK(os.environ["BOTCITY_SERVER"], os.environ["BOTCITY_LOGIN"],
                            os.environ["BOTCITY_KEY"])
    maestro.login()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL, consent="none")
    plugin.authenticate()
    account = plugin.ms365_account
    account.con.requests_delay = 50
    until = float(os.environ["HERD_UNTIL"])
    calls = 0
    while time.time() < until:
        account.get_current_user_data()
        calls += 1
        time.sleep(0.05)
    sys.stdout.write(f"graph calls: {calls}\nrefreshes: {account.con.refresh_count}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_bot())
