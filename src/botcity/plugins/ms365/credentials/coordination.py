"""Many bots, one token: who renews the access token, and when.

Several bots (on several Runners) load the same stored token, so their access tokens
expire at the same moment. Refreshing at expiry, they would all refresh at once: a burst
on Microsoft's token endpoint, which throttles, and a race of writes to the store.

The rule:

1. **Renew early, at a moment of one's own.** Each process renews its access token
   before it expires, at a moment drawn at random in the token's *refresh window*, which
   ends ``margin`` seconds before the expiry and lasts ``spread`` (``margin``: a minute;
   ``spread``: half the token's life, at most ten minutes). The plugin's connection
   checks before every Graph request, so nobody waits for Graph to answer 401 first.
2. **The last renewer goes first.** The process that renewed the token draws its moment
   in the first tenth of the next window; the others in the rest. While it runs, it
   renews alone; when it stops, the others take over at their own moments.
3. **Look before refreshing.** When due, read the store once. If another process stored
   a newer token that is not yet due, use it: no refresh. Otherwise refresh, and write
   the new token back, checked against that same read (a token older than what the store
   held is never written).

A token that has already expired (the bot starts after a quiet period) is due at once;
then a read of the store from the last two seconds (the one the bot made as it started)
serves as the look. A bot that first sees a token inside its window draws in what is
left of it, so bots that start together there do not all come due at once.

Cost: nothing while the access token is valid and not due. A renewal: one read, one
token request, one write. Finding another process's token: one read.

What it guarantees: two processes refresh the same token only when one comes due while
the other's refresh is under way (read, token request, write: ``d``, about a second
against Microsoft and Maestro). While the last renewer runs, that needs it to come due
within ``d`` of the end of its tenth and another bot within ``d`` after; with no leader
(the first token, or the leader stopped), ``N`` bots over a window ``W`` give a second
refresh with a chance of about ``(N - 1) * d / W``, a third about
``((N - 1) * d / W)**2 / 2`` (16 bots, hour-long tokens, ``d`` = 2 s: 5%, 0.1%). Bots
that *start* together on an already expired token have nothing to spread over: each
refreshes. An extra refresh costs a token request, never the authorization: Microsoft
does not revoke a refresh token when it issues a new one, and what is written is always
newer than what its writer read.

When the store cannot be read, the bot refreshes on its own: being able to work matters
more than saving a request. ``MS365_COORDINATE_REFRESH=0`` turns the rule off (each bot
refreshes at expiry without looking; ``benchmarks/herd.py`` compares the two).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StoreError

if TYPE_CHECKING:
    from .stores import TokenStore

log = logging.getLogger(__name__)

#: The refresh window is this share of the access token's life, at most SPREAD_MAX.
SPREAD_SHARE = 0.5
SPREAD_MAX = 600.0
#: The share of the window, at its start, kept for the process that renewed last.
LEADER_SHARE = 0.1
#: A read of the store this recent serves as the look at an expired token (no request).
FRESH_READ_SECONDS = 2.0


def window(entry: dict[str, Any]) -> tuple[float, float]:
    """When the refresh window of access token ``entry`` begins and ends (epoch seconds)."""
    from .stores import margin

    try:
        expires_on = float(entry["expires_on"])
        life = expires_on - float(entry["cached_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0
    end = expires_on - margin(entry)
    return end - min(SPREAD_MAX, max(0.0, life * SPREAD_SHARE)), end


class Schedule:
    """When this process renews the access token it holds: a moment of its own in the
    token's refresh window, drawn anew for every token (``draw`` returns 0 to 1)."""

    def __init__(self, draw: Callable[[], float] = random.random) -> None:
        self._draw = draw
        self._token: tuple[Any, Any] | None = None
        self._due_at = 0.0
        #: This process renewed the token it holds (rule 2).
        self.leading = False

    def due_at(self, entry: dict[str, Any]) -> float:
        token = (entry.get("cached_at"), entry.get("expires_on"))
        if token != self._token:
            self._token = token
            begin, end = window(entry)
            split = begin + LEADER_SHARE * (end - begin)
            begin, end = (begin, split) if self.leading else (split, end)
            begin = max(begin, time.time())  # seen inside its window: what is left
            self._due_at = begin + self._draw() * max(0.0, end - begin)
        return self._due_at

    def due(self, entry: dict[str, Any] | None) -> bool:
        """Whether ``entry`` (an access token; None: there is none) should be renewed now."""
        if entry is None:
            return True
        due_at = self.due_at(entry)  # first: drawing reads the clock
        return time.time() >= due_at

    def not_before_expiry(self, entry: dict[str, Any]) -> None:
        """An early renewal failed: try again once the access token has expired."""
        self.due_at(entry)
        try:
            self._due_at = float(entry["expires_on"])
        except (KeyError, TypeError, ValueError):
            self._due_at = 0.0


def before_refresh(store: TokenStore) -> bool:
    """True: this process refreshes (and its save is checked against the read made here).
    False: a newer token another process stored was adopted."""
    from .stores import issued_at, newest_access_token, usable_for

    held = store.cache_snapshot()
    try:
        stored = store.look(max_age=FRESH_READ_SECONDS if usable_for(held) <= 0 else 0.0)
    except StoreError as exc:
        log.warning("Cannot read %s before refreshing (%s); refreshing without looking",
                    store.location, type(exc).__name__)
        return True
    if stored and issued_at(stored) > issued_at(held):
        store.schedule.leading = False
        if not store.schedule.due(newest_access_token(stored)):
            store.adopt(stored)
            log.info("Another process renewed the token; using it from %s", store.location)
            return False
    return True
