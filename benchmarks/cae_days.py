"""Starts and grants per day, with and without continuous access evaluation: a simulated
clock, no server, no sleeping (a few seconds in all).

    python benchmarks/cae_days.py [--days 30] [--seed 24] [--json results/cae_days.json]

What runs is the plugin's own renewal: for every run of every bot, a new
:class:`TokenLifecycle` (a Runner starts a new process) on a store shared with the other
bots (in memory, as Maestro's is shared), with its refresh window and moment
(``renewal.window``, ``renewal.Schedule``), its look at the store, its claim on an expired
token and its write of the next generation. Only Microsoft is simulated: a refresh mints
an access token whose life is drawn as the sandbox's :class:`~botcity.plugins.ms365.
sandbox.identity.Tenant` draws it (60 to 90 minutes without ``cp1``; 20 to 28 hours with
it, and ``refresh_in`` half of that, which msal keeps as ``refresh_on``).

A run: the bot starts (``authenticate``: a token whose access token has expired is
renewed there, a *cold start*), then calls Graph every :data:`REQUEST_EVERY` seconds for
:data:`RUN_SECONDS` (before each call, the lifecycle renews when this bot's moment has
come). Scenarios: one bot scheduled hourly, and 8 bots started together every 15
minutes, each with and without ``cp1``. The first simulated day (the first sign-in's
token) is not counted.

Prints a table, and the same as the Markdown table of ``docs/many-bots.md``; writes JSON
(``benchmarks/results/cae_days.json``).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import statistics
from pathlib import Path
from typing import Any

from botcity.plugins.ms365.credentials._clock import Clock
from botcity.plugins.ms365.credentials.lifecycle import TokenLifecycle
from botcity.plugins.ms365.credentials.persistence import Note, TextPersistence, obsolete
from botcity.plugins.ms365.credentials.stores import TokenStore
from botcity.plugins.ms365.credentials.tokens import fresh_enough, with_meta
from botcity.plugins.ms365.sandbox.identity import Tenant

HERE = Path(__file__).resolve().parent
DAY = 86_400
#: A run calls Graph this often, for this long (a report bot's few minutes of work).
REQUEST_EVERY = 30
RUN_SECONDS = 300
#: (bots, minutes between starts): one bot hourly; a herd every quarter of an hour
SCENARIOS = ((1, 60), (8, 15))
HOME = "uid.tid"


class SimClock(Clock):
    """Time that passes only when the simulation (or a sleep it is given) moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Shared(TextPersistence):
    """The credential the bots share: one text and the notes beside it, counted."""

    location = "simulated Maestro credential"

    def __init__(self) -> None:
        self.text: str | None = None
        self.kept: list[Note] = []
        self.reads = self.writes = 0

    def load(self, max_age: float | None = None) -> str | None:
        self.reads += 1
        return self.text

    def save(self, text: str, *, generation: int | None = None) -> None:
        self.writes += 1
        self.text = text
        if generation is not None:
            dropped = obsolete(self.kept, generation)
            self.kept = [n for n in self.kept if n not in dropped]

    def remove(self) -> bool:
        had, self.text = self.text is not None, None
        return had

    def notes(self) -> list[Note]:
        return list(self.kept)

    def add_note(self, note: Note) -> None:
        self.writes += 1
        self.kept.append(note)


def cache(issued: float, life: int, refresh_in: int | None, serial: int) -> dict[str, Any]:
    """msal's cache after a token answer at ``issued`` (what ``TokenCache.add`` writes)."""
    access = {"secret": f"at{serial}", "home_account_id": HOME, "environment": "e",
              "client_id": "app", "target": "User.Read", "realm": "tid",
              "credential_type": "AccessToken", "cached_at": str(int(issued)),
              "expires_on": str(int(issued) + life),
              "extended_expires_on": str(int(issued) + life)}
    if refresh_in is not None:
        access["refresh_on"] = str(int(issued) + refresh_in)
    return {
        "AccessToken": {"at": access},
        "RefreshToken": {"rt": {"secret": f"rt{serial}", "home_account_id": HOME,
                                "environment": "e", "client_id": "app",
                                "credential_type": "RefreshToken"}},
        "Account": {"acc": {"home_account_id": HOME, "environment": "e",
                            "username": "bot@contoso.com"}},
    }


class Microsoft:
    """The token endpoint: each grant mints a token of a drawn lifetime."""

    def __init__(self, cp1: bool) -> None:
        self.tenant = Tenant()  # lifetimes as the sandbox draws them (Microsoft's)
        self.cp1 = cp1
        self.grants: list[float] = []

    def mint(self, now: float) -> dict[str, Any]:
        self.grants.append(now)
        life, refresh_in = self.tenant.lifetime(cae=self.cp1)
        return cache(now, life, refresh_in, len(self.grants))


class Run:
    """One run of one bot: a new process, its store and lifecycle."""

    def __init__(self, shared: Shared, clock: SimClock, microsoft: Microsoft) -> None:
        self.store = TokenStore(shared, clock=clock)
        self.clock = clock
        self.microsoft = microsoft
        self.life = TokenLifecycle(self.store, clock=clock, sleep=clock.sleep,
                                   monotonic=clock.now, refresh=self.refresh)

    def refresh(self, claims: str | None = None) -> None:
        minted = self.microsoft.mint(self.clock.now())
        with self.store._lock:  # what msal does with a token answer
            self.store._cache.update(minted)
            self.store._has_state_changed = True

    def start(self) -> bool:
        """``authenticate()``: True when the stored access token had expired (a cold
        start: it is renewed before the first call)."""
        assert self.life.load()
        cold = not fresh_enough(self.store.cache_snapshot(), self.clock.now())
        self.life.check(app_only=False)
        return cold

    def call_graph(self) -> None:
        self.life.before_request()


def simulate(bots: int, every_minutes: int, cp1: bool, days: int) -> dict[str, Any]:
    clock = SimClock()
    shared = Shared()
    microsoft = Microsoft(cp1)
    begin = clock.t
    # the person's sign-in, at the first start
    shared.text = with_meta(microsoft.mint(begin), {"generation": 1})
    counted_from = begin + DAY
    end = begin + (days + 1) * DAY
    events: list[tuple[float, int, int, str]] = []  # (time, order, bot, what)
    order = 0
    t = begin
    while t < end:
        for bot in range(bots):
            order += 1
            heapq.heappush(events, (t, order, bot, "start"))
            for k in range(1, RUN_SECONDS // REQUEST_EVERY + 1):
                order += 1
                heapq.heappush(events, (t + k * REQUEST_EVERY, order, bot, "call"))
        t += every_minutes * 60
    runs: dict[int, Run] = {}
    starts = cold = 0
    while events:
        at, _, bot, what = heapq.heappop(events)
        clock.t = max(clock.t, at)
        if what == "start":
            runs[bot] = Run(shared, clock, microsoft)
            was_cold = runs[bot].start()
            if at >= counted_from:
                starts += 1
                cold += was_cold
        else:
            runs[bot].call_graph()
    grants = [g for g in microsoft.grants if g >= counted_from]
    return {"bots": bots, "every_minutes": every_minutes, "cp1": cp1, "days": days,
            "starts_per_day": round(starts / days, 2),
            "cold_starts_per_day": round(cold / days, 2),
            "grants_per_day": round(len(grants) / days, 2),
            "grants_per_start": round(len(grants) / starts, 4) if starts else 0.0,
            "hours_between_grants": round(statistics.mean(
                b - a for a, b in zip(grants, grants[1:], strict=False)) / 3600, 2)
            if len(grants) > 1 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="simulated days (default: 30)")
    parser.add_argument("--seed", type=int, default=24, help="random seed (default: 24)")
    parser.add_argument("--json", default=str(HERE / "results" / "cae_days.json"))
    args = parser.parse_args()
    random.seed(args.seed)  # the lifetimes drawn and each bot's moment in its window
    rows = [simulate(bots, every, cp1, args.days)
            for bots, every in SCENARIOS for cp1 in (False, True)]
    print(f"{args.days} simulated days; a run calls Graph every {REQUEST_EVERY} s for "
          f"{RUN_SECONDS} s; tokens as the sandbox draws them")
    print(f"{'bots':>4} {'every':>6} {'cp1':>4} {'starts/day':>10} {'cold starts/day':>15} "
          f"{'grants/day':>10} {'grants/start':>12} {'h between grants':>16}")
    for r in rows:
        print(f"{r['bots']:>4} {r['every_minutes']:>4} m {'yes' if r['cp1'] else 'no':>4} "
              f"{r['starts_per_day']:>10.1f} {r['cold_starts_per_day']:>15.2f} "
              f"{r['grants_per_day']:>10.2f} {r['grants_per_start']:>12.3f} "
              f"{r['hours_between_grants'] or 0:>16.2f}")
    print("\nfor docs/many-bots.md:\n")
    print("| bots | scheduled | `cp1` | starts a day | on an expired token | refresh grants a "
          "day | hours between grants |")
    print("|---:|---|:---:|---:|---:|---:|---:|")
    for r in rows:
        every = "hourly" if r["every_minutes"] == 60 else f"every {r['every_minutes']} min"
        print(f"| {r['bots']} | {every} | {'yes' if r['cp1'] else 'no'} | "
              f"{r['starts_per_day']:g} | {r['cold_starts_per_day']:.1f} | "
              f"{r['grants_per_day']:.1f} | {r['hours_between_grants'] or 0:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
                   f"Python {platform.python_version()}",
        "seed": args.seed, "request_every_s": REQUEST_EVERY, "run_s": RUN_SECONDS,
        "scenarios": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
