"""The plugin's HTTP: every request bounded as a whole, every wait out of one budget.

- :class:`DeadlineAdapter`: a ``requests`` adapter that bounds each request as a whole
  (``total`` seconds, ``MS365_HTTP_TIMEOUT``). ``requests``' own timeout applies to each
  socket operation, so a server that sends a byte every few seconds would keep a call
  going for ever; here a watchdog shuts the socket down when the deadline passes, and the
  call raises :class:`DeadlineExceeded` (a ``requests.Timeout``). A request with
  ``stream=True`` (a download) is bounded until its headers only.
- :class:`GraphAdapter`: that, for O365's Graph session (:func:`graph_adapter`), retrying
  429/5xx answers of idempotent requests and failed connections as O365's own adapter
  did, but every wait comes out of ``budget`` seconds (``MS365_RETRY_SECONDS``) per call:
  a ``Retry-After`` longer than what is left raises
  :class:`~.errors.ServiceUnavailable` at once, naming the status and the Retry-After.
- :class:`RetryingSession`: msal's ``http_client`` (a documented msal parameter) for
  Microsoft's identity platform, with the same budget and deadline. A 429 or 5xx answer,
  or a connection that fails, is retried after the ``Retry-After`` the server asked for
  or an exponential backoff with jitter, whichever is longer, until ``budget`` seconds
  have gone; then msal gets the last answer and the plugin raises ``ServiceUnavailable``
  (at once, without waiting, when the server asks for more than what is left). Retrying
  here, below msal, also keeps msal's memory of failed requests (which answers an
  identical request from cache for up to a minute) from hiding a recovered server.
- :func:`bounded`: BotCity Maestro's SDK makes its own ``requests.get``/``post`` calls
  (30 s per socket read, no retries, no waits); inside ``with bounded(seconds):`` those
  calls go through a :class:`DeadlineAdapter` (:func:`install_maestro_seam`).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as _urllib3_errors
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from ._clock import CLOCK, Clock
from .errors import ServiceUnavailable

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_BUDGET = 60.0
#: Seconds a request may wait for an answer (``MS365_HTTP_TIMEOUT`` overrides).
DEFAULT_TIMEOUT = 60.0


def retry_after(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait (``Retry-After``: seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 0.5 doubling to 8, +-20%."""
    return min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)  # noqa: S311


def _aadsts(response: requests.Response) -> str | None:
    """The AADSTS code of an error answer, if it is Azure AD's JSON."""
    try:
        data = response.json()
        codes = data.get("error_codes") if isinstance(data, dict) else None
    except ValueError:
        return None
    return f"AADSTS{codes[0]}" if isinstance(codes, list) and codes else None


# -- one deadline for a whole request ----------------------------------------------------
class DeadlineExceeded(requests.exceptions.ReadTimeout):
    """The whole request took longer than its deadline (the server kept sending, slowly)."""


class _Watch:
    """The sockets one request uses, shut down when its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._done = False
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def add(self, sock: Any) -> None:
        with self._lock:
            self._sockets.append(sock)
            late = self.fired
        if late:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shut(sock: Any) -> None:
    """Shut ``sock`` down from another thread: a read blocked on it returns at once. The
    plain socket's ``shutdown`` (an ``SSLSocket``'s own would drop its TLS state under
    the reading thread); a TLS-in-TLS transport holds its socket as ``.socket``."""
    raw = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(raw, socket.SHUT_RDWR)


_CURRENT = threading.local()


class _WatchedMixin:
    """A urllib3 connection that hands its socket to the request's watch."""

    sock: Any

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_CURRENT, "watch", None)
        if watch is not None:
            if self.sock is None:
                self.connect()  # type: ignore[attr-defined]
            watch.add(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose requests end within ``total`` seconds, answered or not: at the
    deadline the watchdog shuts the socket down and the request raises
    :class:`DeadlineExceeded`. The body is read inside the deadline (unless the caller
    streams it)."""

    def __init__(self, total: float, **kwargs: Any) -> None:
        self.total = total
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        watch = _Watch(self.total)
        outer = getattr(_CURRENT, "watch", None)
        _CURRENT.watch = watch
        watch.start()
        try:
            response = super().send(request, stream=True, timeout=timeout, verify=verify,
                                    cert=cert, proxies=proxies)
            if not stream:
                _ = response.content  # read within the deadline
        except requests.RequestException:
            if watch.fired:
                raise self._exceeded(request) from None
            raise
        finally:
            watch.finish()
            _CURRENT.watch = outer
        if watch.fired:  # the body may have ended early because of it
            response.close()
            raise self._exceeded(request)
        return response

    def _exceeded(self, request: requests.PreparedRequest) -> DeadlineExceeded:
        path = urlsplit(str(request.url)).path
        return DeadlineExceeded(
            f"{request.method} {path} took longer than {self.total:g} s in all (the "
            "server kept the answer coming too slowly; MS365_HTTP_TIMEOUT sets the "
            "bound)", request=request)


# -- Graph -------------------------------------------------------------------------------
#: What O365's adapter retried: idempotent requests only (urllib3's default methods).
RETRY_METHODS = frozenset(Retry.DEFAULT_ALLOWED_METHODS)


def _connect_failed(exc: requests.ConnectionError) -> bool:
    """Whether the request never reached the server (safe to send again)."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(exc, requests.ConnectTimeout) or isinstance(
        reason, (NewConnectionError, ConnectTimeoutError))


#: What the OS says when a connection is refused (Linux and macOS ``ECONNREFUSED``, Windows
#: ``WSAECONNREFUSED`` 10061), and when a host name has no address (glibc, macOS, Windows).
_REFUSED = ("Connection refused", "[Errno 111]", "[Errno 61]", "WinError 10061",
            "actively refused")
#: urllib3 2's (1.26 says it in the text only)
_NAME_RESOLUTION: Any = getattr(_urllib3_errors, "NameResolutionError", ())
_NO_SUCH_HOST = ("Failed to resolve", "Name or service not known", "nodename nor servname",
                 "getaddrinfo failed", "Temporary failure in name resolution",
                 "No address associated")


def connection_failure(exc: requests.ConnectionError) -> str:
    """Why a connection failed, as a user fixes it: ``"refused"`` (nothing listens at the
    address), ``"unknown-host"`` (the name does not resolve), ``"untrusted"`` (its TLS
    certificate is not trusted here) or ``"dropped"`` (anything else: reset, closed)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "untrusted"
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    text = f"{exc} {reason!r}"
    if isinstance(reason, _NAME_RESOLUTION) or any(t in text for t in _NO_SUCH_HOST):
        return "unknown-host"
    if isinstance(reason, ConnectionRefusedError) or any(t in text for t in _REFUSED):
        return "refused"
    return "dropped"


class GraphAdapter(DeadlineAdapter):
    """O365's Graph session's adapter: each request bounded as a whole (``total``), a
    429/5xx answer to an idempotent request retried up to ``retries`` times and a
    connection that could not be made as well, after the ``Retry-After`` or the
    backoff, whichever is longer, as long as the waits fit in ``budget`` seconds. A
    ``Retry-After`` longer than what is left raises :class:`ServiceUnavailable` at once;
    when a backoff no longer fits, or the retries are spent, the last answer is
    returned (O365 raises its HTTPError)."""

    def __init__(self, total: float, *, retries: int, budget: float,
                 sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(total)
        self.retries = retries
        self.budget = budget
        self.sleep = sleep

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = super().send(request, stream=stream, timeout=timeout,
                                        verify=verify, cert=cert, proxies=proxies)
            except requests.ConnectionError as exc:
                wait = _backoff(attempt)
                if (attempt > self.retries or not _connect_failed(exc)
                        or time.monotonic() - start + wait > self.budget):
                    raise
                log.warning("Microsoft Graph is unreachable (%s); retrying in %.1f s",
                            type(exc).__name__, wait)
            else:
                if (response.status_code not in RETRY_STATUSES or attempt > self.retries
                        or str(request.method).upper() not in RETRY_METHODS):
                    return response
                asked = retry_after(response)
                left = self.budget - (time.monotonic() - start)
                if asked is not None and asked > left:
                    response.close()
                    raise ServiceUnavailable(
                        f"Microsoft Graph answered HTTP {response.status_code} to "
                        f"{request.method} {urlsplit(str(request.url)).path} with "
                        f"Retry-After {asked:.0f} s, more than the {max(left, 0):.0f} s left "
                        f"of the retry budget (MS365_RETRY_SECONDS, {self.budget:g} s): "
                        "giving up without waiting. Try again later.")
                wait = max(asked or 0.0, _backoff(attempt))
                if wait > left:
                    return response
                response.close()
                log.warning("Microsoft Graph answered HTTP %d; retrying in %.1f s",
                            response.status_code, wait)
            (self.sleep or time.sleep)(wait)


def graph_adapter(*, retries: int, budget: float, timeout: float) -> GraphAdapter:
    """The adapter O365's Graph session mounts for ``http://`` and ``https://``."""
    return GraphAdapter(timeout, retries=retries, budget=budget)


# -- Maestro -----------------------------------------------------------------------------
class _BoundedRequests:
    """Stands in for the ``requests`` module in ``botcity.maestro.sdk``: inside
    :func:`bounded`, its ``get``/``post``/... go through a :class:`DeadlineAdapter`;
    anywhere else (the bot's own SDK calls: artifacts, logs) they are ``requests``'."""

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        total = getattr(_BOUND, "seconds", None)
        if total is None:
            return requests.request(method, url, **kwargs)  # noqa: S113 - the SDK passes one
        with requests.Session() as session:
            adapter = DeadlineAdapter(total)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            return session.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", url, **kwargs)


_BOUND = threading.local()
_SEAM_LOCK = threading.Lock()


def install_maestro_seam() -> None:
    """Route ``botcity.maestro.sdk``'s requests through :class:`_BoundedRequests` (once).
    The SDK calls the module-level ``requests.get``/``post`` and has no session to give
    an adapter to; outside :func:`bounded` nothing changes for it."""
    from botcity.maestro import sdk

    with _SEAM_LOCK:
        if not isinstance(sdk.requests, _BoundedRequests):
            sdk.requests = _BoundedRequests()


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Within this block, each request the Maestro SDK makes on this thread ends within
    ``seconds`` (then :class:`DeadlineExceeded`)."""
    install_maestro_seam()
    outer = getattr(_BOUND, "seconds", None)
    _BOUND.seconds = seconds
    try:
        yield
    finally:
        _BOUND.seconds = outer


# -- the identity platform ----------------------------------------------------------------
class RetryingSession(requests.Session):
    """A requests session that retries throttled and failed calls within ``budget`` s."""

    def __init__(self, budget: float = DEFAULT_BUDGET, timeout: float = DEFAULT_TIMEOUT,
                 clock: Clock = CLOCK, sleep: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.budget = budget
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        adapter = DeadlineAdapter(timeout)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        #: What the last call ended with after its retries: a status, or an error name.
        self.gave_up: str | None = None
        #: The status and AADSTS code of the last GET (msal's discovery), to tell a tenant
        #: that does not exist from an outage when msal only says ``ValueError``.
        self.last_get: tuple[int, str | None] | None = None

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        start = time.monotonic()
        self.gave_up = None
        attempt = 0
        while True:
            attempt += 1
            try:
                response = super().request(method, url, *args, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                wait = _backoff(attempt)
                if time.monotonic() - start + wait > self.budget:
                    self.gave_up = type(exc).__name__
                    raise
                log.warning("Microsoft's identity platform is unreachable (%s); retrying in "
                            "%.1f s", type(exc).__name__, wait)
            else:
                self.clock.learn(response.headers.get("Date"))
                if str(method).upper() == "GET":
                    self.last_get = (response.status_code, _aadsts(response)
                                     if response.status_code >= 400 else None)
                if response.status_code not in RETRY_STATUSES:
                    return response
                # what the server asked for, but never less than the backoff: a
                # "Retry-After: 0" must not become a hot loop
                asked = retry_after(response)
                left = self.budget - (time.monotonic() - start)
                if asked is not None and asked > left:
                    self.gave_up = (f"HTTP {response.status_code} with Retry-After "
                                    f"{asked:.0f} s")
                    raise ServiceUnavailable(
                        f"Microsoft's identity platform answered HTTP "
                        f"{response.status_code} to {str(method).upper()} "
                        f"{urlsplit(str(url)).path} with Retry-After {asked:.0f} s, more "
                        f"than the {max(left, 0):.0f} s left of the retry budget "
                        f"(MS365_RETRY_SECONDS, {self.budget:g} s): giving up without "
                        "waiting. Try again later.", code=_aadsts(response))
                wait = max(asked or 0.0, _backoff(attempt))
                if wait > left:
                    self.gave_up = f"HTTP {response.status_code}"
                    return response
                log.warning("Microsoft's identity platform answered HTTP %d; retrying in "
                            "%.1f s", response.status_code, wait)
            (self.sleep or time.sleep)(wait)
