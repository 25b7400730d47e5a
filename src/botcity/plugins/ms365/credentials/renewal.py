"""Many bots, one token: who renews the access token, when, and what is written after.

Several bots (on several Runners) load the same stored token, so their access tokens
expire at the same moment. Refreshing at expiry, they would all refresh at once: a burst
on Microsoft's token endpoint, which throttles (and detects loops: AADSTS50196), and a
race of writes to the store. The :class:`Renewer` of each bot keeps these rules:

1. **Renew early, at a moment of one's own.** Each bot renews its access token before it
   expires, at a moment drawn at random in the token's *refresh window*, which ends
   ``margin`` seconds before the expiry and lasts ``spread`` (``margin``: a minute;
   ``spread``: half the token's life, at most ten minutes).
2. **The last renewer goes first, alone.** The bot that renewed the token draws its
   moment in the first tenth of the next window and refreshes without looking; the
   others draw in the rest and look first. While it runs, it renews alone.
3. **Look before refreshing** (all but the leader). When due, read the store once. If
   another bot stored a newer token that is not yet due, use it: no refresh.
4. **One renews an expired token for all.** A token that has already expired (bots that
   start after a quiet period, together) is claimed: the bot writes a claim into the
   token's ``botcity`` entry over a read at most ``SETTLE / 2`` old, waits
   :data:`SETTLE` seconds, reads again, and refreshes only if the claim is still its own.
   The others wait (reading every :data:`POLL` seconds, at most until the claim lapses:
   :data:`CLAIM_SECONDS`, as long as the claimer may be kept retrying) for the token it
   stores; a claimer whose refresh fails takes its claim back.
5. **Write what is newer, over what was read just before.** After a refresh the store is
   read again, and the new token is written as the next *generation* of the one read,
   changing nothing else of the store; when another bot
   saved meanwhile (a higher generation), its token is used instead and ours is not
   written. A token is never written where there is none any more (``logout`` stays
   logged out), nor over a value that cannot be read.

Cost: nothing while the access token is valid and not due. The leader's renewal: one
token request, one read, one write. A bot that finds another's token: one read. A start
on an expired token: the claim (one write), its read back, and :data:`SETTLE` seconds
more. When the store cannot be read, the bot refreshes on its own: being able to
work matters more than saving a request. ``MS365_COORDINATE_REFRESH=0`` turns rules 1-4
off (each bot refreshes at expiry without looking; ``benchmarks/herd.py`` compares).

What it guarantees: two bots refresh the same token only when one comes due while the
other's refresh is under way (read, token request, write: ``d``, about a second against
Microsoft and Maestro): with ``N`` bots over a window ``W`` and no leader, about
``(N - 1) * d / W`` (16 bots, hour-long tokens, ``d`` = 2 s: 5%). At a start on an
expired token, every claim is written within ``SETTLE / 2`` of a read that saw no claim,
so the last claim lands before any claimer reads back: one bot refreshes, unless a
claim's write takes longer than that to reach the store (measured: 16 bot processes
starting together, 20 times: one grant each time). An extra refresh costs a token
request, never the authorization: Microsoft does not revoke a refresh token when it
issues a new one.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._clock import CLOCK, Clock
from .errors import StoreError, TokenFormatError
from .tokens import (
    claim,
    fresh_enough,
    generation,
    margin,
    newest_access_token,
    usable_for,
)

if TYPE_CHECKING:
    from .stores import TokenStore

log = logging.getLogger(__name__)

#: What :meth:`Renewer._read` gives for a value that is not a token, and for a failed read.
_UNREADABLE, _FAILED = object(), object()

#: The refresh window is this share of the access token's life, at most SPREAD_MAX.
SPREAD_SHARE = 0.5
SPREAD_MAX = 600.0
#: The share of the window, at its start, kept for the bot that renewed last.
LEADER_SHARE = 0.1
#: Seconds between writing a claim and reading whether it held (Maestro; a local file,
#: written in milliseconds, needs less: ``TokenStore.settle``). A claim is only written
#: over a read at most half of this old (the start's read serves when it is that recent):
#: then a claim can never undo a renewed token another bot stored, and the last claim
#: written is the one every claimer reads back.
SETTLE = 0.5
#: How long a claim holds by default; others wait at most this long for the claimer's
#: token. It covers a refresh that Microsoft keeps throttling for the whole retry budget
#: (``MS365_RETRY_SECONDS``, 60 s; the connection sets ``Renewer.claim_seconds`` from it).
CLAIM_SECONDS = 70.0
#: A claim that lasts longer than this was timed by a wrong clock: it does not count.
LONGEST_CLAIM = 130.0
#: Seconds between the reads of a bot waiting for another's token.
POLL = 0.5


def window(entry: dict[str, Any]) -> tuple[float, float]:
    """When the refresh window of access token ``entry`` begins and ends (epoch seconds)."""
    try:
        expires_on = float(entry["expires_on"])
        life = expires_on - float(entry["cached_at"])
    except (KeyError, TypeError, ValueError):
        return 0.0, 0.0
    end = expires_on - margin(entry)
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


class Renewer:
    """The rules above, for one bot's store. ``refresh`` (given to :meth:`renew`) asks
    Microsoft for a new token and puts it in the store's memory; everything before and
    after is decided here."""

    def __init__(self, store: TokenStore, *, clock: Clock = CLOCK,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.clock = clock
        self.sleep = sleep
        self.schedule = Schedule(clock=clock)
        #: This bot's name in claims (no meaning outside the store).
        self.me = secrets.token_hex(6)
        #: What the last renewal did with the new token (``TokenStore.write_refreshed``).
        self.outcome = ""
        #: How long this bot's claims hold (see :data:`CLAIM_SECONDS`).
        self.claim_seconds = CLAIM_SECONDS

    # -- when ------------------------------------------------------------------------------
    def due(self, entry: dict[str, Any] | None) -> bool:
        """Whether the held access token ``entry`` should be renewed now."""
        if entry is None:
            return True
        if self.schedule.postponed(entry):
            return False
        held = {"AccessToken": {"held": entry}}
        if not self.store.coordinating():
            return not fresh_enough(held, self.clock.now())
        if usable_for(held, self.clock.now()) <= 0:
            return True
        return self.schedule.due(entry)

    # -- what ------------------------------------------------------------------------------
    def renew(self, refresh: Callable[[], None]) -> bool:
        """Make the held access token usable: True when this bot refreshed (and wrote the
        new token as the rules say), False when it took another bot's newer token."""
        store = self.store
        if not store.coordinating():
            return self.refresh_now(refresh)
        expired = usable_for(store.cache_snapshot(), self.clock.now()) <= 0
        if self.schedule.leading and not expired:
            return self.refresh_now(refresh)  # rule 2: the leader does not look
        stored = self._read(max_age=store.settle / 2 if expired else 0.0)
        if stored is _FAILED:
            log.warning("Cannot read %s before refreshing; refreshing without looking",
                        store.location)
            return self.refresh_now(refresh)
        if isinstance(stored, dict):
            if self._adopt_if_newer(stored):
                return False
            if expired:
                return self._renew_expired(refresh, stored)
        # not due for another, or nothing (readable) stored: refresh; the write after it
        # reads the store again and declines a removed or unreadable value
        return self.refresh_now(refresh)

    def refresh_now(self, refresh: Callable[[], None]) -> bool:
        """Refresh, then write the new token over a read made after the refresh (rule 5)."""
        refresh()
        self.schedule.leading = True
        self.outcome = self.store.write_refreshed()
        if self.outcome == "newer kept":
            self.schedule.leading = False
        return True

    def _adopt_if_newer(self, stored: dict[str, Any]) -> bool:
        """Take ``stored`` when another bot saved it after the token held and it is not
        due yet; True when taken."""
        if not self.store.saved_since(stored):
            return False
        self.schedule.leading = False
        newest = newest_access_token(stored)
        if newest is None or usable_for(stored, self.clock.now()) <= 0 or (
                self.schedule.due(newest)):
            # newer but already due: this bot refreshes, superseding it
            self.store.generation = generation(stored)
            return False
        self.store.adopt(stored)
        log.info("Another bot renewed the token; using it from %s", self.store.location)
        return True

    def _renew_expired(self, refresh: Callable[[], None], stored: dict[str, Any]) -> bool:
        """Rule 4: claim the expired token, or wait for the bot that did. ``stored`` was
        read at most ``settle / 2`` ago. Whenever the store shows no readable token any
        more (a logout meanwhile), this bot refreshes for itself only: the write after
        the refresh declines to put a token back."""
        deadline = self.clock.now() + self.claim_seconds + POLL
        claimed = False
        while True:
            holder = claim(stored, self.clock.now(), LONGEST_CLAIM)
            if holder is None and not claimed:
                try:
                    self.store.write_claim(stored, self.me,
                                           self.clock.now() + self.claim_seconds)
                except StoreError:
                    return self.refresh_now(refresh)
                claimed = True
                self.sleep(self.store.settle)  # then read back whose claim held
            elif holder == self.me:
                try:
                    return self.refresh_now(refresh)
                except Exception:
                    self._give_up_claim()
                    raise
            elif holder is None or self.clock.now() >= deadline:
                return self.refresh_now(refresh)  # the claim vanished, or waited long enough
            else:
                waited = self._wait_for(holder, deadline)
                if not isinstance(waited, dict):
                    return self.refresh_now(refresh)
                if self._adopt_if_newer(waited):
                    return False
                claimed = False  # the claim lapsed (its bot stopped): claim anew
            fresh = self._read(max_age=0.0)
            if not isinstance(fresh, dict):
                return self.refresh_now(refresh)
            stored = fresh
            if self._adopt_if_newer(stored):
                return False

    def _read(self, max_age: float) -> dict[str, Any] | None | object:
        """The stored token; None when there is none; :data:`_UNREADABLE` or
        :data:`_FAILED` when it cannot be read as a token, or at all."""
        try:
            return self.store.read_stored(max_age)
        except TokenFormatError:
            return _UNREADABLE
        except StoreError:
            return _FAILED

    def _wait_for(self, holder: str, deadline: float) -> dict[str, Any] | None | object:
        """Read every :data:`POLL` seconds until another bot's claim ends (its token is
        stored, the claim lapses or the store shows no readable token any more) or the
        deadline passes; return the last read."""
        log.info("Another bot is renewing the expired token; waiting for it")
        last: dict[str, Any] | None | object = _FAILED
        while self.clock.now() < deadline:
            self.sleep(POLL)
            read = self._read(max_age=0.0)
            if read is _FAILED:
                continue
            last = read
            if not isinstance(read, dict) or self.store.saved_since(read) or (
                    claim(read, self.clock.now(), LONGEST_CLAIM) != holder):
                break
        return last

    def _give_up_claim(self) -> None:
        """The claimer's refresh failed: remove its claim, so the others need not wait
        for it (only while the store still holds that claim; best effort)."""
        stored = self._read(max_age=0.0)
        if isinstance(stored, dict) and claim(stored, self.clock.now(), LONGEST_CLAIM) == (
                self.me):
            self.store.write_claim(stored, None)
