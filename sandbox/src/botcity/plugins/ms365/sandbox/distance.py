"""A delaying TCP proxy: a sandbox server as far away as a real one.

On loopback every request is instant, so what a network costs a bot (a round trip per
TCP handshake, per TLS handshake, per request) never shows. :class:`DelayProxy` sits in
front of one sandbox server on 127.0.0.1 and forwards raw TCP (TLS stays end to end,
between the client and the server), holding every chunk half a round trip in each
direction, in order. A new connection also pays the TCP handshake: nothing the client
sends is forwarded before one round trip after it connected, as a client over a network
cannot send before the server's SYN-ACK is back. So an HTTPS request on a new connection
costs three round trips (TCP, TLS 1.3, the request), as it does over a network.

Imports nothing of the plugin (the sandbox's servers never do).
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time

__all__ = ["MAX_ROUND_TRIP", "DelayProxy"]

#: The longest round trip a proxy accepts (seconds): no test can hang on a typo.
MAX_ROUND_TRIP = 5.0
#: How often the proxy's threads look whether they must stop (seconds).
_POLL = 0.05
#: Longest a blocked send waits for its peer before the connection is dropped (seconds).
_SEND_TIMEOUT = 30.0


class DelayProxy:
    """Listen on 127.0.0.1 (an ephemeral port) and forward each connection to
    ``target`` (host, port), ``round_trip / 2`` seconds later each way.

    ``handshake``: hold what a new connection's client sends until one round trip after
    it connected (the TCP handshake a network would cost). :attr:`connections` counts the
    connections accepted; :meth:`stop` closes every socket and joins every thread.
    """

    def __init__(self, target: tuple[str, int], round_trip: float, *, name: str = "proxy",
                 handshake: bool = True) -> None:
        if not 0 <= round_trip <= MAX_ROUND_TRIP:
            raise ValueError(f"round_trip is 0 to {MAX_ROUND_TRIP} s, not {round_trip!r}")
        self.target = target
        self.round_trip = float(round_trip)
        self.name = name
        self.handshake = handshake
        #: connections accepted so far
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError(f"the {self.name} proxy is not running")
        return int(self._listener.getsockname()[1])

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> DelayProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self._spawn(self._accept, "accept")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening port and every connection; wait (at most ``timeout``) for
        every thread of the proxy to end."""
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            alive = [t for t in threads if t.is_alive()]
            if not alive or time.monotonic() > deadline:
                break
            alive[0].join(timeout=max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            _close(self._listener)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the work -----------------------------------------------------------------------
    def _spawn(self, target: object, role: str, *args: object) -> None:
        thread = threading.Thread(target=self._run, args=(target, *args),
                                  name=f"sandbox-distance-{self.name}-{role}", daemon=True)
        with self._lock:
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
        thread.start()

    @staticmethod
    def _run(target: object, *args: object) -> None:
        try:
            target(*args)  # type: ignore[operator]
        except OSError:
            pass  # a socket closed under it by stop() or by a peer

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([listener], [], [], _POLL)
            if not ready:
                continue
            client, _ = listener.accept()
            opened = time.monotonic()
            self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            for sock in (client, upstream):
                sock.settimeout(_SEND_TIMEOUT)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(sock)
            # what the client sends can leave only once its handshake would be done
            not_before = opened + (self.round_trip if self.handshake else 0.0)
            ends = [threading.Event(), threading.Event()]
            for source, sink, start, end, role in ((client, upstream, not_before, ends[0], "up"),
                                                   (upstream, client, 0.0, ends[1], "down")):
                chunks: queue.Queue[tuple[float, bytes | None]] = queue.Queue()
                self._spawn(self._read, f"{role}-read", source, chunks, start)
                self._spawn(self._write, f"{role}-write", sink, chunks, end, ends,
                            (client, upstream))

    def _read(self, source: socket.socket, chunks: queue.Queue[tuple[float, bytes | None]],
              not_before: float) -> None:
        """Stamp each chunk with when it may arrive at the other end: half a round trip
        after it was sent (and never before ``not_before`` plus that)."""
        half = self.round_trip / 2
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([source], [], [], _POLL)
                if not ready:
                    continue
                data = source.recv(65536)
                chunks.put((max(time.monotonic(), not_before) + half, data or None))
                if not data:
                    return
        except OSError:
            chunks.put((0.0, None))

    def _write(self, sink: socket.socket, chunks: queue.Queue[tuple[float, bytes | None]],
               end: threading.Event, ends: list[threading.Event],
               pair: tuple[socket.socket, socket.socket]) -> None:
        """Deliver the chunks in order, each at its time; at the end of the stream, pass
        the end on (half-close); once both directions ended, close both sockets."""
        try:
            while not self._stop.is_set():
                try:
                    due, data = chunks.get(timeout=_POLL)
                except queue.Empty:
                    continue
                while (wait := due - time.monotonic()) > 0 and not self._stop.is_set():
                    self._stop.wait(min(wait, _POLL))
                if data is None:
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                sink.sendall(data)
        finally:
            end.set()
            if all(e.is_set() for e in ends):
                for sock in pair:
                    _close(sock)
                    with self._lock:
                        self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
