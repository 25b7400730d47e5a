"""``botcity-ms365 doctor`` against the sandbox (all good, a reader key, a skewed clock, an
old Maestro, an expiring certificate), its checks one by one (thresholds, a write that
shows late), and the sandbox controls it needs."""

from __future__ import annotations

import email.utils
import json
import re
import sys
import time
from pathlib import Path

import pytest
import requests

from botcity.plugins.ms365.credentials import cli, doctor
from botcity.plugins.ms365.credentials._maestro import MaestroVault, connect
from botcity.plugins.ms365.credentials.errors import StoreError
from conftest import bot_env, run_process

LABEL = "ms365"
SCRIPT = str(Path(sys.executable).with_name("botcity-ms365"))
NAMES = ["maestro version", "maestro round trip", "maestro write", "write visible",
         "key order", "probe removed", "identity discovery", "clock skew", "token endpoint",
         "app credential", "stored token"]


@pytest.fixture
def signed_in(sandbox):
    """The sandbox app's keys and a token in credential ``ms365``."""
    sandbox.authorize(LABEL, ["basic"])
    return sandbox


def connection(sandbox, key=None):
    return {"BOTCITY_SERVER": sandbox.maestro_url, "BOTCITY_LOGIN": sandbox.maestro.login,
            "BOTCITY_KEY": key or sandbox.maestro.key}


def doctor_json(sandbox, monkeypatch, capsys, *args, key=None):
    """``botcity-ms365 doctor --label ms365 --json`` in this process: (exit, checks by name)."""
    for name, value in connection(sandbox, key).items():
        monkeypatch.setenv(name, value)
    sandbox.requests.clear()
    code = cli.main(["doctor", "--label", LABEL, "--json", *args])
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["checks"]] == NAMES
    assert report["ok"] is (code == 0)
    return code, {c["name"]: c for c in report["checks"]}


def keys(sandbox):
    return {item["key"]: item["value"] for item in sandbox.maestro.credentials[LABEL]}


def credential_writes(sandbox):
    return [r for r in sandbox.requests("maestro", method="POST",
                                        path_contains="/api/v2/credential")]


# -- against the sandbox ---------------------------------------------------------------------
def test_all_ok_on_the_default_sandbox_and_nothing_secret_printed(signed_in, tmp_path):
    sandbox = signed_in
    before = keys(sandbox)
    sandbox.requests.clear()
    run = run_process([SCRIPT, "-v", "doctor", "--label", LABEL],
                      bot_env(sandbox, **connection(sandbox)), cwd=tmp_path,
                      stdin_closed=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "VALUE", "VERDICT", "ADVICE"]
    for name, line in zip(NAMES, lines[1:], strict=True):
        assert line.startswith(name)
        assert " ok" in line and " fail" not in line and " warn" not in line, line
    # the probe is gone, every other key is as it was
    assert keys(sandbox) == before
    # the two probes added (as bots add claims and renewals), one removal; Microsoft got no
    # grant, issued no token
    writes = credential_writes(sandbox)
    assert [w.path.endswith("/key") for w in writes] == [True, True, False]
    token_posts = sandbox.token_requests()
    assert len(token_posts) == 1 and token_posts[0].form() == {}
    assert token_posts[0].status == 400
    assert len(sandbox.requests("identity", path_contains="openid-configuration")) == 1
    # no secret anywhere: client secret, Maestro key and access tokens, the token's secrets
    printed = run.stdout + run.stderr
    stored = json.loads(before["token"])
    secrets = [sandbox.app.secret, sandbox.maestro.key, *sandbox.maestro._tokens] + [
        entry["secret"] for section in ("AccessToken", "RefreshToken", "IdToken")
        for entry in stored[section].values()]
    assert len(secrets) >= 5
    for secret in secrets:
        assert secret not in printed


def test_json_says_the_same_and_the_token(signed_in, monkeypatch, capsys):
    code, checks = doctor_json(signed_in, monkeypatch, capsys)
    assert code == 0
    assert {c["verdict"] for c in checks.values()} == {"ok"}
    assert checks["maestro version"]["value"] == "3.5.0"
    assert "median of 5 reads" in checks["maestro round trip"]["value"]
    assert checks["write visible"]["value"] == "at the next read"
    assert checks["token endpoint"]["value"].startswith("HTTP 400 in ")
    assert checks["app credential"]["value"] == "client secret, expiry unknown"
    assert re.match(r"generation \d+; access token expires", checks["stored token"]["value"])
    assert doctor.PROBE_KEY not in keys(signed_in)


def test_a_key_that_may_only_read_fails_the_write_check(signed_in, monkeypatch, capsys):
    sandbox = signed_in
    before = keys(sandbox)
    code, checks = doctor_json(sandbox, monkeypatch, capsys,
                               key=sandbox.maestro.reader_key())
    assert code == 1
    write = checks["maestro write"]
    assert write["verdict"] == "fail" and write["value"] == "refused (HTTP 403)"
    assert write["advice"].startswith(f"this login cannot write credential '{LABEL}': the "
                                      "plugin cannot store renewed tokens")
    assert checks["write visible"]["verdict"] == checks["probe removed"]["verdict"] == "skipped"
    assert checks["key order"]["verdict"] == "skipped"
    assert [n for n, c in checks.items() if c["verdict"] == "fail"] == ["maestro write"]
    assert keys(sandbox) == before
    assert [r.status for r in credential_writes(sandbox)] == [403]


@pytest.mark.parametrize(("offset", "verdict"), [(400, "fail"), (-100, "warn")])
def test_a_skewed_clock(signed_in, monkeypatch, capsys, offset, verdict):
    signed_in.skew_clock(offset)
    code, checks = doctor_json(signed_in, monkeypatch, capsys)
    skew = checks["clock skew"]
    assert skew["verdict"] == verdict
    # this machine against Microsoft's Date (whole seconds): the opposite of the offset
    assert -offset - 2 <= skew["measured"] <= -offset + 2
    assert ("behind" if offset > 0 else "ahead of") in skew["value"]
    assert "synchronize this machine's clock" in skew["advice"]
    assert code == (1 if verdict == "fail" else 0)
    assert [n for n, c in checks.items() if c["verdict"] not in ("ok",)] == ["clock skew"]


def test_maestro_2_9_fails_the_version_check_and_writes_nothing(signed_in, monkeypatch,
                                                                capsys):
    signed_in.maestro.version = "2.9.0"
    before = keys(signed_in)
    code, checks = doctor_json(signed_in, monkeypatch, capsys)
    assert code == 1
    version = checks["maestro version"]
    assert version["verdict"] == "fail" and version["value"] == "2.9.0"
    assert "upgrade Maestro" in version["advice"] and "3.0.0" in version["advice"]
    assert checks["maestro write"]["verdict"] == "skipped"
    assert credential_writes(signed_in) == []
    assert keys(signed_in) == before
    assert [n for n, c in checks.items() if c["verdict"] == "fail"] == ["maestro version"]


@pytest.mark.parametrize(("days", "verdict"), [(-1, "fail"), (10, "warn"), (200, "ok")])
def test_the_certificate_expiry(signed_in, monkeypatch, capsys, days, verdict):
    sandbox = signed_in
    made = sandbox.add_certificate(days=days)
    sandbox.maestro.credentials[LABEL] = [
        item for item in sandbox.maestro.credentials[LABEL] if item["key"] != "client_secret"]
    sandbox.put_app_certificate(LABEL, made.pem)
    code, checks = doctor_json(sandbox, monkeypatch, capsys)
    app = checks["app credential"]
    assert app["verdict"] == verdict
    assert app["value"].startswith(f"certificate {made.thumbprint}, expires ")
    if verdict == "fail":
        assert app["advice"].startswith("the certificate has expired: make a new one")
    assert code == (1 if verdict == "fail" else 0)
    printed = json.dumps(checks)
    assert "PRIVATE KEY" not in printed and made.key_pem not in printed


def test_no_token_stored_fails_and_says_how_to_sign_in(sandbox, monkeypatch, capsys):
    sandbox.put_app_credentials(LABEL)
    code, checks = doctor_json(sandbox, monkeypatch, capsys)
    assert code == 1
    token = checks["stored token"]
    assert token["verdict"] == "fail" and token["value"] == "none"
    assert f"'botcity-ms365 login --label {LABEL}'" in token["advice"]
    assert [n for n, c in checks.items() if c["verdict"] == "fail"] == ["stored token"]
    assert doctor.PROBE_KEY not in keys(sandbox)


def test_without_a_maestro_connection_it_is_a_usage_error(sandbox, capsys):
    assert cli.main(["doctor", "--label", LABEL]) == cli.EXIT_USAGE
    assert "doctor checks a Maestro credential" in capsys.readouterr().err


# -- a write that shows late (a fake Maestro: reads lag behind writes) -----------------------
class LaggingVault:
    """A vault whose reads show a write only ``lag`` reads after it (None: never)."""

    server = "https://maestro.example"
    version = "3.5.0"

    def __init__(self, lag: int | None) -> None:
        self.lag = lag
        self.values = {"client_id": "app", "token": "{}"}
        self.shown = dict(self.values)
        self.pending = 0
        self.reads = self.writes = 0

    def read(self, label, *, max_age=None):
        self.reads += 1
        if self.lag is not None:
            if self.pending <= 0:
                self.shown = dict(self.values)
            self.pending -= 1
        return dict(self.shown)

    def add(self, label, key, value):
        self.writes += 1
        self.values[key] = value
        self.pending = self.lag or 0

    def remove(self, label, key, also=None):
        self.writes += 1
        for name in [k for k in self.values if k == key or also is not None and also(k)]:
            del self.values[name]
        self.pending = 0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def probe(vault):
    clock = FakeTime()
    checks = doctor.write_probe(vault, LABEL, timer=clock, sleep=clock.sleep)
    return {c.name: c for c in checks}, clock


def test_a_write_seen_at_once_is_ok():
    vault = LaggingVault(lag=0)
    checks, clock = probe(vault)
    assert checks["write visible"].verdict == "ok"
    assert checks["write visible"].value == "at the next read"
    assert checks["key order"].verdict == "ok"
    assert (vault.writes, clock.sleeps) == (3, 0), "two keys added, one removal"


def test_a_write_seen_late_is_a_warning_with_the_delay():
    vault = LaggingVault(lag=3)
    checks, clock = probe(vault)
    visible = checks["write visible"]
    assert visible.verdict == "warn"
    assert visible.measured == pytest.approx(3 * doctor.READ_SPACING)
    assert visible.value == f"after {visible.measured * 1000:.0f} ms (4 reads)"
    assert "may renew again" in visible.advice
    assert checks["probe removed"].verdict == "ok"
    assert not [k for k in vault.values if k.startswith("doctor-probe")]
    assert vault.values["client_id"] == "app"


def test_a_write_never_seen_fails_within_the_bound():
    vault = LaggingVault(lag=None)
    checks, clock = probe(vault)
    visible = checks["write visible"]
    assert visible.verdict == "fail"
    reads = int(doctor.VISIBLE_WITHIN / doctor.READ_SPACING) + 1
    assert visible.value == f"not after {doctor.VISIBLE_WITHIN:g} s ({reads} reads)"
    assert clock.now <= doctor.VISIBLE_WITHIN


def test_a_removal_that_fails_names_the_key_to_remove():
    vault = LaggingVault(lag=0)

    def refuse(label, key, also=None):
        raise StoreError("Could not remove a key of credential 'ms365'.")

    vault.remove = refuse  # type: ignore[method-assign]
    checks, _ = probe(vault)
    removed = checks["probe removed"]
    assert removed.verdict == "fail"
    assert ("remove keys 'doctor-probe' and 'doctor-probe-2' of credential 'ms365' in "
            "Maestro") in removed.advice


# -- each check's thresholds -----------------------------------------------------------------
@pytest.mark.parametrize(("skew", "verdict"), [
    (0, "ok"), (59, "ok"), (-59, "ok"), (61, "warn"), (-299, "warn"), (301, "fail"),
    (-301, "fail")])
def test_clock_skew_thresholds(skew, verdict):
    server = 1_800_000_000
    date = email.utils.formatdate(server, usegmt=True)
    check = doctor.clock_skew(date, server + skew)
    assert (check.verdict, check.measured) == (verdict, skew)


def test_clock_skew_without_a_date_header_is_a_warning():
    assert doctor.clock_skew(None, 0).verdict == "warn"


@pytest.mark.parametrize(("version", "verdict"), [
    ("2.9.0", "fail"), ("2.99.1", "fail"), ("3.0.0", "ok"), ("3.5.0", "ok"), (None, "fail")])
def test_maestro_version_threshold(version, verdict):
    assert doctor.maestro_version(version, "https://m").verdict == verdict


def test_round_trip_is_the_median_and_a_slow_one_warns():
    times = iter([0, 0.1, 1, 3, 3, 3.2, 4, 5.5, 6, 7.5])  # reads of 0.1, 2, 0.2, 1.5, 1.5 s
    check, answer = doctor.maestro_round_trip(lambda: {"k": "v"}, timer=lambda: next(times))
    assert (check.verdict, check.measured, answer) == ("warn", 1.5, {"k": "v"})


def test_a_stored_token_that_is_not_json_fails_without_quoting_it():
    check = doctor.stored_token("not-json secret-ish", "Maestro credential 'ms365' key "
                                "'token'", 0, label=LABEL)
    assert check.verdict == "fail" and check.value == "unreadable"
    assert "secret-ish" not in check.advice and "not valid JSON" in check.advice


# -- the sandbox's controls -------------------------------------------------------------------
def test_a_reader_key_reads_but_its_writes_get_403(sandbox):
    sandbox.put_app_credentials(LABEL)
    before = keys(sandbox)
    vault = MaestroVault(connect(sandbox.maestro_url, sandbox.maestro.login,
                                 sandbox.maestro.reader_key()))
    assert vault.read(LABEL) == before
    with pytest.raises(StoreError, match="refused the access of login 'sandbox' to the "
                       "write of credential") as caught:
        vault.write(LABEL, "token", "{}")
    assert caught.value.status == 403
    assert keys(sandbox) == before
    # the workspace's own key still writes
    MaestroVault(connect(sandbox.maestro_url, sandbox.maestro.login,
                         sandbox.maestro.key)).write(LABEL, "extra", "1")
    assert keys(sandbox) == {**before, "extra": "1"}


def test_a_skewed_clock_moves_the_identity_platforms_and_graphs_date(sandbox):
    sandbox.skew_clock(400)
    for url in (f"{sandbox.authority_host}/{sandbox.tenant.tenant_id}/v2.0/.well-known/"
                "openid-configuration", f"{sandbox.graph_url}/v1.0/me"):
        answer = requests.get(url, verify=sandbox.ca_file, timeout=10)
        said = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
        assert 398 <= said - time.time() <= 401
    answer = requests.get(f"{sandbox.maestro_url}/api/v2/maestro/version",
                          verify=sandbox.ca_file, timeout=10)
    said = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
    assert abs(said - time.time()) <= 2


def test_a_write_maestro_shows_late_is_a_warning(signed_in, monkeypatch, capsys):
    if not hasattr(signed_in.maestro, "visibility_delay"):
        pytest.skip("this sandbox shows every write at once (late visibility comes with "
                    "MaestroService.visibility_delay)")
    before = keys(signed_in)
    signed_in.maestro.visibility_delay = 1.0
    code, checks = doctor_json(signed_in, monkeypatch, capsys)
    visible = checks["write visible"]
    assert visible["verdict"] == "warn", visible
    reads = int(re.fullmatch(r"after .* \((\d+) reads\)", visible["value"]).group(1))
    assert reads >= 2
    assert checks["probe removed"]["verdict"] == "ok"
    assert code == 0
    assert keys(signed_in) == before


def test_keys_listed_out_of_the_order_added_are_a_warning():
    """Claims and renewed tokens rely on Maestro listing keys in the order they were
    added; a Maestro that sorts them otherwise is a warning (a herd may renew twice)."""
    class Sorting(LaggingVault):
        def read(self, label, *, max_age=None):
            return dict(sorted(super().read(label, max_age=max_age).items(), reverse=True))

    checks, _ = probe(Sorting(lag=0))
    assert checks["key order"].verdict == "warn"
    assert "may each renew it" in checks["key order"].advice


def test_an_earlier_run_s_probe_is_removed_first():
    vault = LaggingVault(lag=0)
    vault.values["doctor-probe-2"] = vault.shown["doctor-probe-2"] = "left by a killed run"
    checks, _ = probe(vault)
    assert checks["key order"].verdict == "ok", "the probes were added anew, in order"
    assert not [k for k in vault.values if k.startswith("doctor-probe")]
