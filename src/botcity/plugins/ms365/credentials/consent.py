"""How a person gives consent, and how the plugin knows no person is there.

A *consent handler* gets the URL a person must open and returns the address the browser
landed on after consent (O365's ``handle_consent`` contract). The plugin checks that
address with :func:`parse_redirect` before it redeems anything.

- ``"console"``: print the URL, read the pasted address from stdin (0.2.0's way). Quotes
  and spaces around it are fine; a wrong address is explained and asked again, 3 times.
- ``"none"``: never ask; the plugin raises ``AuthorizationRequired`` instead.
- any callable ``handler(url) -> redirected_url``: your own way (the demo and the tests
  let the sandbox answer).

A run is *unattended* (nobody can answer) when a Runner started it (the Maestro
connection carries a task id), when stdin is missing, closed or ``/dev/null``, or when
``MS365_CONSENT=none``. Then the default is ``"none"``. An stdin that is open but not a
terminal (an IDE's Run window) still has a person behind it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from .errors import AuthorizationError, AuthorizationRequired, ConfigurationError

log = logging.getLogger(__name__)

ENV_CONSENT = "MS365_CONSENT"
MODES = ("console", "none")
CONSOLE_TRIES = 3

ConsentHandler = Callable[[str], str]


def stdin_is_usable(stdin: TextIO | None) -> bool:
    """False when stdin is missing, closed or the null device (a Runner's service)."""
    if stdin is None or getattr(stdin, "closed", True):
        return False
    try:
        fd = stdin.fileno()
        info = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return True  # a replaced stream (an IDE, a test) without a descriptor: a person
    try:
        null = os.stat(os.devnull)
    except OSError:
        return True
    return not (info.st_ino == null.st_ino and info.st_dev == null.st_dev)


def is_unattended(maestro: Any, environ: Mapping[str, str], stdin: TextIO | None) -> bool:
    if environ.get(ENV_CONSENT, "").strip().lower() == "none":
        return True
    task_id = getattr(maestro, "task_id", None) if maestro is not None else None
    if task_id not in (None, "", 0, "0"):
        return True
    return not stdin_is_usable(stdin)


def choose_mode(
    consent: str | ConsentHandler | None, maestro: Any, environ: Mapping[str, str],
    stdin: TextIO | None,
) -> str | ConsentHandler:
    """The consent way to use: the explicit one, else ``MS365_CONSENT``, else by context."""
    chosen: str | ConsentHandler | None = consent or environ.get(ENV_CONSENT, "").strip() or None
    if callable(chosen):
        return chosen
    if chosen is None:
        return "none" if is_unattended(maestro, environ, stdin) else "console"
    mode = chosen.strip().lower()
    if mode not in MODES:
        raise ConfigurationError(
            f"Unknown consent way {chosen!r}: use one of {', '.join(MODES)} or a function "
            "that takes the consent URL and returns the address the browser landed on."
        )
    if mode == "console" and not stdin_is_usable(stdin):
        raise ConfigurationError(
            "consent='console' needs someone at the keyboard, but stdin is closed. Authorize "
            "on a machine with a person (botcity-ms365 login), or choose another way."
        )
    return mode


def _same_endpoint(url: str, redirect_uri: str) -> bool:
    got, want = urlsplit(url), urlsplit(redirect_uri)
    local = want.hostname in ("localhost", "127.0.0.1")
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
    if "error" in query:
        raise AuthorizationError(
            f"Consent was not given: {query['error']}. "
            f"{query.get('error_description', '').split(' Trace ID')[0]}",
            error=query["error"],
        )
    if not query.get("code"):
        raise AuthorizationError("That address has no authorization code. Paste the address "
                                 "of the page you land on after you accept.")
    return query


def console_consent(
    url: str, redirect_uri: str, state: str, *, stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> dict[str, str]:
    """Show the URL, read the pasted address; up to :data:`CONSOLE_TRIES` tries."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stdout.write(
        "\nMicrosoft 365 needs your consent once. Open this URL in a browser, sign in and "
        f"accept:\n\n{url}\n\n"
    )
    for attempt in range(1, CONSOLE_TRIES + 1):
        stdout.write("Paste the address of the page you land on, then press Enter:\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            raise AuthorizationRequired(
                "No one answered the consent prompt (stdin ended). Authorize with "
                "'botcity-ms365 login' on a machine with a person at the keyboard."
            )
        try:
            return parse_redirect(line, redirect_uri, state)
        except AuthorizationError as exc:
            if exc.error or attempt == CONSOLE_TRIES:
                raise
            stdout.write(f"{exc} ({CONSOLE_TRIES - attempt} tries left)\n")
    raise AssertionError("unreachable")  # pragma: no cover
