"""HTTP to Microsoft's identity platform, with bounded retries.

msal takes this session as its ``http_client`` (a documented msal parameter). A 429 or
5xx answer, or a connection that fails, is retried after the ``Retry-After`` the server
asked for or an exponential backoff with jitter, whichever is longer, until ``budget``
seconds have gone;
then msal gets the last answer and the plugin raises ``ServiceUnavailable``. Retrying
here, below msal, also keeps msal's memory of failed requests (which answers an
identical request from cache for up to a minute) from hiding a recovered server.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Any

import requests

from ._clock import CLOCK, Clock

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


class RetryingSession(requests.Session):
    """A requests session that retries throttled and failed calls within ``budget`` s."""

    def __init__(self, budget: float = DEFAULT_BUDGET, timeout: float = DEFAULT_TIMEOUT,
                 clock: Clock = CLOCK) -> None:
        super().__init__()
        self.budget = budget
        self.timeout = timeout
        self.clock = clock
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
                wait = max(retry_after(response) or 0.0, _backoff(attempt))
                if time.monotonic() - start + wait > self.budget:
                    self.gave_up = f"HTTP {response.status_code}"
                    return response
                log.warning("Microsoft's identity platform answered HTTP %d; retrying in "
                            "%.1f s", response.status_code, wait)
            time.sleep(wait)
