"""Load test: many bots on one Maestro credential, against the local sandbox.

    python benchmarks/herd.py [--quick] [--json results/herd.json]

For 8, 16 and 32 bot processes (8 and 16 with --quick), each for 5 lives of a
short-lived access token, with the plugin's coordination and without it (each bot
refreshes at expiry on its own): refresh-token grants per token renewed (how many bots
redeemed the same refresh token) and per minute, Maestro credential requests, Graph
calls, failures. Then the same numbers of bots starting together on an expired token, 20
times (5 with --quick): refresh grants per start. Then 1000 kill -9 during token-file
saves (200 with --quick). Prints tables; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from botcity.plugins.ms365.sandbox import Sandbox
from herd_bot import run_cold_starts, run_herd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


LIFETIME = 6


def herd(processes: int, coordinate: bool, expiries: int) -> dict:
    os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
    with Sandbox() as sandbox:
        os.environ.update(sandbox.client_env())
        result = run_herd(sandbox, processes=processes, expiries=expiries, lifetime=LIFETIME,
                          coordinate=coordinate)
    grants = sum(result.refreshes_per_token)
    return {"processes": processes, "coordinated": coordinate, "succeeded": result.succeeded,
            "refreshes_per_token": result.refreshes_per_token,
            "max_refreshes_per_token": max(result.refreshes_per_token or [0]),
            "grants_per_minute": round(grants * 60 / result.wall_seconds, 1),
            "token_requests": result.token_requests,
            "maestro_credential_requests": result.maestro_requests,
            "graph_calls": result.graph_calls, "newest_token_stored": result.newest_token_stored,
            "wall_seconds": round(result.wall_seconds, 1), "failures": len(result.failures),
            "failure_tails": [f[-600:] for f in result.failures[:3]]}


def cold_starts(processes: int, repetitions: int, coordinate: bool) -> dict:
    os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
    with Sandbox() as sandbox:
        os.environ.update(sandbox.client_env())
        result = run_cold_starts(sandbox, processes=processes, repetitions=repetitions,
                                 coordinate=coordinate)
        reads = len(sandbox.requests("maestro", path_contains="/credential", method="GET"))
    return {"processes": processes, "coordinated": coordinate, "grants": result.grants,
            "starts_all_ok": result.succeeded, "repetitions": repetitions,
            "maestro_reads": reads, "failures": len(result.failures)}


def kills(rounds: int) -> dict:
    """Reuses the kill -9 script of the tests on a real token."""
    os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
    folder = Path(tempfile.mkdtemp())
    with Sandbox() as sandbox:
        os.environ.update(sandbox.client_env())
        from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                               token_path=folder / "seed.json").authenticate(
            consent=sandbox.consent_redirect)
    sys.path.insert(0, str(REPO / "tests"))
    from test_reliability import KILLER

    (folder / "killer.py").write_text(KILLER)
    (folder / "shared").mkdir()
    done = subprocess.run([sys.executable, str(folder / "killer.py"),
                           str(folder / "shared" / "o365_token.txt"), str(folder / "seed.json"),
                           str(rounds)], capture_output=True, text=True, timeout=1800)
    return {"kills": rounds, "ok": done.returncode == 0, "report": done.stdout.strip()[-300:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers")
    parser.add_argument("--json", default=str(HERE / "results" / "herd.json"))
    args = parser.parse_args()
    sizes = [8, 16] if args.quick else [8, 16, 32]
    rows = [herd(n, coordinate, expiries=5) for n in sizes for coordinate in (True, False)]
    starts = [cold_starts(n, 5 if args.quick else 20, coordinate) for n in sizes
              for coordinate in (True, False)]
    killed = kills(200 if args.quick else 1000)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; sandbox on loopback; access tokens live {LIFETIME} s "
          f"(the first {2 * LIFETIME} s)")
    print(f"{'bots':>5} {'coord':>5} {'ok':>5} {'tokens renewed':>14} {'max grants/token':>16} "
          f"{'grants':>6} {'per min':>7} {'maestro req':>11} {'graph calls':>11} "
          f"{'newest kept':>11} {'wall s':>6}")
    for r in rows:
        print(f"{r['processes']:>5} {'yes' if r['coordinated'] else 'no':>5} "
              f"{r['succeeded']:>2}/{r['processes']:<2} {len(r['refreshes_per_token']):>14} "
              f"{r['max_refreshes_per_token']:>16} {r['token_requests']:>6} "
              f"{r['grants_per_minute']:>7} {r['maestro_credential_requests']:>11} "
              f"{r['graph_calls']:>11} {str(r['newest_token_stored']):>11} "
              f"{r['wall_seconds']:>6}")
    for r in rows:
        for tail in r["failure_tails"]:
            print(f"-- a failed bot ({r['processes']} bots), its last output:\n{tail}")
    print("\nbots starting together on an expired token:")
    print(f"{'bots':>5} {'coord':>5} {'starts':>6} {'all ok':>6} {'grants per start':<40} "
          f"{'max':>3} {'maestro reads':>13}")
    for s in starts:
        print(f"{s['processes']:>5} {'yes' if s['coordinated'] else 'no':>5} "
              f"{s['repetitions']:>6} {s['starts_all_ok']:>6} {str(s['grants']):<40} "
              f"{max(s['grants']):>3} {s['maestro_reads']:>13}")
    print(killed["report"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"herd": rows, "cold_starts": starts,
                                           "kill9": killed}, indent=2))
    ok = all(r["failures"] == 0 for r in rows) and killed["ok"] and all(
        r["max_refreshes_per_token"] <= 2 for r in rows if r["coordinated"]) and all(
        s["failures"] == 0 and max(s["grants"]) <= 2 for s in starts if s["coordinated"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
