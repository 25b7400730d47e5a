"""No call waits longer than the plugin's budgets, whatever a server does (issue 25, items
3 and 9): a ``Retry-After`` larger than what is left of ``MS365_RETRY_SECONDS`` is given up
at once, and a server that trickles its answer is cut off at ``MS365_HTTP_TIMEOUT`` (Graph,
the identity platform, Maestro). The trickling servers are small local ones here: the
sandbox has no such fault."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from botcity.plugins.ms365.credentials import (
    MS365CredentialsPlugin,
    ServiceUnavailable,
    StoreUnavailable,
)
from botcity.plugins.ms365.credentials._maestro import MaestroVault
from botcity.plugins.ms365.credentials._transport import (
    DeadlineAdapter,
    DeadlineExceeded,
    RetryingSession,
)
from botcity.plugins.ms365.credentials.persistence import MaestroText

LABEL = "ms365"
#: Seconds between two bytes of a trickling answer: shorter than any socket timeout here,
#: so only a bound on the whole request can end the call.
PACE = 0.25
BODY = b'{"value": "' + b"x" * 60 + b'"}'


class Trickle:
    """A server that answers each request with a 200 whose body (and, with ``head``, its
    status line and headers too) comes one byte every :data:`PACE` seconds. ``sent`` is
    how many bytes of the answer went out; ``cut`` is set when the client hung up before
    the end."""

    def __init__(self, context=None, *, head: bool = False) -> None:
        self.context, self.head = context, head
        self.sent = 0
        self.cut = threading.Event()
        self.answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(BODY))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self.port = self._listener.getsockname()[1]
        scheme = "https" if context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            if not self.head:
                conn.sendall(self.answer)
            slow = (self.answer if self.head else b"") + BODY
            for i in range(len(slow)):
                if self._stop.is_set():
                    return
                conn.sendall(slow[i:i + 1])
                self.sent += 1
                time.sleep(PACE)
        except OSError:
            self.cut.set()
        finally:
            conn.close()

    @property
    def total(self) -> int:
        return len(BODY) + (len(self.answer) if self.head else 0)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    yield server
    server.close()


def cut_off(server: Trickle) -> None:
    """The client hung up before the answer's end (the server notices within a send or
    two)."""
    assert server.cut.wait(10), "the client hung up"
    assert server.sent < server.total, "the answer was not read to its end"


def authorized(sandbox, maestro) -> MS365CredentialsPlugin:
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(["basic"], consent=sandbox.consent_redirect)
    return plugin


# -- 9. a server that trickles ----------------------------------------------------------


@pytest.mark.parametrize("head", [False, True], ids=["body", "headers"])
def test_the_deadline_adapter_cuts_a_trickling_answer(head):
    server = Trickle(head=head)
    try:
        with requests.Session() as session:
            session.mount("http://", DeadlineAdapter(1.0))
            with pytest.raises(DeadlineExceeded, match="took longer than 1 s"):
                session.get(server.url + "/slow", timeout=5)
        cut_off(server)
    finally:
        server.close()


def test_a_trickling_graph_answer_is_service_unavailable(sandbox, maestro, trickle,
                                                         monkeypatch):
    monkeypatch.setenv("MS365_HTTP_TIMEOUT", "1")
    plugin = authorized(sandbox, maestro)

    with pytest.raises(ServiceUnavailable, match="DeadlineExceeded"):
        plugin.ms365_account.con.get(trickle.url + "/v1.0/me")
    cut_off(trickle)


def test_a_trickling_identity_platform_is_service_unavailable(sandbox, monkeypatch):
    server = Trickle(sandbox.tls.server_context())  # trusted as the sandbox is
    try:
        monkeypatch.setenv("MS365_HTTP_TIMEOUT", "1")
        monkeypatch.setenv("MS365_RETRY_SECONDS", "0")
        plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                        tenant_id=sandbox.tenant.tenant_id,
                                        authority_host=server.url)

        with pytest.raises(ServiceUnavailable, match="DeadlineExceeded"):
            plugin.ms365_account.con.msal_client  # noqa: B018 - msal's discovery
        cut_off(server)
    finally:
        server.close()


def test_msal_s_session_is_bounded_as_a_whole(trickle):
    session = RetryingSession(budget=0, timeout=1)
    with pytest.raises(DeadlineExceeded):
        session.get(trickle.url + "/tenant/v2.0/.well-known/openid-configuration")
    assert session.gave_up == "DeadlineExceeded"
    cut_off(trickle)


def test_a_trickling_maestro_is_store_unavailable(sandbox, trickle, monkeypatch):
    from botcity.maestro import BotMaestroSDK

    monkeypatch.setenv("MS365_HTTP_TIMEOUT", "1")
    sdk = BotMaestroSDK()
    sdk.server, sdk.access_token, sdk._version = trickle.url, "a token", "3.5.0"

    with pytest.raises(StoreUnavailable, match="did not finish answering the read of "
                       "credential 'ms365' within 1 s"):
        MaestroText(MaestroVault(sdk), LABEL).load()
    cut_off(trickle)


def test_the_maestro_sdk_still_makes_its_requests_through_its_requests_module():
    # the seam: the SDK has no session; its module's ``requests`` is replaced by one that
    # bounds the plugin's calls (and only those)
    from botcity.maestro import sdk

    source = inspect.getsource(sdk.BotMaestroSDK._get_credential_by_label)
    assert "requests.get(" in source
    assert "requests.post(" in inspect.getsource(sdk.BotMaestroSDK._edit_credential_by_label)
    assert hasattr(sdk, "requests")


def test_the_bots_own_maestro_calls_are_not_bounded(sandbox, maestro, monkeypatch):
    from botcity.maestro import sdk

    from botcity.plugins.ms365.credentials import _transport

    monkeypatch.setenv("MS365_HTTP_TIMEOUT", "1")
    sandbox.put_app_credentials(LABEL)
    MaestroVault(maestro).read(LABEL)  # installs the seam
    made: list[float] = []
    monkeypatch.setattr(_transport, "DeadlineAdapter",
                        lambda total: made.append(total) or requests.adapters.HTTPAdapter())

    maestro.get_credential(LABEL, "client_id")  # the bot's own call
    assert made == []
    MaestroVault(maestro).read(LABEL)
    assert made == [1.0]
    assert isinstance(sdk.requests.HTTPError(), requests.HTTPError)


# -- 3. Retry-After larger than the budget -----------------------------------------------


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Every time.sleep asked for (it does not sleep more than 50 ms, so a wrong wait shows
    as a number here, not as a test that hangs)."""
    asked: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real(min(seconds, 0.05))

    monkeypatch.setattr(time, "sleep", sleep)
    return asked


def test_graph_retry_after_beyond_the_budget_gives_up_at_once(sandbox, maestro, sleeps,
                                                              monkeypatch):
    monkeypatch.setenv("MS365_RETRY_SECONDS", "60")
    plugin = authorized(sandbox, maestro)
    sandbox.graph.fail_next(503, retry_after=3600, path_contains="/me", times=5)
    sandbox.requests.clear()

    with pytest.raises(ServiceUnavailable) as caught:
        plugin.ms365_account.get_current_user_data()

    assert "HTTP 503" in str(caught.value) and "Retry-After 3600 s" in str(caught.value)
    assert "MS365_RETRY_SECONDS" in str(caught.value)
    assert len(sandbox.requests("graph", path_contains="/me")) == 1, "no retry"
    assert not [s for s in sleeps if s > 1], "no long wait"


def test_graph_retry_after_within_the_budget_is_waited_for(sandbox, maestro, sleeps):
    plugin = authorized(sandbox, maestro)
    sandbox.graph.fail_next(429, retry_after=2, path_contains="/me")
    sandbox.requests.clear()

    assert plugin.ms365_account.get_current_user_data().user_principal_name
    assert len(sandbox.requests("graph", path_contains="/me")) == 2
    assert 2 in sleeps


def test_identity_retry_after_beyond_the_budget_gives_up_at_once(sandbox, maestro, sleeps):
    plugin = authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.identity.fail_next(429, retry_after=3600, path_contains="/token", times=5)
    sandbox.requests.clear()

    with pytest.raises(ServiceUnavailable) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL
                               ).ms365_account.get_current_user_data()

    assert "HTTP 429" in str(caught.value) and "Retry-After 3600 s" in str(caught.value)
    assert len(sandbox.token_requests()) == 1, "no retry"
    assert not [s for s in sleeps if s > 1], "no long wait"
    del plugin
