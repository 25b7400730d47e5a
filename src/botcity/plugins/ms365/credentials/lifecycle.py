"""One owner of "a usable shared token": :class:`TokenLifecycle`.

The scenario: many bot processes (on many Runners) load the same stored token, so their
access tokens expire at the same moment. Refreshing at expiry, they would all refresh at
once (a burst on Microsoft's token endpoint, which throttles and detects loops:
AADSTS50196) and race to write the store. Each process has one lifecycle; the connection
calls it before every Graph request (:meth:`TokenLifecycle.before_request`), and it alone
decides when to renew, looks at the store, claims, refreshes, writes the next generation,
postpones after a failure, backs off a request loop, falls back to this machine when
Maestro is down, and holds the state of a token Microsoft refused (with its one alert).
*When* (the refresh window and each bot's moment in it) is ``renewal.py``'s, pure and
clock-driven; *how a write is made safe* (over a fresh read, never over a newer or removed
token) is the store's (``stores.py``).

The rules each lifecycle keeps:

1. **Renew early, at a moment of one's own.** Each bot renews its access token before it
   expires, at a moment drawn at random in the token's refresh window (``renewal.py``).
2. **The last renewer goes first, alone.** The bot that renewed the token draws its
   moment in the first tenth of the next window and refreshes without looking; the others
   draw in the rest and look first. While it runs, it renews alone.
3. **Look before refreshing** (all but the leader). When due, read the store once. If
   another bot stored a newer token that is not yet due, use it: no refresh.
4. **One renews an expired token for all.** A bot that finds the token expired (bots that
   start after a quiet period, together) adds a *claim* note for the token's generation
   beside it and reads the store; the first live claim in the order the store keeps them
   renews, and the others wait (reading every :data:`.renewal.POLL` seconds) for the
   token it stores. A claimer that fails, or cannot store its token, adds a *release*
   note, and the next claim in order renews at once (its claim holds a whole
   :data:`.renewal.CLAIM_SECONDS` from then); a claimer that was killed holds the others
   until its claim lapses. Nobody waits for claims to settle: a claim that reaches the
   store late comes after the others.
   *A lone bot does not claim*: when the token's last :data:`.renewal.QUIET_STARTS`
   renewals met no other bot (the token says so: ``quiet``) and nothing in the store
   says another bot is starting (a claim, a *herd* note, rival renewals), the bot renews
   at once. Bots that do meet say so: a renewal that saw another claim writes
   ``quiet`` 0, a bot that claimed and then took a renewal that did not see its claim
   adds a *herd* note, and two renewals of one token are rivals; each makes the next
   start claim again.
5. **Add what is newer; never write over another's** (the store's
   :meth:`~.stores.TokenStore.save_renewed`): in Maestro the new token is *added* beside
   the one it renews (a note naming its generation, sending no other key), and every
   bot takes the first renewal of each generation, in the store's order, as the next
   link (:func:`.tokens.follow`). Every :data:`.stores.FOLD_AT`-th renewal is written over
   the token instead, over a read made right before it, folding the renewals in. In a
   local file, the new token is written over a read made right before it. A token is
   never written where there is none any more (``logout`` stays logged out), nor over a
   value that cannot be read.

Notes are *added* (a Maestro key of their own, a file of their own) and never rewrite the
token or any other key, so no claim or renewal can undo a renewed token, bring a
logged-out one back (a renewal of a token that is gone leads nowhere), or revert an
operator's edit. The credential is written whole only by a person's sign-in or ``logout``,
by a token kept on a Runner while Maestro was down, and by one renewal in
:data:`.stores.FOLD_AT` (Maestro has no conditional write).

The concurrency rule in plain words: one thread of a process renews at a time (a lock);
between processes nothing is locked, and the order in which the store keeps the claims
and the renewals decides which bot renews and which token is the next.

Cost: nothing while the access token is valid and not due. The leader's renewal: one
token request and one write (added). A bot that finds another's token: one read. A lone
bot's start on an expired token: its start's read, one token request, one write (what a
hand-written bot pays). A herd's start: a claim (one added note) and a read for each bot;
one token request and a write for the first; a read every half second for the others
until its token is stored. No fixed wait. A folding renewal: one read more. When the
store cannot be read, the bot refreshes on its own: being able to work matters more than
saving a request. ``MS365_COORDINATE_REFRESH=0`` turns rules 1-4 off (each bot refreshes
at expiry without looking).

What it guarantees: two bots refresh the same token only when one comes due while the
other's refresh is under way (read, token request, write: ``d``, about a second against
Microsoft and Maestro): with ``N`` bots over a window ``W`` and no leader, about
``(N - 1) * d / W`` (16 bots, hour-long tokens, ``d`` = 2 s: 5%). At a start on an
expired token, one bot refreshes, and a second only when the first's claim lapsed or was
given up while it still renewed, or (when the store does not list the claims in the order
they reached it) when a claim that reached it late sorts first; except on a credential
that had been a lone bot's, where every bot of the first herd start refreshes once (and
the next start claims). An extra refresh costs a token request, never the authorization:
Microsoft does not revoke a refresh token when it issues a new one. A renewal that is
added can undo nothing, however late it reaches Maestro. A whole write (a fold, a
sign-in, ``logout``) reverts an edit an operator makes to another key of the credential,
or a logout, only when that edit reaches Maestro between the write's read and the write
itself (about a round trip and the write's own time); keep the token in a credential of
its own (``token_label``) and an edit is never at risk.

Maestro down: at start, a still-valid token kept on this machine (:class:`Fallback`) lets
the bot work until it expires; a renewed token Maestro cannot take is kept there and
written to Maestro at the next start, only over an older token of the same app and
account. A refusal by Microsoft (a dead refresh token, conditional access, a wrong
secret): the error is raised to the bot, the operator gets one alert, and a token a
person must renew is not tried again until a sign-in.

Everything reaches Microsoft through ``refresh`` (given by the connection: ask for a new
token and put it in the store's memory, raising the plugin's errors), so the lifecycle
runs against an in-memory store, a fake clock and a fake ``refresh`` in the tests.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ._clock import CLOCK, Clock
from .errors import (
    AADSTS,
    AuthorizationError,
    AuthorizationRequired,
    MS365CredentialsError,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    TokenFormatError,
)
from .persistence import CLAIM, HERD, REFUSED, RELEASE, Fallback, Note
from .renewal import (
    CLAIM_SECONDS,
    LONGEST_CLAIM,
    LOOK_AGE,
    POLL,
    QUIET_STARTS,
    SEE_OWN_CLAIM,
    Schedule,
)
from .stores import TokenStore, UnsavedToken
from .tokens import (
    fresh_enough,
    generation,
    identity,
    meta,
    newest_access_token,
    usable_for,
)

log = logging.getLogger(__name__)

#: What :meth:`TokenLifecycle._read` gives for a value that is not a token, and for a
#: failed read.
_UNREADABLE, _FAILED = object(), object()
#: How long to wait before retry ``n`` after Azure AD detected a request loop (AADSTS50196).
LOOP_BACKOFF = (2.0, 5.0, 10.0, 20.0, 30.0)


def _not_before(claims: str | None) -> float:
    """The time a claims challenge's token must be issued after (its ``nbf``; 0: none)."""
    try:
        value = json.loads(claims or "{}").get("access_token", {}).get("nbf", {}).get("value")
        return float(value) if value is not None else 0.0
    except (ValueError, AttributeError, TypeError):
        return 0.0


def _no_refresh() -> None:
    raise RuntimeError("TokenLifecycle.refresh was not set (the connection sets it)")


class TokenLifecycle:
    """The shared token as one bot process sees it (see the module's docstring).

    ``refresh()`` asks Microsoft for a new token and puts it in ``store``'s memory (the
    connection sets it); ``fallback``: where a token waits when Maestro cannot take it
    (Maestro stores only); ``coordinate``: follow rules 1-4; ``retry_budget``: seconds a
    renewal may spend waiting out a request loop (AADSTS50196); ``alert(error)``:
    tell the operator that Microsoft refused a renewal (not for a token a person must renew
    refused inside :meth:`check`: its caller reports that, with more to say)."""

    def __init__(self, store: TokenStore, *, fallback: Fallback | None = None,
                 coordinate: bool = True, retry_budget: float = 60.0,
                 alert: Callable[[AuthorizationError], None] | None = None,
                 clock: Clock = CLOCK, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 refresh: Callable[..., None] = _no_refresh) -> None:
        self.store = store
        self.fallback = fallback
        self.coordinate = coordinate and store.shared
        self.retry_budget = retry_budget
        self.alert = alert
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.refresh = refresh
        self.schedule = Schedule(clock=clock)
        #: How long this bot's claims on an expired token hold.
        self.claim_seconds = CLAIM_SECONDS
        #: This bot's name in claims (no meaning outside the store).
        self.me = secrets.token_hex(6)
        #: What the last renewal did with the new token (:meth:`.TokenStore.save_renewed`).
        self.outcome = ""
        #: How many tokens this process got from Microsoft (benchmarks and tests count).
        self.refresh_count = 0
        #: Set when Microsoft refused the refresh token: dead until a person signs in.
        self.rejected: AuthorizationRequired | None = None
        #: The app's secret is unknown (Maestro was down when the bot started): the token
        #: kept on this machine works until it expires, and cannot be renewed.
        self.secret_unknown = False
        self._lock = threading.RLock()
        self._checking = False
        self._ask_anyway = False
        self._warned = False
        #: The access token Graph refused before its expiry (its secret; never logged).
        self._refused_access: str | None = None
        #: While renewing a token Graph refused: a stored token issued before this (epoch
        #: seconds) is not taken.
        self._fresh_after: float | None = None
        #: How many claims this process made (each claim has a name of its own).
        self._claims = 0

    # -- at start ------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the stored token into the store's memory; False when none is stored. When
        Maestro is unreachable, a still-valid token kept on this machine is used (or
        :class:`StoreUnavailable` says neither can be had); a token kept here while Maestro
        was down is written to Maestro first when it is newer."""
        store = self.store
        try:
            stored = store.read_stored(max_age=None)
        except StoreUnavailable as exc:
            if self.fallback is None:
                raise
            local = self.fallback.kept()
            if local is None or not fresh_enough(local, self.clock.now()):
                raise StoreUnavailable(f"{exc} No still-valid token was kept on this machine "
                                       f"either ({self.fallback.where}).",
                                       status=exc.status) from None
            log.warning("%s Using the token kept on this machine (saved %s, %s) until "
                        "Maestro is back.", exc, meta(local).get("saved_at", "?"),
                        self.fallback.where)
            store.adopt(local)
            return True
        stored = self._reconcile(stored)
        if stored is None:
            log.debug("No token in %s", store.location)
            return False
        store.adopt(stored)
        self._started_beside_a_renewal(stored)
        return True

    def _started_beside_a_renewal(self, stored: dict[str, Any]) -> None:
        """A bot that starts within a claim's life of a renewal that met nobody started
        with its renewer (a herd whose claims the renewer did not see): a herd note says
        so, and the next start claims."""
        newest = newest_access_token(stored)
        if not (self.coordinate and self.store.quiet and newest) or self.store.read_only:
            return
        if self.clock.now() - float(newest.get("cached_at", 0)) < self.claim_seconds:
            self._met_herd(f"{self.me}0")

    def kept_client_id(self) -> str | None:
        """The app of a still-valid token kept on this machine (None: none), for a bot whose
        app secret is in an unreachable Maestro: its access token needs no secret."""
        local = self.fallback.kept() if self.fallback is not None else None
        if local is None or not fresh_enough(local, self.clock.now()):
            return None
        return identity(local)[0]

    def _reconcile(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """A token kept on this machine goes to Maestro only over an older token of the
        same app and account; otherwise it is obsolete and removed."""
        if self.fallback is None or self.store.read_only:
            return stored
        local = self.fallback.kept()
        if local is None:
            return stored
        if stored is None or identity(local) != identity(stored) or (
                generation(local) <= generation(stored)):
            log.info("The token kept on this machine (%s) is not newer than %s, or not "
                     "for the same app and account, or was logged out: removed it",
                     self.fallback.where, self.store.location)
            self.fallback.discard()
            return stored
        try:
            fresh = self.store.read_stored(max_age=0.0)  # right before the write
            if fresh is not None and (identity(local) != identity(fresh) or (
                    generation(local) <= generation(fresh))):
                self.fallback.discard()
                return fresh
            self.store.put(local)
        except StoreError as exc:
            log.warning("The token kept on this machine while Maestro was unreachable could "
                        "not be written to Maestro yet (%s); it stays in %s", exc,
                        self.fallback.where)
            return local
        self.fallback.discard()
        log.info("Wrote the token kept on this machine while Maestro was unreachable to %s",
                 self.store.location)
        return local

    # -- the hook before every request ----------------------------------------------------
    def before_request(self) -> bool:
        """Renew the access token when this bot's moment has come; True when the token
        held changed (the connection applies it). While the access token still works, a
        failed early renewal only postpones the next try to its expiry (the bot goes on;
        the error comes then, if it lasts)."""
        if self.rejected is not None:  # no refresh can work: use what is left of the token
            if self._access_token_works():
                return False
            if self._signed_in_elsewhere():
                return True
            raise self.rejected
        if not self.due():
            return False
        with self._lock:
            if not self.due():  # another thread of this bot renewed meanwhile
                return True
            token = self._held()
            try:
                self.renew()
            except MS365CredentialsError as exc:
                if token is None or float(token.get("expires_on", 0)) <= self.clock.now() + 1:
                    raise
                self.schedule.not_before_expiry(token)
                log.warning("Could not renew the access token before it expires (%s); going "
                            "on with it, and trying again when it expires in %.0f s", exc,
                            float(token["expires_on"]) - self.clock.now())
                return False
        return True

    def due(self) -> bool:
        """Whether this bot should renew the access token it holds now (rule 1)."""
        if not self.store.has_data:
            return False
        entry = self._held()
        if entry is None:
            return True
        if self.schedule.postponed(entry):
            return False
        held = {"AccessToken": {"held": entry}}
        if not self.coordinate:
            return not fresh_enough(held, self.clock.now())
        if usable_for(held, self.clock.now()) <= 0:
            return True
        return self.schedule.due(entry)

    def check(self, *, app_only: bool = False, ask_anyway: bool = False) -> None:
        """Make sure the token can be used now, renewing it when its access token has
        expired; :class:`AuthorizationRequired` (no alert: the caller reports) when a
        person must sign in. ``ask_anyway``: ask Microsoft even when another bot's renewal
        was refused (a person is about to sign in, and needs Microsoft's own answer: its
        conditional-access claims go with the sign-in)."""
        with self._lock:
            self._checking, self._ask_anyway = True, ask_anyway
            try:
                self._check(app_only)
            finally:
                self._checking, self._ask_anyway = False, False

    def _check(self, app_only: bool) -> None:
        store = self.store
        if self.rejected is not None:
            raise self.rejected
        if app_only:
            if not self._access_token_works():
                self.refresh_now()
            return
        if not store.has_data and not self.load():
            raise AuthorizationRequired.told("no-token", location=store.location)
        if self._access_token_works():
            return
        if not store.get_refresh_token():
            raise AuthorizationRequired.told("token-expired-no-refresh",
                                             location=store.location)
        self.renew()

    def refused_by_graph(self, why: str, claims: str | None = None,
                         sent: str | None = None) -> None:
        """Graph answered 401 to the access token held, which is valid by its expiry (a
        revoked session, a changed password, a location policy with ``claims``, Graph's
        continuous access evaluation challenge; a signing key rolled over without; ``why``:
        Graph's code and message). It is renewed as an expired one is: another bot's newer
        token when one was stored, else one refresh for every bot that met the same
        refusal (rule 4), which carries ``claims``; a token issued before the refusal is
        not taken from the store. ``sent``: the access token the refused request carried
        (when another thread renewed it meanwhile, nothing is done: the request is just
        repeated). When Microsoft then wants a person,
        :class:`AuthorizationRequired` says why (and the other bots find that in the
        store: a *refused* note, and do not each ask again)."""
        with self._lock:
            held = self._held()
            if held is None or held.get("secret") == self._refused_access or (
                    sent is not None and held.get("secret") != sent):
                return
            log.warning("Microsoft Graph refused the access token before its expiry (%s%s); "
                        "renewing it", why, ", a claims challenge" if claims else "")
            self._refused_access = held.get("secret")
            # another bot's newer token answers the refusal when issued no earlier than the
            # refused one (and after the event a claims challenge names: its "nbf"),
            # whenever this bot's own request was refused
            self._fresh_after = max(float(held.get("cached_at", 0) or 0),
                                    _not_before(claims))
            try:
                self.renew(refused=True, claims=claims)
            finally:
                self._fresh_after = None

    def refused_again(self, why: str) -> AuthorizationRequired:
        """Graph refused the renewed access token too: the account cannot be used without a
        person (the error, with its one alert; ``is_authenticated`` is False from now on)."""
        error = AuthorizationRequired.told("graph-refused-renewed",
                                           location=self.store.location, why=why,
                                           error="invalid_token")
        held = self._held()
        self._refused_access = held.get("secret") if held else None
        self.rejected = error
        if self.alert is not None:
            self.alert(error)
        return error

    def _signed_in_elsewhere(self) -> bool:
        """While refused: whether a person signed in again meanwhile (a newer token in the
        store, read at most once a minute); it is taken, and the refusal ends."""
        read = self._read(max_age=60.0)
        if not isinstance(read, dict) or not self.store.saved_since(read):
            return False
        self.store.adopt(read)
        if not self._access_token_works():
            return False
        log.info("A new token is in %s (a person signed in again); using it",
                 self.store.location)
        self.rejected = None
        self._refused_access = None
        return True

    def signed_in(self) -> None:
        """A person signed in: the new token replaced the stored one; nothing is refused
        any more, and nothing waits on this machine."""
        self.rejected = None
        self._refused_access = None
        if self.fallback is not None:
            self.fallback.discard()

    # -- renewing ------------------------------------------------------------------------
    def renew(self, *, refused: bool = False, claims: str | None = None) -> bool:
        """Get a usable access token: another bot's through the store, or a refreshed one
        (rules 2-5), one thread of this bot at a time: True when this bot refreshed
        (``refused``: Graph refused the one held, which counts as expired; ``claims``: the
        claims challenge the refresh must satisfy). When Azure AD
        detects a request loop (AADSTS50196: throttling, the token is fine), wait and look
        again, within the retry budget: another bot has often renewed meanwhile."""
        with self._lock:
            deadline = time.monotonic() + self.retry_budget
            for wait in (*LOOP_BACKOFF, None):
                try:
                    refreshed = self._renew_once(refused, claims)
                    break
                except ServiceUnavailable as exc:
                    if exc.code != "AADSTS50196" or wait is None or (
                            time.monotonic() + wait > deadline):
                        raise
                    log.warning("Microsoft throttles a request loop (AADSTS50196); looking "
                                "again in %.0f s", wait)
                    self.sleep(wait)
            self.rejected = None
            return refreshed

    def refresh_now(self, claims: str | None = None) -> bool:
        """Refresh now (satisfying ``claims``, a claims challenge, when given), then write
        the new token over a read made after the refresh (rule 5); what happened to it is
        in :attr:`outcome`."""
        with self._lock:
            self._refresh(claims)
            self.schedule.leading = True
            self.outcome = self._save()
            if self.outcome == "newer kept":
                self.schedule.leading = False
            return True

    def _refresh(self, claims: str | None = None) -> None:
        """``refresh()``, with what a refusal means for this bot and its operator."""
        if self.secret_unknown and self.store.client_type != "public":
            raise StoreUnavailable(
                "The access token expired, and the client secret is kept in Maestro, which "
                "was unreachable when the bot started. Run the bot again once Maestro is "
                "back.")
        try:
            if claims is None:
                self.refresh()
            else:
                self.refresh(claims)
        except AuthorizationError as exc:
            if isinstance(exc, AuthorizationRequired):
                self.rejected = exc
            # inside check(), the caller reports a token a person must renew itself
            if self.alert is not None and not (
                    self._checking and isinstance(exc, AuthorizationRequired)):
                self.alert(exc)
            raise
        self.refresh_count += 1

    def _save(self) -> str:
        try:
            return self.store.save_renewed()
        except UnsavedToken as unsaved:
            return self._unsaved(unsaved.error, unsaved.text)

    def _unsaved(self, exc: StoreError, text: str) -> str:
        """The store failed while saving a renewed token (``text``): keep it on this
        machine (Maestro stores), warning once; other stores raise."""
        if self.fallback is None:
            raise exc
        kept = self.fallback.keep(text)
        if not self._warned:
            self._warned = True
            log.warning("%s The renewed token is %s and will be written to Maestro at the "
                        "next start.", exc, f"kept in {self.fallback.where}" if kept else
                        "in this bot's memory only")
        return "kept on this machine" if kept else "in memory only"

    def _renew_once(self, refused: bool = False, claims: str | None = None) -> bool:
        store = self.store
        if not self.coordinate:
            return self.refresh_now(claims)
        expired = refused or usable_for(store.cache_snapshot(), self.clock.now()) <= 0
        if self.schedule.leading and not expired:
            return self.refresh_now(claims)  # rule 2: the leader does not look
        stored = self._read(max_age=LOOK_AGE if expired else 0.0)
        if stored is _FAILED:
            log.warning("Cannot read %s before refreshing; refreshing without looking",
                        store.location)
            return self.refresh_now(claims)
        if isinstance(stored, dict):
            if self._adopt_if_newer(stored):
                return False
            if expired and not refused and claims is None and self._alone(stored):
                self.store.quiet += 1
                return self.refresh_now()  # rule 4's exception: a lone bot's start
            if expired:
                return self._renew_expired(stored, claims)
        # not due for another, or nothing (readable) stored: refresh; the write after it
        # reads the store again and declines a removed or unreadable value
        return self.refresh_now(claims)

    def _adopt_if_newer(self, stored: dict[str, Any]) -> bool:
        """Take ``stored`` when another bot saved it after the token held and it is not
        due yet; True when taken."""
        if not self.store.saved_since(stored):
            return False
        self.schedule.leading = False
        # held from now on either way: a refresh starts from its refresh token, which may
        # be a newer consent's
        self.store.adopt(stored)
        newest = newest_access_token(stored)
        fresh_after = self._fresh_after
        if newest is None or usable_for(stored, self.clock.now()) <= 0 or (
                self.schedule.due(newest)) or (
                fresh_after is not None and float(newest.get("cached_at", 0)) < fresh_after):
            return False  # newer but already due (or issued before Graph refused ours)
        log.info("Another bot renewed the token; using it from %s", self.store.location)
        return True

    def _alone(self, stored: dict[str, Any]) -> bool:
        """Whether the token's last :data:`.renewal.QUIET_STARTS` renewals met no other
        bot, and nothing in the store says another is starting now or started with the
        last renewer (a claim, a herd note, rival renewals)."""
        start = generation(stored)
        return self.store.quiet >= QUIET_STARTS and not self.store.crowded and not any(
            n.generation == start and n.kind in (CLAIM, HERD) for n in self.store.notes())

    def _renew_expired(self, stored: dict[str, Any], claims: str | None = None) -> bool:
        """Rule 4: claim the expired token (a note: it rewrites nothing); the first live
        claim in the store's order renews, the others wait for its token, or for it to give
        up (a release note) or lapse, when the next claim in order renews. When Microsoft
        refused the claimer's renewal for want of a person (a refused note), the others
        stop too, without asking again."""
        start = generation(stored)
        self._claims += 1
        me = f"{self.me}{self._claims:x}"  # a name of its own: an earlier release is not it
        began = self.monotonic()
        try:
            self.store.add_note(Note(CLAIM, start, me, self.clock.now() + self.claim_seconds))
        except StoreError:
            return self.refresh_now(claims)
        deadline = began + 2 * self.claim_seconds + POLL
        waited_on: str | None = None
        #: when a claim that was not first at this bot's first look became first
        entitled: dict[str, float] = {}
        while True:
            read = self._read(max_age=0.0)
            if not isinstance(read, dict):
                return self.refresh_now(claims)  # no readable token any more: for itself
            if self._adopt_if_newer(read):
                if self.store.quiet:  # its renewer did not see this bot's claim
                    self._met_herd(me)
                return False
            now, waited = self.clock.now(), self.monotonic() - began
            notes = [n for n in self.store.notes() if n.generation == start]
            refused = [n for n in notes if n.kind == REFUSED]
            if refused and not self._ask_anyway:
                code = next((n.text for n in refused if n.text), None)
                self.rejected = AuthorizationRequired.told(
                    "refused-for-another-bot", location=self.store.location, code=code,
                    reason=f"{code}: {AADSTS[code].meaning}" if code in AADSTS else (
                        code or "its message has Microsoft's reason"))
                raise self.rejected
            gave_up = {n.by for n in notes if n.kind == RELEASE}
            claimed = [n for n in notes if n.kind == CLAIM and n.by not in gave_up]
            if not any(n.by == me for n in claimed) and waited < SEE_OWN_CLAIM:
                self.sleep(POLL)  # the store shows this bot's claim a moment later
                continue
            first = next((n for n in claimed if n.by == me or (n.at <= now + LONGEST_CLAIM
                          and now < max(n.at, entitled.get(n.by, 0.0) + self.claim_seconds))),
                         None)
            if first is not None and waited_on is not None and first.by != waited_on:
                # it became first (the one before gave up or lapsed): its claim holds a
                # whole claim's time from now, however long ago it was made
                entitled.setdefault(first.by, now)
            if first is None or first.by == me or began + waited >= deadline:
                met = self.store.crowded or waited_on is not None or any(
                    n.by != me for n in claimed) or any(n.kind == HERD for n in notes)
                self.store.quiet = 0 if met else self.store.quiet + 1
                return self._renew_claimed(start, me, claims)
            waited_on = first.by
            self.sleep(POLL)

    def _renew_claimed(self, start: int, me: str, claims: str | None = None) -> bool:
        """Refresh for the others; when that fails, or its token cannot be stored, say so
        (a release note), so that the next claim in order goes on at once; when Microsoft
        wants a person, say that (a refused note), so that nobody asks again."""
        try:
            refreshed = self.refresh_now(claims)
        except AuthorizationRequired as exc:
            # Microsoft's answer (not a reason of this bot's own) stops the others too
            self._release(start, me, REFUSED if exc.error else RELEASE, exc.code or "")
            raise
        except Exception:
            self._release(start, me)
            raise
        if self.outcome not in ("saved", "newer kept"):
            self._release(start, me)
        return refreshed

    def _met_herd(self, me: str) -> None:
        """Say that this bot waited on the renewal of the token held (a note): the next
        start on it claims before renewing, as a herd's must."""
        try:
            self.store.add_note(Note(HERD, self.store.generation, me, self.clock.now()))
        except StoreError as exc:
            log.debug("Could not note the herd on %s: %s", self.store.location, exc)

    def _release(self, start: int, me: str, kind: str = RELEASE, code: str = "") -> None:
        try:
            self.store.add_note(Note(kind, start, me, self.clock.now(), code))
        except StoreError as exc:  # the claim lapses instead
            log.debug("Could not give up the claim on %s: %s", self.store.location, exc)

    def _read(self, max_age: float) -> dict[str, Any] | None | object:
        """The stored token; None when there is none; :data:`_UNREADABLE` or
        :data:`_FAILED` when it cannot be read as a token, or at all."""
        try:
            return self.store.read_stored(max_age)
        except TokenFormatError:
            return _UNREADABLE
        except StoreError:
            return _FAILED

    # -- the token held ------------------------------------------------------------------
    def _held(self) -> dict[str, Any] | None:
        return self.store.get_access_token()

    def _access_token_works(self) -> bool:
        """Whether the access token held is good for a while yet (``tokens.margin``), and
        not one Graph refused."""
        token = self._held()
        if not token or token.get("secret") == self._refused_access:
            return False
        return fresh_enough({"AccessToken": {"held": token}}, self.clock.now())
