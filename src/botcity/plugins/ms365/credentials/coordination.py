"""Many bots, one token: who refreshes when the access token expires.

Several bots (on several Runners) share one stored token. When its access token expires
they would all refresh at once: a burst on Microsoft's token endpoint, which throttles,
and a race of writes back to the store. Microsoft does not revoke the old refresh token
when it issues a new one, so a lost race costs requests, not the authorization.

The rule, run by O365 through the token backend's ``should_refresh_token`` hook:

1. Read the store. If another process has stored a newer token whose access token is
   valid, use it: no refresh.
2. If another process holds a live *lease* (``"refreshing"`` in the token's ``botcity``
   entry), wait for its token, reading again about every 0.4 s, at most until its lease
   runs out (30 s): then that process is taken to be dead, and we go on.
3. Otherwise write our own lease, let the writes of others who did the same land (about
   0.3 s), and read again: the last writer holds the lease (Maestro keeps the last write).
   Only the holder refreshes; the others go back to 2.

Saving never replaces a newer token with an older one (``TokenStore.save_token``), and
the holder's save clears the lease. When the store cannot be read or written, the bot
refreshes on its own: being able to work matters more than saving a request.

Cost: nothing while the access token is valid. A refresh without contention costs two
reads and two writes of the store (check, lease, verify, save) and one token request;
one read less when the store was read in the last two seconds (a bot that starts on an
expired token). ``MS365_COORDINATE_REFRESH=0`` turns the lease off: one read, one write.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from .errors import StoreError

if TYPE_CHECKING:
    from .stores import TokenStore

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
SETTLE_SECONDS = 0.3
#: A read of the store this recent serves as the first look (no request).
FRESH_READ_SECONDS = 2.0
POLL_SECONDS = 0.4


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    lease = ((stored or {}).get("botcity") or {}).get("refreshing")
    if isinstance(lease, dict) and isinstance(lease.get("until"), int | float):
        return lease
    return None


def _alone(store: TokenStore, exc: StoreError) -> bool:
    """The store cannot be read or written: refresh without coordinating."""
    log.warning("Cannot coordinate the refresh through %s (%s); refreshing alone",
                store.location, type(exc).__name__)
    return True


def _adopted(store: TokenStore, stored: dict[str, Any] | None, ours: int) -> bool:
    """Use ``stored`` when another process stored a newer, still fresh token."""
    from .stores import fresh_enough, issued_at

    if stored and issued_at(stored) > ours and fresh_enough(stored):
        store.adopt(stored)
        log.info("Another process refreshed the token; using it from %s", store.location)
        return True
    return False


def before_refresh(store: TokenStore) -> bool:
    """True: this process refreshes. False: a fresher token from the store was adopted."""
    from .stores import issued_at

    ours = issued_at(store.cache_snapshot())
    me = _me()
    waited_until = time.monotonic() + LEASE_SECONDS + 5
    recent = FRESH_READ_SECONDS  # a bot that starts on an expired token just read it
    while True:
        try:
            stored = store.peek(max_age=recent)
            recent = 0.0
        except StoreError as exc:
            return _alone(store, exc)
        if _adopted(store, stored, ours):
            return False
        lease = _lease(stored)
        if (lease and lease.get("by") != me and lease["until"] > time.time()
                and time.monotonic() < waited_until):
            time.sleep(POLL_SECONDS * random.uniform(0.75, 1.25))  # noqa: S311
            continue
        try:
            store.write_lease(me, time.time() + LEASE_SECONDS)
            time.sleep(SETTLE_SECONDS * random.uniform(1.0, 1.5))  # noqa: S311
            stored = store.peek()
        except StoreError as exc:
            return _alone(store, exc)
        if _adopted(store, stored, ours):
            return False
        lease = _lease(stored)
        if lease is None or lease.get("by") == me:
            store.holding_lease = me
            return True
        log.debug("Another process took the refresh lease; waiting for its token")
