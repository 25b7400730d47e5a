"""What the plugin costs a bot: at start, at refresh, at import, and at scale.

    python benchmarks/costs.py [--runs 30] [--json benchmarks/results/costs.json]
                               [--svg docs/images/costs.svg | --no-svg] [--no-herd]
    python benchmarks/costs.py --replot benchmarks/results/costs.json   # the picture only
    python benchmarks/costs.py --sections distance --maestro-rtt 0.040 --microsoft-rtt 0.020
        # one section only; the others are kept from the existing --json file

Against the local sandbox (loopback), in one run:

1. warm start: process start to the first successful Graph call with a valid stored
   token, for (a) bare O365 with FileSystemTokenBackend, (b) the plugin with the file
   store, (c) the plugin with the Maestro store, as a Runner starts a bot, (d) the bot a
   developer writes without the plugin (``hand_written_bot.py``: O365 and the Maestro
   SDK, the token in the same credential); runs are interleaved, each round in a shuffled
   order. Median and 10th-90th percentile; ratios b/a, c/a, c/d.
2. requests per warm start (Maestro, not counting the Runner's own version call;
   identity platform) and 3. per renewal (during a run; at start on an expired token).
4. import cost: the plugin's own modules, from ``python -X importtime``.
5. herd: 1, 4, 16, 32 bot processes on one credential, with the plugin's coordination and
   with ``MS365_COORDINATE_REFRESH=0``: token grants per token renewed while they run
   (6 s tokens; the first lives 12 s) and per start together on an expired token.

6. distance: warm and cold starts (a cold one: on an expired token) of (c) and (d), on
   loopback and with Maestro ``--maestro-rtt`` and Microsoft ``--microsoft-rtt`` seconds
   of round trip away (the sandbox's delaying proxies; Maestro over HTTPS in both, as
   the real one is), all runs interleaved; medians and the requests of each start.

The picture (``docs/images/costs.svg``, needs the ``bench`` extra: matplotlib): warm-start
times of (a)-(d), the grants of 5. against the number of bots, and the starts of 6.
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
from typing import Any

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.sandbox import Sandbox, expire_token_text
from herd_bot import run_cold_starts, run_herd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LABEL = "ms365"
#: (d): the bot written without the plugin; its own file, run as a Runner runs a bot
HAND_WRITTEN = HERE / "hand_written_bot.py"
NAMES = {"a": "bare O365, file", "b": "plugin, file store", "c": "plugin, Maestro store",
         "d": "O365 + Maestro SDK by hand"}

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
    lifecycle = plugin.ms365_account.con.lifecycle
    deadline = time.monotonic() + 2 * lifetime
    while not lifecycle.due() and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.requests.clear()
    plugin.ms365_account.get_current_user_data()
    return count(sandbox)


def refresh_during_a_run_by_hand(sandbox: Sandbox, lifetime: int = 3) -> dict[str, int]:
    """(d) while its access token expires: O365 renews after Graph's 401."""
    sys.path.insert(0, str(HERE))
    from hand_written_bot import account_from

    sandbox.tenant.access_token_lifetime = lifetime
    sandbox.force_expiry()
    account = account_from(sandbox.maestro_sdk())
    account.get_current_user_data()  # renews the expired token: a short-lived one
    time.sleep(lifetime + 1.1)  # O365 compares whole seconds
    sandbox.requests.clear()
    account.get_current_user_data()
    return count(sandbox)


def warm_starts(runs: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    with Sandbox() as sandbox:
        os.environ.update(sandbox.client_env())
        sandbox.put_app_credentials(LABEL)
        MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL
                               ).authenticate(consent=sandbox.consent_redirect)
        (folder / "o365_token.txt").write_text(sandbox.stored_token(LABEL) or "")
        task_id, runner_token = sandbox.maestro.start_task()
        runner = sandbox.maestro.runner_argv(task_id, runner_token)
        env = sandbox.process_env(APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret,
                                  MS365_FALLBACK_DIR=str(folder / "fallback"))
        scripts = {"d": HAND_WRITTEN}
        for name, source in (("a", BARE_O365), ("b", PLUGIN_FILE), ("c", PLUGIN_MAESTRO)):
            scripts[name] = folder / f"{name}.py"
            scripts[name].write_text(source)
        args = {"a": [str(folder)], "b": [str(folder)], "c": [str(folder), *runner],
                "d": runner}
        times: dict[str, list[float]] = {name: [] for name in NAMES}
        seen: dict[str, list[dict[str, int]]] = {name: [] for name in NAMES}
        for name in NAMES:  # one warm-up each (file caches), not timed
            _run(scripts[name], args[name], env)
        order = random.Random(7)
        for _ in range(runs):
            for name in order.sample(list(NAMES), len(NAMES)):  # none always first or last
                sandbox.requests.clear()
                times[name].append(_run(scripts[name], args[name], env))
                seen[name].append(count(sandbox))
        requests = {name: counts[-1] for name, counts in seen.items()}
        same = {name: all(c == counts[0] for c in counts) for name, counts in seen.items()}

        refresh = {"during a run, Maestro (c)": refresh_during_a_run(sandbox)}
        sandbox.tenant.access_token_lifetime = 3600
        sandbox.force_expiry()
        sandbox.requests.clear()
        _run(scripts["c"], args["c"], env)
        refresh["at start, Maestro (c)"] = count(sandbox)
        token_file = folder / "o365_token.txt"
        token_file.write_text(expire_token_text(token_file.read_text()))
        sandbox.tenant.expire_access_tokens()
        sandbox.requests.clear()
        _run(scripts["b"], args["b"], env)
        refresh["at start, file (b)"] = count(sandbox)
        # (d) last: it writes O365's own format over the plugin's token
        sandbox.force_expiry()
        sandbox.requests.clear()
        _run(scripts["d"], args["d"], env)
        refresh["at start, by hand (d)"] = count(sandbox)
        refresh["during a run, by hand (d)"] = refresh_during_a_run_by_hand(sandbox)

    summary = {name: {"median_s": statistics.median(values), "p10_s": _pct(values, 0.1),
                      "p90_s": _pct(values, 0.9)} for name, values in times.items()}
    median = {name: t["median_s"] for name, t in summary.items()}
    return {"runs": runs, "times": summary, "samples_s": times,
            "ratio_b_a": median["b"] / median["a"], "ratio_c_a": median["c"] / median["a"],
            "ratio_d_a": median["d"] / median["a"], "ratio_c_d": median["c"] / median["d"],
            "requests_per_warm_start": requests, "same_requests_every_run": same,
            "requests_per_refresh": refresh}


#: contestants of 6., each in a sandbox of its own ((d) writes O365's format over the token)
FAR = {"c": "plugin, Maestro store", "d": "O365 + Maestro SDK by hand"}


def distance_starts(runs: int, maestro_rtt: float, microsoft_rtt: float) -> dict:
    """Warm and cold starts of (c) and (d), near (loopback) and far (the round trips),
    interleaved: each round runs every (contestant, distance, warm/cold) once, shuffled."""
    folder = Path(tempfile.mkdtemp())
    script = folder / "c.py"
    script.write_text(PLUGIN_MAESTRO)
    distances = {"near": {}, "far": {"maestro": maestro_rtt, "microsoft": microsoft_rtt}}
    boxes: dict[tuple[str, str], tuple[Sandbox, list[str], dict[str, str]]] = {}
    try:
        for where, trips in distances.items():
            for name in FAR:
                sandbox = Sandbox(round_trip=trips, maestro_tls=True).start()
                env = sandbox.process_env(
                    MS365_FALLBACK_DIR=str(folder / f"fallback-{name}-{where}"))
                sandbox.authorize(LABEL, ["basic"])
                task_id, runner_token = sandbox.maestro.start_task()
                argv = sandbox.maestro.runner_argv(task_id, runner_token)
                args = [str(folder), *argv] if name == "c" else argv
                boxes[(name, where)] = sandbox, [str(script if name == "c" else HAND_WRITTEN),
                                                 *args], env
        cases = [(name, where, start) for name in FAR for where in distances
                 for start in ("warm", "cold")]
        times: dict[str, list[float]] = {"/".join(c): [] for c in cases}
        seen: dict[str, list[dict[str, int]]] = {"/".join(c): [] for c in cases}

        def once(name: str, where: str, start: str) -> tuple[float, dict[str, int]]:
            sandbox, args, env = boxes[(name, where)]
            if start == "cold":
                sandbox.force_expiry()
            sandbox.requests.clear()
            took = _run(Path(args[0]), args[1:], env)
            return took, {**count(sandbox), "maestro_version": len(
                sandbox.requests("maestro", path_contains="/maestro/version"))}

        for case in cases:  # one warm-up each (file caches, the first refresh), not timed
            once(*case)
        order = random.Random(23)
        for _ in range(runs):
            for case in order.sample(cases, len(cases)):
                took, counted = once(*case)
                times["/".join(case)].append(took)
                seen["/".join(case)].append(counted)
    finally:
        for sandbox, _, _ in boxes.values():
            sandbox.stop()
    summary = {key: {"median_s": statistics.median(v), "p10_s": _pct(v, 0.1),
                     "p90_s": _pct(v, 0.9)} for key, v in times.items()}
    ratios = {f"{start}/{where}": summary[f"c/{where}/{start}"]["median_s"]
              / summary[f"d/{where}/{start}"]["median_s"]
              for where in distances for start in ("warm", "cold")}
    return {"runs": runs, "maestro_rtt_s": maestro_rtt, "microsoft_rtt_s": microsoft_rtt,
            "maestro_tls": True, "times": summary, "samples_s": times,
            "ratio_c_d": ratios, "requests": {k: v[-1] for k, v in seen.items()},
            "same_requests_every_run": {k: all(c == v[0] for c in v)
                                        for k, v in seen.items()}}


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


#: Seconds the herd's access tokens live (the first: twice that), as in benchmarks/herd.py.
HERD_LIFETIME = 6


def herd(sizes: list[int], expiries: int, starts: int) -> dict:
    """Bots on one credential, coordinated and not: grants per token renewed while they
    run, and per start together on an expired token."""
    in_run, cold = [], []
    for bots in sizes:
        for coordinate in (True, False):
            os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
            with Sandbox() as sandbox:
                os.environ.update(sandbox.client_env())
                r = run_herd(sandbox, processes=bots, expiries=expiries,
                             lifetime=HERD_LIFETIME, coordinate=coordinate)
            per_token = r.refreshes_per_token or [0]
            in_run.append({
                "bots": bots, "coordinated": coordinate, "succeeded": r.succeeded,
                "grants_per_token_renewed": r.refreshes_per_token,
                "mean_grants_per_token": round(statistics.mean(per_token), 2),
                "max_grants_per_token": max(per_token), "token_requests": r.token_requests,
                "maestro_credential_requests": r.maestro_requests, "graph_calls": r.graph_calls,
                "newest_token_stored": r.newest_token_stored,
                "wall_seconds": round(r.wall_seconds, 1), "failures": len(r.failures),
                "failure_tails": [f[-600:] for f in r.failures[:2]]})
            os.environ["MS365_FALLBACK_DIR"] = tempfile.mkdtemp()
            with Sandbox() as sandbox:
                os.environ.update(sandbox.client_env())
                c = run_cold_starts(sandbox, processes=bots, repetitions=starts,
                                    coordinate=coordinate)
                reads = len(sandbox.requests("maestro", path_contains="/credential",
                                             method="GET"))
                writes = len(sandbox.requests("maestro", path_contains="/credential",
                                              method="POST"))
            cold.append({
                "bots": bots, "coordinated": coordinate, "grants_per_start": c.grants,
                "mean_grants_per_start": round(statistics.mean(c.grants), 2),
                "max_grants_per_start": max(c.grants), "starts": starts,
                "starts_all_ok": c.succeeded, "maestro_reads": reads, "maestro_writes": writes,
                "failures": len(c.failures)})
    for r in in_run:  # grants per renewal: against what one bot alone renewed in as long
        alone = [a for a in in_run if a["bots"] == 1 and a["coordinated"] == r["coordinated"]]
        r["grants_per_renewal"] = (round(r["token_requests"] / alone[0]["token_requests"], 2)
                                   if alone and alone[0]["token_requests"]
                                   else r["mean_grants_per_token"])
    return {"lifetime_s": HERD_LIFETIME, "expiries": expiries, "in_run": in_run,
            "cold_starts": cold}


def picture(results: dict, path: Path) -> None:
    """Warm starts of (a)-(d) (left) and the herd's grants per renewal (right), as SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "botcity-ms365",
                         "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    warm, crowd, far = results["warm"], results.get("herd"), results.get("distance")
    fig = plt.figure(figsize=(10 if crowd or far else 5, 7.8 if far else 3.8))
    rows, columns = (2 if far else 1), (2 if crowd or far else 1)
    left = fig.add_subplot(rows, columns, 1)
    samples = [[t * 1000 for t in warm["samples_s"][name]] for name in NAMES]
    left.boxplot(samples, whis=(10, 90), showfliers=False, widths=0.5,
                 medianprops={"color": "black"})
    jitter = random.Random(1)
    for k, values in enumerate(samples, start=1):
        left.scatter([k + jitter.uniform(-0.18, 0.18) for _ in values], values, s=6,
                     alpha=0.45, color="tab:blue", linewidths=0)
    short = {"a": "bare O365\nfile", "b": "plugin\nfile store", "c": "plugin\nMaestro store",
             "d": "by hand: O365\n+ Maestro SDK"}
    left.set_xticks(range(1, len(NAMES) + 1),
                    [f"({key}) {short[key]}" for key in NAMES], fontsize=7.5)
    left.set_ylabel("process start to first Graph call (ms)")
    left.set_title(f"Warm start, {warm['runs']} interleaved runs each\n"
                   "(box: median, quartiles; whiskers: 10th-90th percentile)", fontsize=9)
    if far:
        distance_panel(fig.add_subplot(rows, 1, 2), far)
    if crowd:
        right = fig.add_subplot(rows, columns, 2)
        styles = {(True, "in_run"): ("tab:green", "during a run, coordinated"),
                  (False, "in_run"): ("tab:red", "during a run, COORDINATE_REFRESH=0"),
                  (True, "cold_starts"): ("tab:green", "start on an expired token, coordinated"),
                  (False, "cold_starts"): ("tab:red", "start on an expired token, =0")}
        field = {"in_run": "grants_per_renewal", "cold_starts": "mean_grants_per_start"}
        sizes = sorted({r["bots"] for r in crowd["in_run"]})
        right.plot(sizes, sizes, color="0.6", linestyle=":", linewidth=1,
                   label="one grant per bot")
        for (coordinated, kind), (color, label) in styles.items():
            rows = [r for r in crowd[kind] if r["coordinated"] == coordinated]
            look = ({"linewidth": 4, "alpha": 0.4, "marker": "o", "markersize": 8}
                    if kind == "in_run" else
                    {"linewidth": 1.2, "linestyle": "--", "marker": "s", "markersize": 5,
                     "markerfacecolor": "white"})
            right.plot([r["bots"] for r in rows], [r[field[kind]] for r in rows], color=color,
                       label=label, **look)
        right.set_xscale("log", base=2)
        right.set_yscale("log", base=2)
        right.set_xticks(sizes, [str(n) for n in sizes])
        ticks = [1, 2, 4, 8, 16, 32]
        right.set_yticks(ticks, [str(n) for n in ticks])
        right.minorticks_off()
        right.set_xlabel("bots on one credential")
        right.set_ylabel("token grants per expiry")
        right.set_title("Refresh-token grants per expiry: during a run (grants / one bot's;\n"
                        f"{crowd['lifetime_s']} s tokens), at a start (mean of "
                        f"{crowd['cold_starts'][0]['starts']} starts together)", fontsize=9)
        right.legend(fontsize=7.5, frameon=False, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)


def distance_panel(axis: object, far: dict) -> None:
    """6.: medians (bars) and 10th-90th percentiles of (c) and (d), warm and cold, near and
    far, with the ratio c/d over each pair."""
    ax: Any = axis
    trips = (f"Maestro {far['maestro_rtt_s'] * 1000:g} ms, "
             f"Microsoft {far['microsoft_rtt_s'] * 1000:g} ms away")
    groups = [("warm", "near", "warm start, loopback"), ("warm", "far", f"warm start,\n{trips}"),
              ("cold", "near", "cold start (expired token),\nloopback"),
              ("cold", "far", f"cold start (expired token),\n{trips}")]
    colors = {"c": "tab:blue", "d": "tab:orange"}
    for g, (start, where, _) in enumerate(groups):
        for k, name in enumerate(FAR):
            t = far["times"][f"{name}/{where}/{start}"]
            x = g + (k - 0.5) * 0.36
            median = t["median_s"] * 1000
            ax.bar(x, median, width=0.34, color=colors[name],
                   label=f"({name}) {FAR[name]}" if g == 0 else None)
            ax.errorbar(x, median, yerr=[[median - t["p10_s"] * 1000],
                                         [t["p90_s"] * 1000 - median]],
                        color="black", capsize=3, linewidth=1)
            ax.text(x, 4, f"{median:.0f}", ha="center", va="bottom", fontsize=7,
                    color="white")
        top = max(far["times"][f"{n}/{where}/{start}"]["p90_s"] for n in FAR) * 1000
        ax.text(g, top + 25, f"c/d {far['ratio_c_d'][f'{start}/{where}']:.2f}", ha="center",
                fontsize=8)
    ax.set_xticks(range(len(groups)), [label for _, _, label in groups], fontsize=7.5)
    ax.set_ylabel("process start to first Graph call (ms)")
    ax.set_title(f"A Runner's bot at a distance: median of {far['runs']} interleaved runs "
                 "each (whiskers: 10th-90th percentile; Maestro over HTTPS)", fontsize=9)
    ax.legend(fontsize=7.5, frameon=False, loc="upper left")


def as_installed() -> None:
    """Measure the package as pip installs it: with compiled bytecode, like O365 in
    site-packages (an editable install under PYTHONDONTWRITEBYTECODE has none)."""
    import compileall

    import botcity.plugins.ms365.credentials as package

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def report(results: dict, runs: int) -> None:
    warm, imports, crowd = results["warm"], results["imports"], results.get("herd")
    far = results.get("distance")
    print(f"machine: {results['machine']}; sandbox on 127.0.0.1; bytecode compiled "
          "(as a pip install leaves it)\n")
    print(f"1. warm start to the first Graph call ({runs} runs each, interleaved)")
    for key, label in NAMES.items():
        t = warm["times"][key]
        print(f"   ({key}) {label:<26} median {t['median_s'] * 1000:7.1f} ms   "
              f"p10-p90 {t['p10_s'] * 1000:6.1f}-{t['p90_s'] * 1000:6.1f} ms")
    print(f"   ratio b/a {warm['ratio_b_a']:.3f}   c/a {warm['ratio_c_a']:.3f}   "
          f"d/a {warm['ratio_d_a']:.3f}   c/d {warm['ratio_c_d']:.3f}")
    print("2. requests per warm start (the same in every run: "
          f"{all(warm['same_requests_every_run'].values())})")
    for key in NAMES:
        print(f"   ({key}) {warm['requests_per_warm_start'][key]}")
    print("3. requests per renewal")
    for key, value in warm["requests_per_refresh"].items():
        print(f"   {key:<26} {value}")
    print(f"4. import: plugin's own modules {imports['plugin_own_modules_ms']:.1f} ms; "
          f"whole plugin import {imports['plugin_total_ms']:.0f} ms; import O365 "
          f"{imports['import_O365_ms']:.0f} ms")
    if far:
        print(f"6. at a distance: Maestro {far['maestro_rtt_s'] * 1000:g} ms, Microsoft "
              f"{far['microsoft_rtt_s'] * 1000:g} ms round trip ({far['runs']} interleaved "
              "runs each; Maestro over HTTPS)")
        for key, t in far["times"].items():
            r = far["requests"][key]
            print(f"   {key:<12} median {t['median_s'] * 1000:7.1f} ms  p10-p90 "
                  f"{t['p10_s'] * 1000:6.1f}-{t['p90_s'] * 1000:6.1f} ms   Maestro reads "
                  f"{r['maestro_reads']} writes {r['maestro_writes']} other "
                  f"{r['maestro_other']} version {r['maestro_version']}; identity "
                  f"{r['identity']}; Graph 401s {r['graph_401']}")
        print("   c/d " + "   ".join(f"{k} {v:.3f}" for k, v in far["ratio_c_d"].items())
              + f"   (same requests every run: {all(far['same_requests_every_run'].values())})")
    if not crowd:
        return
    print(f"5. bots on one credential ({crowd['lifetime_s']} s tokens, the first "
          f"{2 * crowd['lifetime_s']} s; {crowd['expiries']} expiries)")
    print(f"   {'bots':>4} {'coord':>5} {'ok':>5} {'grants per token renewed':<44} "
          f"{'grants':>6} {'per renewal':>11} {'maestro req':>11} {'wall s':>6}")
    for r in crowd["in_run"]:
        print(f"   {r['bots']:>4} {'yes' if r['coordinated'] else 'no':>5} "
              f"{r['succeeded']:>2}/{r['bots']:<2} {str(r['grants_per_token_renewed']):<44.44} "
              f"{r['token_requests']:>6} {r['grants_per_renewal']:>11} "
              f"{r['maestro_credential_requests']:>11} {r['wall_seconds']:>6}")
    print("   starting together on an expired token:")
    print(f"   {'bots':>4} {'coord':>5} {'all ok':>6} {'grants per start':<24} {'mean':>5} "
          f"{'maestro reads':>13} {'writes':>6}")
    for c in crowd["cold_starts"]:
        print(f"   {c['bots']:>4} {'yes' if c['coordinated'] else 'no':>5} "
              f"{c['starts_all_ok']:>2}/{c['starts']:<3} {str(c['grants_per_start']):<24} "
              f"{c['mean_grants_per_start']:>5} {c['maestro_reads']:>13} "
              f"{c['maestro_writes']:>6}")
    for r in crowd["in_run"]:
        for tail in r["failure_tails"]:
            print(f"-- a failed bot ({r['bots']} bots), its last output:\n{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="warm starts per contestant")
    parser.add_argument("--json", default=str(HERE / "results" / "costs.json"))
    parser.add_argument("--svg", default=str(REPO / "docs" / "images" / "costs.svg"))
    parser.add_argument("--no-svg", action="store_true", help="no picture (no matplotlib)")
    parser.add_argument("--no-herd", action="store_true", help="skip 5. (several minutes)")
    parser.add_argument("--bots", default="1,4,16,32", help="herd sizes, comma-separated")
    parser.add_argument("--expiries", type=int, default=3, help="expiries in each herd run")
    parser.add_argument("--starts", type=int, default=5,
                        help="starts together on an expired token, per herd size")
    parser.add_argument("--replot", metavar="JSON", help="only draw the picture from a result")
    parser.add_argument("--maestro-rtt", type=float, default=0.040, metavar="SECONDS",
                        help="6.: round trip to Maestro (default: %(default)s)")
    parser.add_argument("--microsoft-rtt", type=float, default=0.020, metavar="SECONDS",
                        help="6.: round trip to the identity platform and Graph "
                        "(default: %(default)s)")
    parser.add_argument("--distance-runs", type=int, default=10,
                        help="6.: runs of each start (default: %(default)s)")
    parser.add_argument("--sections", default="warm,imports,herd,distance",
                        help="what to measure (default: %(default)s); the sections not "
                        "measured are kept from the --json file, if it exists")
    args = parser.parse_args()
    if args.replot:
        picture(json.loads(Path(args.replot).read_text()), Path(args.svg))
        return 0
    sections = set(args.sections.split(",")) - ({"herd"} if args.no_herd else set())
    if unknown := sections - {"warm", "imports", "herd", "distance"}:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    as_installed()
    kept = Path(args.json)
    results: dict = json.loads(kept.read_text()) if kept.is_file() else {}
    if "herd" not in sections and args.no_herd:
        results.pop("herd", None)
    results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"{platform.system()}, Python {platform.python_version()}")
    if "warm" in sections:
        results["warm"] = warm_starts(args.runs)
    if "imports" in sections:
        results["imports"] = import_cost()
    if "herd" in sections:
        results["herd"] = herd([int(n) for n in args.bots.split(",")], args.expiries,
                               args.starts)
    if "distance" in sections:
        far_started = time.monotonic()
        results["distance"] = distance_starts(args.distance_runs, args.maestro_rtt,
                                              args.microsoft_rtt)
        results["distance"]["seconds"] = round(time.monotonic() - far_started)
    if "warm" not in results or "imports" not in results:
        parser.error(f"{kept} holds no warm starts or imports: measure them too")
    took = round(time.monotonic() - started)
    if sections >= {"warm", "imports", "herd"} or "seconds" not in results:
        results["seconds"] = took  # the whole run's (a part's alone is not that)
    report(results, results["warm"]["runs"])
    print(f"\n(benchmark took {took} s)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_svg:
        picture(results, Path(args.svg))
        print(f"picture: {args.svg} ({Path(args.svg).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
