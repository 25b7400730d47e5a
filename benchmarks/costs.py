"""What the plugin costs a bot: at start, at refresh, at import, and at scale.

    python benchmarks/costs.py [--runs 30] [--json benchmarks/results/costs.json]

Against the local sandbox (loopback), in one run:

1. warm start: process start to the first successful Graph call with a valid stored
   token, for (a) bare O365 with FileSystemTokenBackend, (b) the plugin with the file
   store, (c) the plugin with the Maestro store, as a Runner starts a bot; runs are
   interleaved, each round in a shuffled order. Median and 10th-90th percentile; ratios
   b/a and c/a.
2. requests per warm start (Maestro, not counting the Runner's own version call;
   identity platform) and 3. per refresh (during a run; at start on an expired token).
4. import cost: the plugin's own modules, from ``python -X importtime``.
5. scale: 1, 4, 16 bots on one credential through one expiry (a 12 s token, then 6 s
   ones for half a life).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.credentials.sandbox import Sandbox, expire_token_text
from botcity.plugins.ms365.credentials.sandbox.herd import run_herd

HERE = Path(__file__).resolve().parent
LABEL = "ms365"

BARE_O365 = """
import os, sys
from O365 import Account, FileSystemTokenBackend
from O365.connection import MSGraphProtocol

class Graph(MSGraphProtocol):
    _protocol_url = os.environ["MS365_GRAPH_URL"] + "/"

backend = FileSystemTokenBackend(token_path=sys.argv[1], token_filename="o365_token.txt")
account = Account((os.environ["APP_ID"], os.environ["APP_SECRET"]), protocol=Graph(),
                  token_backend=backend)
assert account.get_current_user_data().user_principal_name
"""

PLUGIN_FILE = """
import os, sys
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

service = MS365CredentialsPlugin(os.environ["APP_ID"], os.environ["APP_SECRET"],
                                 token_path=sys.argv[1])
assert service.ms365_account.get_current_user_data().user_principal_name
"""

PLUGIN_MAESTRO = """
import sys
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

sys.argv = [sys.argv[0], *sys.argv[2:]]
maestro = BotMaestroSDK.from_sys_args()
service = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
assert service.ms365_account.get_current_user_data().user_principal_name
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _run(script: Path, args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script), *args], env=env, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    return time.perf_counter() - started


def count(sandbox: Sandbox) -> dict[str, int]:
    maestro = [r for r in sandbox.requests("maestro")
               if not r.path.endswith("/maestro/version")]
    return {
        "maestro_reads": sum(r.method == "GET" and "/credential" in r.path for r in maestro),
        "maestro_writes": sum(r.method == "POST" and "/credential" in r.path for r in maestro),
        "maestro_other": sum("/credential" not in r.path for r in maestro),
        "identity": len(sandbox.requests("identity")),
        "token_requests": len(sandbox.token_requests()),
        "graph_401": sum(r.status == 401 for r in sandbox.requests("graph")),
    }


def refresh_during_a_run(sandbox: Sandbox, lifetime: int = 6) -> dict[str, int]:
    """A bot that runs while its access token comes due: what its renewal costs."""
    sandbox.tenant.access_token_lifetime = lifetime
    sandbox.force_expiry()
    plugin = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    plugin.authenticate()  # renews the expired token: a short-lived one
    con = plugin.ms365_account.con
    deadline = time.monotonic() + 2 * lifetime
    while not plugin.token_store.refresh_due(con.username) and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.requests.clear()
    plugin.ms365_account.get_current_user_data()
    return count(sandbox)


def warm_starts(runs: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    with Sandbox() as sandbox:
        os.environ.update(sandbox.client_env())
        sandbox.put_app_credentials(LABEL)
        MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL
                               ).authenticate(consent=sandbox.consent_redirect)
        (folder / "o365_token.txt").write_text(sandbox.maestro.secret(LABEL, "token") or "")
        task_id, runner_token = sandbox.maestro.start_task()
        runner = sandbox.maestro.runner_argv(task_id, runner_token)
        env = sandbox.process_env(APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret,
                                  MS365_FALLBACK_DIR=str(folder / "fallback"))
        scripts = {}
        for name, source in (("a", BARE_O365), ("b", PLUGIN_FILE), ("c", PLUGIN_MAESTRO)):
            scripts[name] = folder / f"{name}.py"
            scripts[name].write_text(source)
        args = {"a": [str(folder)], "b": [str(folder)], "c": [str(folder), *runner]}
        times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        requests: dict[str, dict[str, int]] = {}
        for name in "abc":  # one warm-up each (file caches), not timed
            _run(scripts[name], args[name], env)
        order = random.Random(7)
        for _ in range(runs):
            for name in order.sample("abc", 3):  # no variant always first or last
                sandbox.requests.clear()
                times[name].append(_run(scripts[name], args[name], env))
                requests[name] = count(sandbox)

        refresh = {"during a run, Maestro": refresh_during_a_run(sandbox)}
        sandbox.tenant.access_token_lifetime = 3600
        sandbox.force_expiry()
        sandbox.requests.clear()
        _run(scripts["c"], args["c"], env)
        refresh["at start, Maestro"] = count(sandbox)
        token_file = folder / "o365_token.txt"
        token_file.write_text(expire_token_text(token_file.read_text()))
        sandbox.tenant.expire_access_tokens()
        sandbox.requests.clear()
        _run(scripts["b"], args["b"], env)
        refresh["at start, file"] = count(sandbox)

    summary = {name: {"median_s": statistics.median(values), "p10_s": _pct(values, 0.1),
                      "p90_s": _pct(values, 0.9)} for name, values in times.items()}
    return {"runs": runs, "times": summary,
            "ratio_b_a": summary["b"]["median_s"] / summary["a"]["median_s"],
            "ratio_c_a": summary["c"]["median_s"] / summary["a"]["median_s"],
            "requests_per_warm_start": requests, "requests_per_refresh": refresh}


def import_cost(runs: int = 10) -> dict:
    """Microseconds spent importing the plugin's own modules (self time), and the whole
    import next to ``import O365``."""
    def importtime(statement: str) -> list[tuple[str, int, int]]:
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                             capture_output=True, text=True, check=True,
                             env=os.environ).stderr
        rows = []
        for line in out.splitlines()[1:]:
            parts = line.split("|")
            if len(parts) == 3 and parts[0].startswith("import time:"):
                rows.append((parts[2].strip(), int(parts[0].split(":")[1]), int(parts[1])))
        return rows

    own, total, o365 = [], [], []
    for _ in range(runs):
        rows = importtime("import botcity.plugins.ms365.credentials")
        own.append(sum(s for name, s, _ in rows
                       if name.startswith("botcity.plugins.ms365.credentials")))
        total.append(max(c for name, _, c in rows
                         if name == "botcity.plugins.ms365.credentials"))
        o365.append(max(c for name, _, c in importtime("import O365") if name == "O365"))
    return {"plugin_own_modules_ms": statistics.median(own) / 1000,
            "plugin_total_ms": statistics.median(total) / 1000,
            "import_O365_ms": statistics.median(o365) / 1000}


def scale() -> list[dict]:
    rows = []
    for bots in (1, 4, 16):
        os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
        with Sandbox() as sandbox:
            os.environ.update(sandbox.client_env())
            result = run_herd(sandbox, processes=bots, expiries=1, lifetime=6)
        rows.append({"bots": bots, "succeeded": result.succeeded,
                     "token_requests": result.token_requests,
                     "refresh_grants": sum(result.refreshes_per_token),
                     "grants_per_token_renewed": result.refreshes_per_token,
                     "maestro_credential_requests": result.maestro_requests,
                     "wall_seconds": round(result.wall_seconds, 1)})
    return rows


def as_installed() -> None:
    """Measure the package as pip installs it: with compiled bytecode, like O365 in
    site-packages (an editable install under PYTHONDONTWRITEBYTECODE has none)."""
    import compileall

    import botcity.plugins.ms365.credentials as package

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default=str(HERE / "results" / "costs.json"))
    args = parser.parse_args()
    started = time.monotonic()
    as_installed()
    warm = warm_starts(args.runs)
    imports = import_cost()
    scaled = scale()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
          f"Python {platform.python_version()}; sandbox on 127.0.0.1; bytecode compiled "
          "(as a pip install leaves it)\n")
    print(f"1. warm start to the first Graph call ({args.runs} runs each, interleaved)")
    names = {"a": "bare O365, file", "b": "plugin, file store", "c": "plugin, Maestro store"}
    for key, label in names.items():
        t = warm["times"][key]
        print(f"   ({key}) {label:<22} median {t['median_s'] * 1000:7.1f} ms   "
              f"p10-p90 {t['p10_s'] * 1000:6.1f}-{t['p90_s'] * 1000:6.1f} ms")
    print(f"   ratio b/a {warm['ratio_b_a']:.3f}   c/a {warm['ratio_c_a']:.3f}")
    print("2. requests per warm start")
    for key in "bc":
        print(f"   ({key}) {warm['requests_per_warm_start'][key]}")
    print("3. requests per refresh")
    for key, value in warm["requests_per_refresh"].items():
        print(f"   {key:<22} {value}")
    print(f"4. import: plugin's own modules {imports['plugin_own_modules_ms']:.1f} ms; "
          f"whole plugin import {imports['plugin_total_ms']:.0f} ms; import O365 "
          f"{imports['import_O365_ms']:.0f} ms")
    print("5. scale: bots sharing one credential through one expiry (12 s token, then 6 s)")
    for row in scaled:
        print(f"   {row['bots']:>2} bots: {row['succeeded']}/{row['bots']} ok, "
              f"{row['token_requests']} token requests ({row['refresh_grants']} refresh; per "
              f"token renewed {row['grants_per_token_renewed']}), "
              f"{row['maestro_credential_requests']} Maestro credential requests, "
              f"{row['wall_seconds']} s")
    elapsed = time.monotonic() - started
    print(f"\n(benchmark took {elapsed:.0f} s)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"warm": warm, "imports": imports, "scale": scaled,
                                           "seconds": elapsed}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
