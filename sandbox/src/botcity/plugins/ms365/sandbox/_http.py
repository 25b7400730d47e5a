"""What every sandbox server shares: a threaded HTTP(S) server on 127.0.0.1, a record of
every request it answered, and faults a test can queue (an error status, a dropped
connection, a slow answer)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

#: Longest a queued "slow answer" fault may sleep, so no test can hang on the sandbox.
MAX_FAULT_DELAY = 60.0


@dataclass
class Request:
    """One request as a sandbox server received it."""

    service: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    #: the status it was answered with (0: not answered yet, or the connection dropped)
    status: int = 0
    #: seconds the server waited before handling it (its latency: see Service.latency)
    delay: float = 0.0

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, **headers: str) -> Reply:
        return cls(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json; charset=utf-8", **headers},
        )

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Reply:
        return cls(status, text.encode(), {"Content-Type": f"{content_type}; charset=UTF-8"})

    @classmethod
    def redirect(cls, location: str) -> Reply:
        return cls(302, b"", {"Location": location})


@dataclass
class Fault:
    """A misbehaviour queued for the next matching request(s)."""

    status: int = 500
    body: Any = None
    #: answer this text as an HTML page instead of ``body`` as JSON (a proxy's error page)
    html: str | None = None
    retry_after: float | None = None
    drop: bool = False
    delay: float = 0.0
    path_contains: str = ""
    method: str = ""
    times: int = 1


Route = Callable[..., Reply]


class RequestLog:
    """Thread-safe record of every request the sandbox servers answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Request] = []

    def add(self, request: Request) -> None:
        with self._lock:
            self._items.append(request)

    def __call__(
        self, service: str | None = None, *, path_contains: str = "", method: str = ""
    ) -> list[Request]:
        with self._lock:
            items = list(self._items)
        return [
            r
            for r in items
            if (service is None or r.service == service)
            and path_contains in r.path
            and (not method or r.method == method)
        ]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Service:
    """Base of the three sandbox servers. Subclasses implement :meth:`handle`."""

    name = "service"
    #: Seconds added to the time every answer's ``Date`` header says (a server whose clock
    #: differs from this machine's: :meth:`Sandbox.skew_clock`).
    clock_offset = 0.0

    def __init__(self, log: RequestLog, tls: ssl.SSLContext | None = None) -> None:
        self._log = log
        self._tls = tls
        self._faults: deque[Fault] = deque()
        self._faults_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: The address clients are given instead of the listening one (a proxy in front of
        #: it: see :mod:`.distance`): :attr:`url`, and every address the server hands out.
        self.advertised_url: str | None = None
        self._compiled = [(m, re.compile(p), f) for m, p, f in self.routes()]

    # -- subclasses -------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Route]]:
        """``(method, path regex, function)``; named groups become keyword arguments."""
        raise NotImplementedError

    def latency(self, request: Request) -> float:
        """Seconds to wait before handling ``request`` (a subclass's setting; none here):
        the request reaches the server that much later, so a write takes effect late."""
        return 0.0

    def handle(self, request: Request) -> Reply:
        for method, pattern, function in self._compiled:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                return function(request, **args)
        return Reply.json({"message": f"no such endpoint: {request.method} {request.path}"}, 404)

    # -- test controls ----------------------------------------------------------------
    def fail_next(self, status: int = 500, **kwargs: Any) -> None:
        """Queue a fault: the next request matching ``path_contains``/``method`` gets
        ``status`` (or a dropped connection with ``drop=True``), ``times`` times."""
        fault = Fault(status=status, **kwargs)
        if fault.delay > MAX_FAULT_DELAY:
            raise ValueError(f"delay is capped at {MAX_FAULT_DELAY} s")
        with self._faults_lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, request: Request) -> Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.path_contains in request.path and (
                    not fault.method or fault.method == request.method
                ):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- lifecycle --------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    @property
    def url(self) -> str:
        """The address clients use: :attr:`advertised_url` when set, else
        :attr:`direct_url`."""
        return self.advertised_url or self.direct_url

    @property
    def direct_url(self) -> str:
        """The address this server listens on."""
        if self._server is None:
            raise RuntimeError(f"the sandbox {self.name} server is not running")
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"the sandbox {self.name} server is not running")
        return int(self._server.server_address[1])

    def start(self, port: int = 0) -> None:
        service = self
        tls = self._tls

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            # a real server's backlog: dozens of bots connect at the same moment
            request_queue_size = 128

            def process_request(self, request: Any, client_address: Any) -> None:
                # as ThreadingMixIn does, with a name that says whose thread it is (a test
                # checks that none outlives the sandbox); one request per connection
                # (HTTP/1.0), so a thread ends with its answer
                thread = threading.Thread(target=self.process_request_thread,
                                          args=(request, client_address),
                                          name=f"sandbox-{service.name}-request", daemon=True)
                thread.start()

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake happens here, in the request's own thread, so a client
                # that connects and says nothing cannot stall the whole server.
                if tls is None:
                    super().finish_request(request, client_address)
                    return
                request.settimeout(10)
                try:
                    wrapped = tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    super().finish_request(wrapped, client_address)
                finally:
                    wrapped.close()

        class Handler(BaseHTTPRequestHandler):
            server_version = "botcity-ms365-sandbox"
            timeout = 30

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # requests are in the RequestLog; keep test output quiet

            def date_time_string(self, timestamp: float | None = None) -> str:
                # the Date header, by the service's clock
                now = time.time() if timestamp is None else timestamp
                return super().date_time_string(now + service.clock_offset)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    service=service.name,
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
                service._log.add(request)
                request.delay = min(max(0.0, service.latency(request)), MAX_FAULT_DELAY)
                if request.delay:
                    time.sleep(request.delay)
                fault = service._take_fault(request)
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.drop:
                        self.close_connection = True
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
                    if fault.status and fault.html is not None:
                        self._send(Reply.text(fault.html, fault.status, "text/html"), request)
                        return
                    if fault.status:
                        body_data = fault.body if fault.body is not None else {
                            "message": f"sandbox fault {fault.status}"
                        }
                        headers = {}
                        if fault.retry_after is not None:
                            headers["Retry-After"] = str(fault.retry_after)
                        self._send(Reply.json(body_data, fault.status, **headers), request)
                        return
                try:
                    reply = service.handle(request)
                except Exception as exc:  # a sandbox bug must show, not hang the client
                    reply = Reply.json({"message": f"sandbox error: {exc!r}"}, 500)
                self._send(reply, request)

            def _send(self, reply: Reply, request: Request) -> None:
                request.status = reply.status
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.name}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: the listening port is closed and the serving thread has ended."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.advertised_url = None

