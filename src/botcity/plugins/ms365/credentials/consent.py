"""How a person gives consent, and how the plugin knows no person is there.

A *consent handler* gets the URL a person must open and returns the address the browser
landed on after consent (O365's ``handle_consent`` contract). The plugin checks that
address with :func:`parse_redirect` before it redeems anything.

- ``"console"``: print the URL, read the pasted address from stdin (0.2.0's way). Quotes
  and spaces around it are fine; a wrong address is explained and asked again, 3 times.
- ``"browser"``: listen on ``http://localhost:<free port>`` (the redirect URI), open the
  system browser (the URL is printed too), take the code from the browser's redirect and
  answer it with a page that says whether it worked. Gives up after the timeout.
- ``"device_code"``: Microsoft's device code flow: print the verification URL and code
  (and, when Maestro is connected, raise a Maestro alert with them, so an operator can
  sign in from a phone), then poll until the person signs in, refuses, or time runs out.
- ``"none"``: never ask; the plugin raises ``AuthorizationRequired`` instead.
- any callable ``handler(url) -> redirected_url``: your own way (the demo and the tests
  let the sandbox answer).

Waiting (browser, device code) is bounded by ``MS365_CONSENT_TIMEOUT`` seconds (300).

A run is *unattended* (nobody can answer) when a Runner started it (the Maestro
connection carries a task id, or the process was started with a Runner's arguments,
``bot.py <server> <task_id> <token> [<organization>]``, even when the bot does not hand
the plugin its Maestro connection), when stdin is missing, closed or ``/dev/null``, or
when ``MS365_CONSENT=none``. Then the default is ``"none"``. An stdin that is open but not
a terminal (an IDE's Run window) still has a person behind it; the console still waits
for them at most ``MS365_CONSENT_TIMEOUT`` seconds.
"""

from __future__ import annotations

import html
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TextIO
from urllib.parse import parse_qs, urlsplit

from . import _o365, platform
from ._maestro import started_by_runner, task_id
from .errors import (
    LOGIN,
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    aadsts_code,
    explain,
    told,
)
from .settings import is_loopback

log = logging.getLogger(__name__)

MODES = ("console", "browser", "device_code", "none")
CONSOLE_TRIES = 3

ConsentHandler = Callable[[str], str]
#: ``notify(title, message)``: tell an operator (a Maestro alert) what a person must do.
Notify = Callable[[str, str], None]


def stdin_is_usable(stdin: TextIO | None) -> bool:
    """False when stdin is missing, closed or the null device (a service's); see
    :func:`.platform.person_at_keyboard`, which asks the OS."""
    return platform.person_at_keyboard(stdin)


def is_unattended(maestro: Any, stdin: TextIO | None, argv: Sequence[str] = (),
                  consent: str = "") -> bool:
    """Whether nobody can answer a consent prompt (see the module's docstring);
    ``consent``: the consent way configured (``MS365_CONSENT``)."""
    if consent.strip().lower() == "none":
        return True
    if task_id(maestro) or started_by_runner(argv):
        return True
    return not stdin_is_usable(stdin)


def choose_mode(
    consent: str | ConsentHandler | None, maestro: Any, stdin: TextIO | None,
    argv: Sequence[str] = (), command: Callable[[], str] | None = None,
) -> str | ConsentHandler:
    """The consent way to use: the one chosen (an argument, else ``MS365_CONSENT``), else
    by context (``argv``: the process's arguments, ``sys.argv``). ``command``: the sign-in
    command a message names when the console cannot be used."""
    chosen: str | ConsentHandler | None = consent or None
    if callable(chosen):
        return chosen
    if chosen is None:
        return "none" if is_unattended(maestro, stdin, argv) else "console"
    mode = chosen.strip().lower()
    if mode not in MODES:
        raise ConfigurationError(
            f"Unknown consent way {chosen!r}: use one of {', '.join(MODES)} or a function "
            "that takes the consent URL and returns the address the browser landed on."
        )
    if mode == "console" and not stdin_is_usable(stdin):
        raise ConfigurationError(told("console-without-stdin",
                                      command=command() if command else LOGIN))
    return mode


def _same_endpoint(url: str, redirect_uri: str) -> bool:
    got, want = urlsplit(url), urlsplit(redirect_uri)
    local = is_loopback(redirect_uri)
    return (
        got.scheme == want.scheme
        and got.hostname == want.hostname
        and (local or got.port == want.port)  # Azure AD ignores the port of localhost
        and got.path.rstrip("/") == want.path.rstrip("/")
    )


def parse_redirect(text: str, redirect_uri: str, state: str) -> dict[str, str]:
    """The query of the address the browser landed on, checked against this sign-in."""
    url = text.strip().strip("'\"<>").strip()
    if not url:
        raise AuthorizationError("Nothing was pasted. Paste the whole address of the page "
                                 "the browser landed on after consent.")
    if not _same_endpoint(url, redirect_uri):
        raise AuthorizationError(
            f"That is not the address the sign-in sends you back to ({redirect_uri}...). "
            "Copy the whole address from the browser's address bar after you accepted."
        )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if query.get("state") != state:
        raise AuthorizationError(
            "That address belongs to another sign-in (its state does not match). Open the "
            "URL shown above, sign in, and paste the address you land on."
        )
    if query.get("error") == "access_denied":
        code = aadsts_code(query.get("error_description"))
        raise AuthorizationError(
            f"Consent was not given: access_denied ({code or 'no code'}: the person declined "
            "or cancelled the sign-in). Sign in again and accept.", error="access_denied",
            code=code)
    if "error" in query:
        raise explain(query, "the sign-in")
    if not query.get("code"):
        raise AuthorizationError("That address has no authorization code. Paste the address "
                                 "of the page you land on after you accept.")
    return query


#: A read of stdin still waiting for a line (one per stream): a later prompt waits for the
#: same line instead of starting a second reader that would compete for it.
_PENDING: dict[int, queue.Queue[str | BaseException]] = {}
_PENDING_LOCK = threading.Lock()


def read_answer(stdin: TextIO, timeout: float) -> str | None:
    """A line a person typed at ``stdin`` (``""`` at its end), or None when none came
    within ``timeout`` seconds (see :func:`_read_line`)."""
    return _read_line(stdin, timeout)


def _read_line(stdin: TextIO, timeout: float) -> str | None:
    """A line of ``stdin`` (``""`` at its end), or None when none came within ``timeout``
    seconds. The read runs in a daemon thread: a pipe nobody writes to (a scheduler, a
    service) cannot keep the bot waiting, and a thread still blocked on it ends with the
    process. A read that timed out stays pending, and the next prompt takes its line."""
    with _PENDING_LOCK:
        lines = _PENDING.get(id(stdin))
        if lines is None:
            lines = _PENDING[id(stdin)] = queue.Queue(maxsize=1)

            def read(into: queue.Queue[str | BaseException] = lines) -> None:
                try:
                    into.put(stdin.readline())
                except (OSError, ValueError) as exc:  # closed meanwhile
                    into.put(exc)

            threading.Thread(target=read, name="ms365-console", daemon=True).start()
    try:
        got = lines.get(timeout=max(0.0, timeout))
    except queue.Empty:
        return None
    with _PENDING_LOCK:
        _PENDING.pop(id(stdin), None)
    return "" if isinstance(got, BaseException) else got


def console_consent(
    url: str, redirect_uri: str, state: str, *, stdin: TextIO | None = None,
    stdout: TextIO | None = None, timeout: float = 300.0,
) -> dict[str, str]:
    """Show the URL, read the pasted address; up to :data:`CONSOLE_TRIES` tries, all
    within ``timeout`` seconds."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stdout.write(
        "\nMicrosoft 365 needs your consent once. Open this URL in a browser, sign in and "
        f"accept:\n\n{url}\n\n"
    )
    end = time.monotonic() + timeout
    for attempt in range(1, CONSOLE_TRIES + 1):
        stdout.write("Paste the address of the page you land on, then press Enter:\n")
        stdout.flush()
        line = _read_line(stdin, end - time.monotonic())
        if line is None:
            raise AuthorizationRequired.told("consent-timeout", timeout=f"{timeout:g}")
        if not line:
            raise AuthorizationRequired.told("consent-stdin-ended")
        try:
            return parse_redirect(line, redirect_uri, state)
        except AuthorizationError as exc:
            if exc.error or attempt == CONSOLE_TRIES:
                raise
            stdout.write(f"{exc} ({CONSOLE_TRIES - attempt} tries left)\n")
    raise AssertionError("unreachable")  # pragma: no cover


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif;margin:3em"><h1>{title}</h1><p>{text}</p></body></html>"""


class RedirectListener:
    """An HTTP server on 127.0.0.1 that receives the browser's redirect after consent.
    Redirect URI: ``http://localhost:<port>`` (Azure AD ignores the port of localhost, so
    registering ``http://localhost`` once is enough). Each connection has its own thread
    and is dropped after :data:`IDLE_SECONDS` of silence, so a connection that says
    nothing (a browser's speculative one, a port scanner) cannot keep the sign-in out; the
    first answer that carries a query is the one taken."""

    #: Seconds a connection may stay silent before it is closed.
    IDLE_SECONDS = 10.0

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # for this way

        self._done = threading.Event()
        self._taking = threading.Lock()
        self._answer: dict[str, str] | None = None
        self._error: MS365CredentialsError | None = None
        self.state = ""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = self.IDLE_SECONDS

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # the query holds the authorization code: never log it

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = urlsplit(self.path).query
                with listener._taking:
                    if listener._done.is_set() or not query:
                        self._page(404, "Nothing here",
                                   "This page only receives the sign-in.")
                        return
                    try:
                        listener._answer = parse_redirect(
                            listener.redirect_uri + self.path, listener.redirect_uri,
                            listener.state)
                        page = (200, "Signed in", "The bot received the authorization. You "
                                "can close this window.")
                    except MS365CredentialsError as exc:
                        listener._error = exc
                        page = (400, "Sign-in failed", html.escape(str(exc)))
                    listener._done.set()
                self._page(*page)

            def _page(self, status: int, title: str, text: str) -> None:
                body = _PAGE.format(title=title, text=text).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.redirect_uri = f"http://localhost:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="ms365-consent",
                                        daemon=True)

    def __enter__(self) -> RedirectListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._server.shutdown()
        self._thread.join(timeout=2)
        self._server.server_close()

    def wait(self, state: str, timeout: float,
             tick: Callable[[float], None] | None = None) -> dict[str, str]:
        self.state = state
        end = time.monotonic() + timeout
        while not self._done.is_set() and (left := end - time.monotonic()) > 0:
            if tick is not None:
                tick(left)
            self._done.wait(min(1.0, left))
        if not self._done.is_set():
            raise AuthorizationError(
                f"No sign-in reached {self.redirect_uri} within {timeout:.0f} s. Open the URL "
                "shown above in a browser on this machine, or choose consent='device_code' "
                "or 'console'."
            )
        if self._error is not None:
            raise self._error
        assert self._answer is not None
        return self._answer


def _open_browser(url: str) -> None:
    """Open ``url`` in the system browser without waiting for it (some openers block)."""
    import webbrowser

    def run() -> None:
        try:
            if not webbrowser.open(url):
                log.info("No browser could be opened; open the URL by hand")
        except Exception as exc:  # a broken opener must not stop the sign-in
            log.info("Opening the browser failed (%s); open the URL by hand",
                     type(exc).__name__)

    threading.Thread(target=run, name="ms365-browser", daemon=True).start()


class Ask(NamedTuple):
    """What one sign-in asks of a person, and how to reach them."""

    account: Any
    permissions: frozenset[str]
    notify: Notify
    timeout: float
    #: ``"select_account"``: let the person pick (or add) another account
    prompt: str | None = None
    #: a conditional-access challenge from Microsoft the sign-in must satisfy
    claims: str | None = None
    stdin: TextIO | None = None
    stdout: TextIO | None = None
    tick: Callable[[float], None] | None = None

    @property
    def out(self) -> TextIO:
        return self.stdout or sys.stdout


class ConsentWay:
    """One way a person signs in and consents: :meth:`obtain` stores the token and
    returns the signed-in user's name."""

    def obtain(self, ask: Ask) -> str:
        raise NotImplementedError


class ConsoleConsent(ConsentWay):
    """Print the URL; read the address the browser landed on, pasted at the console."""

    def obtain(self, ask: Ask) -> str:
        sign_in = _o365.CodeSignIn(ask.account, ask.permissions, prompt=ask.prompt,
                                   claims=ask.claims)
        answer = console_consent(sign_in.url, sign_in.redirect_uri, sign_in.state,
                                 stdin=ask.stdin, stdout=ask.out, timeout=ask.timeout)
        return sign_in.redeem(answer)


class CallableConsent(ConsentWay):
    """Your own way: ``handler(url)`` returns the address the browser landed on."""

    def __init__(self, handler: ConsentHandler) -> None:
        self.handler = handler

    def obtain(self, ask: Ask) -> str:
        sign_in = _o365.CodeSignIn(ask.account, ask.permissions, prompt=ask.prompt,
                                   claims=ask.claims)
        answer = parse_redirect(self.handler(sign_in.url), sign_in.redirect_uri,
                                sign_in.state)
        return sign_in.redeem(answer)


class BrowserConsent(ConsentWay):
    """Open the system browser; take the code from its redirect to a local listener."""

    def obtain(self, ask: Ask) -> str:
        with RedirectListener() as listener:
            sign_in = _o365.CodeSignIn(ask.account, ask.permissions, listener.redirect_uri,
                                       prompt=ask.prompt, claims=ask.claims)
            ask.out.write(f"\nOpening your browser to sign in to Microsoft 365. If it does "
                          f"not open, visit:\n\n{sign_in.url}\n\nWaiting up to "
                          f"{ask.timeout:.0f} s...\n")
            ask.out.flush()
            _open_browser(sign_in.url)
            answer = listener.wait(sign_in.state, ask.timeout, ask.tick)
        return sign_in.redeem(answer)


class DeviceCodeConsent(ConsentWay):
    """Show a URL and a code (and tell Maestro); wait until the person signs in."""

    def obtain(self, ask: Ask) -> str:
        sign_in = _o365.DeviceCodeSignIn(ask.account, ask.permissions, claims=ask.claims)
        message = (f"To let the bot use Microsoft 365, open {sign_in.verification_uri} and "
                   f"enter the code {sign_in.user_code} (valid for "
                   f"{min(ask.timeout, sign_in.expires_in) / 60:.0f} minutes).")
        ask.out.write(f"\n{message}\nWaiting for the sign-in...\n")
        ask.out.flush()
        ask.notify("Microsoft 365 sign-in needed", message)
        return sign_in.finish(ask.timeout, ask.tick)


def consent_way(mode: str | ConsentHandler) -> ConsentWay:
    """The :class:`ConsentWay` a mode (see :data:`MODES`) or a handler function names."""
    if callable(mode):
        return CallableConsent(mode)
    ways: dict[str, type[ConsentWay]] = {"console": ConsoleConsent, "browser": BrowserConsent,
                                         "device_code": DeviceCodeConsent}
    return ways[mode]()
