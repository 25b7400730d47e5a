"""The sandbox at a network's distance (issue 23): a delaying proxy in front of each
server, every address given out pointing through it, and a Maestro that is slow, late to
show a write and whose login tokens expire. No wall-time upper bound is asserted anywhere:
only that delays are at least what was asked, within the ranges asked, and counts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from botcity.maestro import BotMaestroSDK

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
from botcity.plugins.ms365.sandbox import Sandbox
from botcity.plugins.ms365.sandbox.distance import DelayProxy
from conftest import DEADLINE, run_process, script

pytest_plugins = ["pytester"]

#: A Runner's bot: the plugin on the Maestro store, as ``botcity-ms365`` users write it.
RUNNER_BOT = """
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

maestro = BotMaestroSDK.from_sys_args()
service = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
print(service.ms365_account.get_current_user_data().user_principal_name)
"""


def port(url: str) -> int:
    return int(urlsplit(url).port or 0)


def proxied_ports(sbx: Sandbox) -> dict[str, int]:
    return {name: proxy.port for name, proxy in sbx.proxies.items()}


# -- the proxy ---------------------------------------------------------------------------
@pytest.fixture
def echo_server() -> object:
    """A TCP server on 127.0.0.1 that sends back what it gets, with when it got it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    got: list[tuple[float, bytes]] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(DEADLINE)
            while data := conn.recv(65536):
                got.append((time.monotonic(), data))
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname(), got
    listener.close()
    thread.join(timeout=5)


def test_the_proxy_holds_each_chunk_half_a_round_trip_each_way_in_order(echo_server):
    address, got = echo_server
    with DelayProxy(address, 0.2, name="echo") as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE) as client:
            connected = time.monotonic()
            sent, answered = [], []
            for part in (b"one ", b"two "):  # one at a time: each its own chunk
                sent.append(time.monotonic())
                client.sendall(part)
                assert client.recv(65536) == part
                answered.append(time.monotonic())
            for part in (b"th", b"r", b"ee"):  # in a row: they stay in order
                client.sendall(part)
                time.sleep(0.01)
            back = b""
            while len(back) < len(b"three"):
                back += client.recv(65536)
    assert back == b"three"
    assert b"".join(data for _, data in got) == b"one two three"
    # the first chunk waited for the handshake (a round trip after connecting) and half
    # a round trip more; every chunk half a round trip each way
    assert got[0][0] - connected >= 0.3 - 0.01
    for (arrived, _), left, back_at in zip(got[:2], sent, answered, strict=True):
        assert arrived - left >= 0.1 - 0.01
        assert back_at - arrived >= 0.1 - 0.01
    assert proxy.connections == 1


def test_the_proxy_refuses_a_round_trip_out_of_bounds():
    with pytest.raises(ValueError):
        DelayProxy(("127.0.0.1", 1), 60)
    with pytest.raises(ValueError):
        DelayProxy(("127.0.0.1", 1), -0.1)
    with pytest.raises(ValueError, match="knows"):
        Sandbox(round_trip={"graphs": 0.1})


def test_a_request_through_the_proxy_reaches_the_server_late_and_threads_end():
    before = {t.ident for t in threading.enumerate()}
    with Sandbox(round_trip={"maestro": 0.2, "microsoft": 0.1}) as sbx:
        sent = time.time()
        answer = requests.get(f"{sbx.maestro_url}/api/v2/maestro/version", timeout=DEADLINE)
        assert answer.json() == {"version": "3.5.0"}
        [request] = sbx.requests("maestro")
        # TCP handshake (one round trip) then the request (half of one): 0.3 s at least
        assert request.at - sent >= 0.3 - 0.01
        assert sbx.proxies["maestro"].connections == 1
        # HTTPS: TCP, then the TLS handshake's round trip, then the request
        sent = time.time()
        requests.get(f"{sbx.graph_url}/v1.0/me", verify=sbx.ca_file, timeout=DEADLINE)
        [graph] = sbx.requests("graph")
        assert graph.at - sent >= 0.25 - 0.01
        assert graph.status == 401  # no token: Graph answered, through the proxy
    left = [t.name for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("sandbox-")]
    assert left == []


# -- every address points through it -------------------------------------------------------
def test_every_address_the_sandbox_gives_out_goes_through_the_proxies(tmp_path):
    with Sandbox(round_trip={"maestro": 0.04, "microsoft": 0.02}) as sbx:
        ports = proxied_ports(sbx)
        direct = {name: service.port for name, service in sbx._services().items()}
        assert set(ports) == {"identity", "graph", "maestro"}
        assert not set(ports.values()) & set(direct.values())
        env = sbx.bot_env()
        assert port(env["MS365_AUTHORITY_HOST"]) == ports["identity"]
        assert port(env["MS365_GRAPH_URL"]) == ports["graph"]
        assert port(env["BOTCITY_SERVER"]) == port(sbx.maestro_url) == ports["maestro"]
        task_id, token = sbx.maestro.start_task()
        assert port(sbx.maestro.runner_argv(task_id, token)[0]) == ports["maestro"]
        tenant = sbx.tenant.tenant_id
        config = requests.get(
            f"{sbx.authority_host}/{tenant}/v2.0/.well-known/openid-configuration",
            verify=sbx.ca_file, timeout=DEADLINE).json()
        for field in ("issuer", "authorization_endpoint", "token_endpoint",
                      "device_authorization_endpoint", "end_session_endpoint"):
            assert port(config[field]) == ports["identity"], field
        public = sbx.tenant.register_app(public_client_flows=True)
        code = requests.post(f"{sbx.authority_host}/{tenant}/oauth2/v2.0/devicecode",
                             data={"client_id": public.client_id, "scope": "User.Read"},
                             verify=sbx.ca_file, timeout=DEADLINE).json()
        assert port(code["verification_uri"]) == ports["identity"]
        error = requests.post(f"{sbx.authority_host}/{tenant}/oauth2/v2.0/token",
                              data={"client_id": "nobody", "grant_type": "client_credentials"},
                              verify=sbx.ca_file, timeout=DEADLINE).json()
        assert port(error["error_uri"]) == ports["identity"]
        # every request above came through a proxy: each service saw it, none directly
        assert sbx.proxies["identity"].connections == len(sbx.requests("identity")) == 3


def test_the_fixture_env_points_through_the_proxies(tmp_path):
    from botcity.plugins.ms365.sandbox import MS365Sandbox

    with Sandbox(round_trip={"maestro": 0.04, "microsoft": 0.02}) as sbx:
        box = MS365Sandbox(sbx, tmp_path)
        ports = proxied_ports(sbx)
        assert port(box.env["BOTCITY_SERVER"]) == port(box.maestro_server) == ports["maestro"]
        assert port(box.env["MS365_AUTHORITY_HOST"]) == ports["identity"]
        assert port(box.runner_argv()[0]) == ports["maestro"]


def test_a_runner_start_through_the_proxies_warm_and_cold(tmp_path):
    """The real O365, msal and Maestro SDK through the proxies: a warm start, then a
    start on an expired token (a token request), each one successful Graph call."""
    with Sandbox(round_trip={"maestro": 0.04, "microsoft": 0.02}, maestro_tls=True) as sbx:
        assert sbx.maestro_url.startswith("https://")
        sbx.authorize("ms365", ["basic"])
        bot = script(tmp_path / "bot.py", RUNNER_BOT)
        env = sbx.process_env(MS365_FALLBACK_DIR=str(tmp_path / "fallback"))
        for cold in (False, True):
            if cold:
                sbx.force_expiry()
            sbx.requests.clear()
            before = {name: proxy.connections for name, proxy in sbx.proxies.items()}
            task_id, token = sbx.maestro.start_task()
            run = run_process([*bot, *sbx.maestro.runner_argv(task_id, token)], env)
            assert run.returncode == 0, run.stderr[-2000:]
            assert run.stdout.strip() == sbx.tenant.user.upn
            assert [r.status for r in sbx.requests("graph")] == [200]
            assert len(sbx.token_requests("refresh_token")) == (1 if cold else 0)
            opened = {name: proxy.connections - before[name]
                      for name, proxy in sbx.proxies.items()}
            # one connection per request (the sandbox answers one per connection)
            assert opened["maestro"] == len(sbx.requests("maestro"))
            assert opened["graph"] == 1
            assert opened["identity"] == len(sbx.requests("identity")) == (1 if cold else 0)


# -- Maestro: latency, late visibility, expiring tokens -------------------------------------
def test_maestro_latency_is_drawn_in_its_range_for_reads_and_writes():
    with Sandbox(maestro_latency=(0.01, 0.03), maestro_write_latency=(0.05, 0.08)) as sbx:
        sbx.maestro.random.seed(23)
        sbx.put_app_credentials("ms365")
        sdk = sbx.maestro_sdk()  # a write: the login
        for n in range(6):
            sdk.get_credential("ms365", "client_id")
            sdk.update_credential("ms365", "tenant_id", f"t{n}")  # a read and a write
        reads = sbx.requests("maestro", method="GET", path_contains="/credential")
        writes = sbx.requests("maestro", method="POST")
        assert len(reads) == 12 and len(writes) == 7
        assert all(0.01 <= r.delay <= 0.03 for r in reads)
        assert all(0.05 <= r.delay <= 0.08 for r in writes)
        assert len({round(r.delay, 6) for r in reads}) > 1  # jitter, not one value
        sbx.maestro.set_latency(None)
        sdk.get_credential("ms365", "client_id")
        assert sbx.requests("maestro")[-1].delay == 0.0
    with pytest.raises(ValueError):
        Sandbox(maestro_latency=(0.3, 0.1))


def test_a_write_takes_effect_only_after_its_latency():
    with Sandbox(maestro_write_latency=(1.0, 1.0)) as sbx:
        sbx.maestro.put_secret("ms365", "token", "old")
        sdk = sbx.maestro_sdk()
        writer = threading.Thread(target=sdk.update_credential, args=("ms365", "token", "new"))
        writer.start()
        deadline = time.monotonic() + DEADLINE
        while not sbx.requests("maestro", method="POST", path_contains="/credential/"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the write has reached the server, which has not applied it yet
        assert sbx.maestro.secret("ms365", "token") == "old"
        writer.join(timeout=DEADLINE)
        assert sbx.maestro.secret("ms365", "token") == "new"


def test_a_write_is_seen_by_reads_only_after_the_visibility_delay():
    with Sandbox(maestro_visibility_delay=1.0) as sbx:
        sbx.maestro.put_secret("ms365", "token", "old")
        sdk = sbx.maestro_sdk()
        written = time.time()
        sdk.update_credential("ms365", "token", "new")  # answered at once
        assert sbx.requests("maestro", method="POST")[-1].status == 200
        assert sdk.get_credential("ms365", "token") == "old"
        assert sdk._get_credential_by_label("ms365")["secrets"][0]["value"] == "old"
        deadline = time.monotonic() + DEADLINE
        while (value := sdk.get_credential("ms365", "token")) == "old":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert value == "new"
        first_new = sbx.requests("maestro", method="GET")[-1]
        assert first_new.at - written >= 1.0 - 0.01
        # a new label is absent to reads until it shows
        sdk.create_credential("other", "k", "v")
        assert sdk._get_credential_by_label("other") is None


def test_expired_login_and_runner_tokens_get_401():
    with Sandbox(maestro_token_lifetime=0.5) as sbx:
        sbx.put_app_credentials("ms365")
        sdk = sbx.maestro_sdk()
        task_id, token = sbx.maestro.start_task()
        runner = BotMaestroSDK(sbx.maestro_url)
        runner.access_token, runner.organization = token, sbx.maestro.login
        runner._define_implementation()
        assert sdk.get_credential("ms365", "client_id") == sbx.app.client_id
        assert runner.get_credential("ms365", "client_id") == sbx.app.client_id
        time.sleep(0.6)
        for client in (sdk, runner):
            with pytest.raises(ValueError, match="401"):
                client.get_credential("ms365", "client_id")
        # the SDK neither logs in again nor retries: one request each, both 401
        assert [r.status for r in sbx.requests("maestro")[-2:]] == [401, 401]
        sdk.login()  # a new login's token is good again, for its own lifetime
        assert sdk.get_credential("ms365", "client_id") == sbx.app.client_id
        sbx.maestro.expire_tokens()
        with pytest.raises(ValueError, match="401"):
            sdk.get_credential("ms365", "client_id")


def test_a_runner_bot_whose_maestro_token_expired_fails_at_its_first_read(tmp_path):
    """What a lapsed Runner token costs the plugin: the bot's first credential read gets
    401 and the bot stops with StoreError; the SDK does not log in again (a Runner's bot
    has no key to) and does not retry."""
    with Sandbox() as sbx:
        sbx.authorize("ms365", ["basic"])
        bot = script(tmp_path / "bot.py", RUNNER_BOT)
        task_id, token = sbx.maestro.start_task()
        sbx.maestro.expire_tokens()
        sbx.requests.clear()
        run = run_process([*bot, *sbx.maestro.runner_argv(task_id, token)],
                          sbx.process_env(MS365_FALLBACK_DIR=str(tmp_path / "fallback")))
        assert run.returncode != 0
        assert "StoreError" in run.stderr and "refused the token of task" in run.stderr
        assert [(r.path.rsplit("/", 1)[-1], r.status) for r in sbx.requests("maestro")] == [
            ("version", 200), ("ms365", 401)]
        assert sbx.requests("identity") == sbx.requests("graph") == []


def test_a_maestro_token_expiring_during_a_run_costs_the_renewal_its_save(tmp_path,
                                                                         monkeypatch):
    """The login token lapses while the bot runs; its access token then comes due: the
    renewal goes on (one token request), Maestro refuses the claim and the save, and the
    renewed token is kept on the machine for the next start."""
    monkeypatch.setenv("MS365_FALLBACK_DIR", str(tmp_path / "fallback"))
    with Sandbox() as sbx:
        for key, value in sbx.client_env().items():
            monkeypatch.setenv(key, value)
        sbx.authorize("ms365", ["basic"])
        plugin = MS365CredentialsPlugin(maestro=sbx.maestro_sdk(), credential_label="ms365")
        plugin.ms365_account.get_current_user_data()
        sbx.maestro.expire_tokens()
        sbx.force_expiry()
        sbx.requests.clear()
        assert plugin.ms365_account.get_current_user_data().user_principal_name
        maestro = sbx.requests("maestro")
        assert maestro and all(r.status == 401 for r in maestro)
        assert len(sbx.token_requests("refresh_token")) == 1
        kept = list(Path(tmp_path / "fallback").glob("*.json"))
        assert len(kept) == 1


def test_the_marker_sets_the_fixture_up_at_a_distance(pytester):
    pytester.makepyfile(test_far="""
        import pytest
        from urllib.parse import urlsplit

        @pytest.mark.ms365_sandbox(round_trip={"maestro": 0.04}, maestro_latency=(0.01, 0.02))
        def test_far(ms365_sandbox):
            sbx = ms365_sandbox.sandbox
            assert urlsplit(ms365_sandbox.env["BOTCITY_SERVER"]).port == sbx.proxies["maestro"].port
            assert sbx.maestro.read_latency == (0.01, 0.02)
            ms365_sandbox.set_maestro_latency((0.0, 0.01), (0.02, 0.03))
            assert sbx.maestro.write_latency == (0.02, 0.03)
            ms365_sandbox.delay_maestro_visibility(2)
            ms365_sandbox.expire_maestro_tokens(after=30)
            assert (sbx.maestro.visibility_delay, sbx.maestro.token_lifetime) == (2.0, 30.0)

        def test_near(ms365_sandbox):
            assert ms365_sandbox.sandbox.proxies == {}
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)
