"""When a bot renews the access token it holds: the token's refresh window and this bot's
moment in it. Pure timing: no I/O, the clock passed in (what is done at that moment, and
with the store, is ``lifecycle.py``'s).

- **The refresh window** of an access token ends ``margin`` seconds before its expiry
  (``tokens.margin``: a minute) and lasts ``spread``: half the token's life, at most ten
  minutes (:func:`window`).
- **A moment of one's own.** Each bot draws its moment at random in the window, anew for
  every token, so bots that hold the same token renew at different moments
  (:class:`Schedule`).
- **The last renewer goes first.** The bot that renewed the token (``leading``) draws in
  the first tenth of the next window; the others in the rest.
- **A failed early renewal** is tried again once the access token has expired.

The constants of the claim on an expired token (:data:`CLAIM_SECONDS`,
:data:`LONGEST_CLAIM`, :data:`POLL`, ...) are times too; ``lifecycle.py`` says what they are
for.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ._clock import CLOCK, Clock
from .tokens import margin

#: The refresh window is this share of the access token's life, at most SPREAD_MAX.
SPREAD_SHARE = 0.5
SPREAD_MAX = 600.0
#: The share of the window, at its start, kept for the bot that renewed last.
LEADER_SHARE = 0.1
#: How long a claim on an expired token holds: its bot renews within it (a token request
#: and a write, about a second; when Microsoft keeps it retrying longer, another bot takes
#: over). A claimer that was killed holds the others this long at most.
CLAIM_SECONDS = 6.0
#: A claim that lasts longer than this was timed by a wrong clock: it does not count.
LONGEST_CLAIM = 60.0
#: Seconds between the reads of a bot waiting for another's token.
POLL = 0.5
#: How long a bot reads again until it sees its own claim (a store may show a write to
#: reads a moment after it took it).
SEE_OWN_CLAIM = 3.0
#: How old the read that decides how to renew an expired token may be (the start's read
#: serves).
LOOK_AGE = 2.0
#: After this many renewals in a row that met no other bot, a bot that finds the token
#: expired renews it without claiming it first (a lone bot's start: one write).
QUIET_STARTS = 2


def window(entry: dict[str, Any]) -> tuple[float, float]:
    """When the refresh window of access token ``entry`` begins and ends (epoch seconds).
    A token Microsoft says to refresh earlier (``refresh_on``, from its ``refresh_in``:
    a continuous access evaluation token lives up to 28 hours and is to be refreshed after
    about half of it) has its window open there instead, as long as the rest of its life
    would be (at most :data:`SPREAD_MAX`)."""
    try:
        expires_on = float(entry["expires_on"])
        life = expires_on - float(entry["cached_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0
    end = expires_on - margin(entry)
    try:
        refresh_on = float(entry["refresh_on"])
    except (KeyError, TypeError, ValueError):
        refresh_on = end
    if float(entry["cached_at"]) < refresh_on < end:
        return refresh_on, min(end, refresh_on + min(SPREAD_MAX, (end - refresh_on)
                                                     * SPREAD_SHARE))
    return end - min(SPREAD_MAX, max(0.0, life * SPREAD_SHARE)), end


class Schedule:
    """When this bot renews the access token it holds: a moment of its own in the token's
    refresh window, drawn anew for every token (``draw`` returns 0 to 1)."""

    def __init__(self, draw: Callable[[], float] = random.random,
                 clock: Clock = CLOCK) -> None:
        self._draw = draw
        self.clock = clock
        self._token: tuple[Any, Any] | None = None
        self._due_at = 0.0
        #: The token whose renewal a failure put off until its expiry.
        self._postponed: tuple[Any, Any] | None = None
        #: This bot renewed the token it holds (rule 2).
        self.leading = False

    def due_at(self, entry: dict[str, Any]) -> float:
        token = (entry.get("cached_at"), entry.get("expires_on"))
        if token != self._token:
            self._token = token
            begin, end = window(entry)
            split = begin + LEADER_SHARE * (end - begin)
            begin, end = (begin, split) if self.leading else (split, end)
            begin = max(begin, self.clock.now())  # seen inside its window: what is left
            self._due_at = begin + self._draw() * max(0.0, end - begin)
        return self._due_at

    def due(self, entry: dict[str, Any] | None) -> bool:
        """Whether ``entry`` (an access token; None: there is none) should be renewed now."""
        if entry is None:
            return True
        due_at = self.due_at(entry)  # first: drawing reads the clock
        return self.clock.now() >= due_at

    def not_before_expiry(self, entry: dict[str, Any]) -> None:
        """An early renewal failed: try again once the access token has expired."""
        self.due_at(entry)
        try:
            self._due_at = float(entry["expires_on"])
        except (KeyError, TypeError, ValueError):
            self._due_at = 0.0
        self._postponed = self._token

    def postponed(self, entry: dict[str, Any]) -> bool:
        """Whether a failed early renewal put off renewing ``entry`` until its expiry."""
        return (self._postponed == (entry.get("cached_at"), entry.get("expires_on"))
                and self.clock.now() < self._due_at)
