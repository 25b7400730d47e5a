"""msal's discovery answers, kept with the token so that a renewal costs one request.

Before its first token request, every new msal client fetches the authority's OpenID
configuration (and, on Microsoft's own clouds, the instance metadata when it looks for
other names of the host). A bot process renews a few times at most, so it would pay that
request on every run. The answers change rarely (msal itself keeps them a day), so the
plugin keeps them in the stored token's ``botcity`` entry, under ``discovery``::

    "discovery": {"<url>": {"at": <epoch seconds fetched>, "doc": {<the answer>}}}

and msal gets them from there (``_o365.py`` says which of msal's requests they answer).

Rules:

- an answer serves only the very URL it came from (host, port, tenant and query), for
  :data:`LIFETIME` seconds, and only when it is a JSON object whose sign-in and token
  endpoints are on that URL's host;
- anything else (missing, old, malformed, too big, another host or tenant) is ignored:
  msal fetches, and the answer fetched is kept for the next save. A kept answer never
  stops a renewal, and a token is never refused for its ``discovery`` entry;
- only what ``_o365.py`` hands over is kept (GET answers of discovery URLs: never a token
  request, its data or its answer), and of those only the ones this process used or
  fetched (an answer for another authority is dropped at the next save), at most
  :data:`MAX_BYTES` in all.

Nothing here does I/O; every method that needs the time takes ``now``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: The key of the ``botcity`` entry that holds the answers.
KEY = "discovery"
#: Seconds an answer is used (what msal keeps a discovery answer in its own memory).
LIFETIME = 86_400
#: The most the kept answers may weigh, as compact JSON (Azure AD's OpenID configuration
#: is about 1.7 KB, its instance metadata about 1 KB).
MAX_BYTES = 6_144
#: The endpoints of a discovery answer that a person, a code or a token is sent to (the
#: OpenID configuration's, and where the instance metadata says it is).
_SENT_TO = frozenset({"authorization_endpoint", "token_endpoint",
                      "device_authorization_endpoint", "tenant_discovery_endpoint"})
#: Fields no discovery answer has: a document that holds one is not kept.
_SECRET_FIELDS = frozenset({"access_token", "refresh_token", "id_token", "client_secret",
                            "code", "device_code", "password", "assertion"})


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def _fresh(at: object, now: float) -> bool:
    """Whether an answer fetched at ``at`` may still be used (one stamped in the future was
    timed by a wrong clock, beyond what ``_clock.py`` corrects: it may not)."""
    return isinstance(at, int) and not isinstance(at, bool) and now - LIFETIME < at <= now + 300


def _endpoints_on(document: dict[str, Any], url: str) -> bool:
    """Whether the endpoints of ``document`` that a person, a code or a token is sent to
    are https URLs on ``url``'s host (Azure AD's ``userinfo_endpoint`` is Graph's)."""
    where = urlsplit(url).netloc.lower()
    for name in _SENT_TO & document.keys():
        value = document[name]
        if not isinstance(value, str):
            return False
        parts = urlsplit(value)
        if parts.scheme != "https" or parts.netloc.lower() != where:
            return False
    return True


def acceptable(url: str, document: object) -> bool:
    """Whether ``document`` may be kept and used as the answer of ``url``."""
    return (isinstance(document, dict) and url.startswith("https://")
            and not _SECRET_FIELDS & document.keys() and _endpoints_on(document, url)
            and len(_compact(document)) + len(url) <= MAX_BYTES)


class Discovery:
    """The discovery answers a store holds, by URL. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[int, dict[str, Any]]] = {}
        #: The URLs whose answers msal was given or fetched: the ones saved.
        self._used: set[str] = set()

    def __repr__(self) -> str:
        return f"Discovery({len(self._answers)} answers)"

    # -- the stored entry ------------------------------------------------------------------
    def load(self, entry: object, now: float) -> None:
        """Take the usable answers of a stored ``discovery`` entry; anything else in it is
        ignored. Answers held for other URLs stay."""
        items = entry.items() if isinstance(entry, dict) else ()
        found = {url: (item["at"], item["doc"]) for url, item in items
                 if isinstance(url, str) and isinstance(item, dict)
                 and _fresh(item.get("at"), now) and acceptable(url, item.get("doc"))}
        if entry is not None and len(found) != len(items):
            log.debug("Ignored discovery answers kept with the token (old, malformed, or "
                      "for another host)")
        with self._lock:
            self._answers.update(found)

    def entry(self) -> dict[str, Any]:
        """What goes into the stored ``botcity`` entry: ``{"discovery": ...}`` (the newest
        answers used, within :data:`MAX_BYTES`), or nothing when none was used."""
        kept: dict[str, Any] = {}
        size = 0
        with self._lock:
            newest_first = sorted(((url, answer) for url, answer in self._answers.items()
                                   if url in self._used), key=lambda item: -item[1][0])
        for url, (at, document) in newest_first:
            size += len(url) + len(_compact(document))
            if size > MAX_BYTES:
                break
            kept[url] = {"at": at, "doc": document}
        return {KEY: kept} if kept else {}

    # -- msal's requests ----------------------------------------------------------------
    def answer(self, url: str, now: float) -> str | None:
        """The kept answer of ``url`` as msal would have received it (None: none usable)."""
        with self._lock:
            at, document = self._answers.get(url, (0, None))
            if document is None or not _fresh(at, now):
                return None
            self._used.add(url)
        return json.dumps(document)

    def learn(self, url: str, text: str, now: float) -> bool:
        """Keep ``text``, the answer fetched for ``url``, when it is acceptable."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if not acceptable(url, document):
            log.debug("Not keeping the discovery answer of %s (not a small JSON object with "
                      "endpoints on its host)", urlsplit(url).netloc)
            self.forget([url])
            return False
        with self._lock:
            self._answers[url] = (int(now), document)
            self._used.add(url)
        return True

    def document(self, url: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(url, (0, None))[1]

    def forget(self, urls: Iterable[str]) -> None:
        """Drop the answers of ``urls`` (msal fetches them next time)."""
        with self._lock:
            for url in urls:
                self._answers.pop(url, None)
                self._used.discard(url)
