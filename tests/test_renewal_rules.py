"""The lifecycle's rules (lifecycle.py) as unit tests: a store on an in-memory persistence,
a fake clock, and a refresh that mints a token the way msal adds one. No server, no sleep."""

from __future__ import annotations

import json

import pytest

from botcity.plugins.ms365.credentials._clock import Clock
from botcity.plugins.ms365.credentials.errors import AuthorizationRequired, StoreUnavailable
from botcity.plugins.ms365.credentials.lifecycle import TokenLifecycle
from botcity.plugins.ms365.credentials.persistence import (
    CLAIM,
    HERD,
    REFUSED,
    RELEASE,
    Note,
    TextPersistence,
    obsolete,
)
from botcity.plugins.ms365.credentials.renewal import CLAIM_SECONDS, POLL, QUIET_STARTS
from botcity.plugins.ms365.credentials.stores import TokenStore
from botcity.plugins.ms365.credentials.tokens import generation, with_meta
from conftest import START, FakeClock

HOME = "uid.tid"


class InMemory(TextPersistence):
    """A store other bots share: reads and writes are counted; ``on_read`` lets a test act
    between a bot's read and its write (another bot, an operator). Notes are kept in the
    order they were added; ``late`` notes are seen by reads only after that many reads
    (a store that shows a write a moment later). A read within ``max_age`` of the last
    one (by the fake clock) is answered from it, as the Maestro vault's are."""

    location = "memory"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.text: str | None = None
        self.reads = self.writes = self.added = 0
        self.on_read = None
        self.fail = False
        self.notes_kept: list[Note] = []
        self.late = 0
        self._hidden: list[list] = []  # [reads left, note]
        self._read_at: float | None = None

    def load(self, max_age=None):
        if self._read_at is not None and (max_age is None or (
                0 < max_age and self.clock.now() - self._read_at <= max_age)):
            return self.text
        self.reads += 1
        self._read_at = self.clock.now()
        if self.fail:
            raise StoreUnavailable("down", status=503)
        for entry in self._hidden:
            entry[0] -= 1
        self._seen = [n for n in self.notes_kept
                      if not any(h[1] is n and h[0] > 0 for h in self._hidden)]
        text = self.text
        if self.on_read:
            self.on_read()
        return text

    def save(self, text, *, generation=None):
        if self.fail:
            raise StoreUnavailable("down", status=503)
        self.writes += 1
        self.text = text
        self._read_at = None
        if generation is not None:
            dropped = obsolete(self.notes_kept, generation)
            self.notes_kept = [n for n in self.notes_kept if n not in dropped]

    def remove(self):
        had, self.text = self.text is not None, None
        return had

    def notes(self):
        return list(getattr(self, "_seen", self.notes_kept))

    def add_note(self, note):
        if self.fail:
            raise StoreUnavailable("down", status=503)
        self.added += 1
        self.notes_kept.append(note)
        if self.late:
            self._hidden.append([self.late, note])
        self._read_at = None

    def put_note(self, kind, gen, by, at):
        """Another bot's note."""
        self.notes_kept.append(Note(kind, gen, by, at))
        self._seen = list(self.notes_kept)
        self._read_at = None

    def kinds(self):
        return [(n.kind, n.generation, n.by) for n in self.notes_kept]


def token(issued: float, life: int = 3600, gen: int = 0, secret: str = "at0",
          quiet: int = 0) -> str:
    """A stored token as the plugin writes it: one account, one access and refresh token."""
    cache = {
        "AccessToken": {"at": {"secret": secret, "home_account_id": HOME, "environment": "e",
                               "client_id": "app", "target": "User.Read", "realm": "tid",
                               "credential_type": "AccessToken",
                               "cached_at": str(int(issued)),
                               "expires_on": str(int(issued) + life)}},
        "RefreshToken": {"rt": {"secret": "rt", "home_account_id": HOME, "environment": "e",
                                "client_id": "app", "credential_type": "RefreshToken"}},
        "Account": {"acc": {"home_account_id": HOME, "environment": "e",
                            "username": "bot@contoso.com"}},
    }
    return with_meta(cache, {"generation": gen, **({"quiet": quiet} if quiet else {})})


class Bot:
    """A bot: its store on the shared persistence, its clock, and a refresh that mints a
    new access token at the clock's time."""

    def __init__(self, shared: InMemory, clock: FakeClock, *,
                 retry_budget: float = 60.0) -> None:
        self.store = TokenStore(shared, clock=clock)
        self.life = TokenLifecycle(self.store, clock=clock, sleep=clock.sleep,
                                   monotonic=clock.now,
                                   retry_budget=retry_budget, refresh=lambda: self.refresh())
        self.clock = clock
        self.refreshes = 0
        assert self.store.load_token()

    def refresh(self) -> None:
        self.refreshes += 1
        with self.store._lock:
            self.store._cache["AccessToken"] = json.loads(token(
                self.clock.now(), secret=f"minted{self.refreshes}"))["AccessToken"]
            self.store._has_state_changed = True

    def renew(self) -> bool:
        return self.life.renew()

    def held(self) -> str:
        return next(iter(self.store._cache["AccessToken"].values()))["secret"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def shared(clock) -> InMemory:
    return InMemory(clock)


def stored(shared: InMemory) -> dict:
    return json.loads(shared.text or "{}")


# -- rule 2: the leader renews without looking -----------------------------------------------


def test_the_leader_refreshes_then_reads_once_and_writes_the_next_generation(shared, clock):
    shared.text = token(START - 3000, gen=4)
    bot = Bot(shared, clock)
    bot.life.schedule.leading = True
    shared.reads = 0

    assert bot.renew() is True

    assert (bot.refreshes, shared.reads, shared.writes) == (1, 1, 1)
    assert generation(stored(shared)) == 5
    assert bot.life.outcome == "saved"


# -- rule 3: followers look first ------------------------------------------------------------


def test_a_follower_takes_a_newer_token_with_one_read(shared, clock):
    shared.text = token(START - 3000, gen=1)
    bot = Bot(shared, clock)
    shared.text = token(START - 10, gen=2, secret="theirs")  # another bot renewed
    shared.reads = 0

    assert bot.renew() is False

    assert (bot.refreshes, shared.reads, shared.writes) == (0, 1, 0)
    assert bot.held() == "theirs" and bot.store.generation == 2


# -- rule 4: an expired token is renewed by one ---------------------------------------------


def noted(shared: InMemory, kind: str, gen: int, bot: Bot) -> bool:
    """Whether ``bot`` added a note of ``kind`` on generation ``gen`` (each claim of a bot
    has a name of its own, starting with the bot's)."""
    return any(k == kind and g == gen and by.startswith(bot.life.me)
               for k, g, by in shared.kinds())


def expired(shared: InMemory, gen: int = 1) -> None:
    shared.text = token(START - 4000, gen=gen)


def test_a_bot_alone_claims_then_renews_without_waiting(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.reads = 0

    assert bot.renew() is True

    assert bot.refreshes == 1
    assert (shared.reads, shared.writes, shared.added) == (2, 1, 1), (
        "the start's read serves; the claim (a note), a read that sees it, a read before "
        "the write, the write")
    assert clock.now() == START, "no wait"
    assert generation(stored(shared)) == 2 and bot.life.outcome == "saved"
    assert shared.kinds() == [], "the renewed token's write drops the claim"


def test_the_first_claim_renews_for_all(shared, clock):
    expired(shared)
    bots = [Bot(shared, clock) for _ in range(3)]

    def the_others_claim_too():  # they claim right after the first one
        for bot in bots[1:]:
            if (CLAIM, 1, bot.life.me) not in shared.kinds():
                shared.put_note(CLAIM, 1, bot.life.me, clock.now() + CLAIM_SECONDS)

    shared.on_read = the_others_claim_too
    assert bots[0].renew() is True
    shared.on_read = None
    assert [b.renew() for b in bots[1:]] == [False, False]

    assert [b.refreshes for b in bots] == [1, 0, 0]
    assert {b.held() for b in bots} == {bots[0].held()}
    assert generation(stored(shared)) == 2
    assert shared.kinds() == [], "the renewed token's write drops the claims"
    assert clock.now() - START < 2 * POLL, "nobody waited longer than a poll or two"


def test_a_bot_that_finds_another_s_claim_waits_for_its_token(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "other", START + CLAIM_SECONDS)
    polls = []

    def the_other_stores_its_token():
        polls.append(clock.now())
        if len(polls) == 3:  # it took a while
            shared.text = token(clock.now(), gen=2, secret="theirs")

    shared.on_read = the_other_stores_its_token

    assert bot.renew() is False

    assert bot.refreshes == 0 and shared.writes == 0
    assert bot.held() == "theirs"
    assert noted(shared, CLAIM, 1, bot), "it claimed, after the other"


def test_a_lone_bot_renews_an_expired_token_without_claiming(shared, clock):
    shared.text = token(START - 4000, gen=1, quiet=QUIET_STARTS)
    bot = Bot(shared, clock)
    shared.reads = 0

    assert bot.renew() is True

    assert (bot.refreshes, shared.added, shared.writes) == (1, 0, 1), "no claim"
    assert stored(shared)["botcity"]["quiet"] == QUIET_STARTS + 1
    assert clock.now() == START, "no wait"


@pytest.mark.parametrize("sign", [CLAIM, HERD])
def test_a_lone_bot_claims_when_the_store_says_another_is_there(shared, clock, sign):
    shared.text = token(START - 4000, gen=1, quiet=QUIET_STARTS)
    bot = Bot(shared, clock)
    shared.put_note(sign, 1, "other", START + CLAIM_SECONDS if sign == CLAIM else START)
    if sign == CLAIM:
        shared.on_read = lambda: setattr(shared, "text", token(
            clock.now(), gen=2, secret="theirs", quiet=QUIET_STARTS + 1)) if (
            clock.now() > START) else None

    bot.renew()

    assert bot.life._claims == 1, "it claimed (the claim may be gone with the renewal's write)"


def test_a_claimed_renewal_that_met_another_claim_says_the_credential_is_shared(
        shared, clock):
    shared.text = token(START - 4000, gen=1, quiet=1)
    bot = Bot(shared, clock)
    shared.on_read = lambda: shared.put_note(CLAIM, 1, "late", clock.now() + CLAIM_SECONDS) if (
        not any(by == "late" for _, _, by in shared.kinds())) and noted(
        shared, CLAIM, 1, bot) else None

    assert bot.renew() is True

    assert "quiet" not in stored(shared)["botcity"], "quiet 0: the next start claims"


def test_a_bot_its_renewer_did_not_see_leaves_a_herd_note(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "other", START + CLAIM_SECONDS)
    polls = []

    def the_other_stores_a_token_that_met_nobody():
        polls.append(clock.now())
        if len(polls) == 2:
            shared.text = token(clock.now(), gen=2, secret="theirs", quiet=1)

    shared.on_read = the_other_stores_a_token_that_met_nobody

    assert bot.renew() is False

    assert bot.held() == "theirs"
    assert noted(shared, HERD, 2, bot), "the next start on generation 2 claims"


def test_a_claim_that_lapses_is_taken_over(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "gone", START + 3)  # a claimer that was killed

    assert bot.renew() is True

    assert bot.refreshes == 1 and generation(stored(shared)) == 2
    assert 3 <= clock.now() - START <= 3 + POLL, "it waited for the claim to lapse, no longer"


def test_a_claim_given_up_hands_over_at_once(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "failed", START + CLAIM_SECONDS)
    shared.put_note(RELEASE, 1, "failed", START)

    assert bot.renew() is True
    assert bot.refreshes == 1 and clock.now() == START


def test_a_claim_timed_by_a_clock_far_ahead_is_ignored(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "fast", START + 7200)

    assert bot.renew() is True
    assert clock.now() - START < 1, "no waiting on a claim that cannot be honest"


def test_a_bot_reads_again_until_it_sees_its_own_claim(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.late = 2  # the store shows the claim only to the second read after it took it

    assert bot.renew() is True
    assert bot.refreshes == 1 and clock.now() - START == POLL


def test_a_failed_refresh_gives_its_claim_up(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)

    def refused() -> None:
        raise RuntimeError("Microsoft refused")

    bot.refresh = refused  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        bot.renew()
    assert noted(shared, RELEASE, 1, bot), "the next claim need not wait"
    assert json.loads(shared.text)["AccessToken"] == json.loads(token(
        START - 4000))["AccessToken"], "the stored token itself is as it was"


def test_a_claimer_that_cannot_store_its_token_gives_its_claim_up(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    save = shared.save

    def refused_write(text, *, generation=None):
        raise StoreUnavailable("Maestro answered HTTP 500", status=500)

    shared.save = refused_write  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        bot.renew()  # a plain store raises; the Maestro store keeps it on this machine
    shared.save = save  # type: ignore[method-assign]
    assert noted(shared, RELEASE, 1, bot)


def test_a_claimer_refused_for_want_of_a_person_stops_the_others_too(shared, clock):
    """Continuous access evaluation: Microsoft answers the claimer's refresh (with Graph's
    claims challenge) that a person must sign in (a revoked session). It says so in a
    refused note; a bot waiting for its token stops with the same error, asking nothing."""
    expired(shared)
    claimer, waiter = Bot(shared, clock), Bot(shared, clock)

    def a_person_must_sign_in() -> None:  # Microsoft's answer, as errors.explain makes it
        raise AuthorizationRequired("AADSTS50173: the grant was revoked",
                                    error="invalid_grant", code="AADSTS50173")

    claimer.refresh = a_person_must_sign_in  # type: ignore[method-assign]
    with pytest.raises(AuthorizationRequired):
        claimer.renew()
    assert noted(shared, REFUSED, 1, claimer)

    with pytest.raises(AuthorizationRequired) as caught:
        waiter.renew()
    assert waiter.refreshes == 0, "it did not ask Microsoft again"
    assert "botcity-ms365 login" in str(caught.value)
    assert waiter.life.rejected is not None, "nor will it before a person signs in"


def test_a_claimer_s_own_missing_refresh_token_does_not_stop_the_others(shared, clock):
    """A reason of the claimer's own (its cache has no refresh token for the account) is
    not Microsoft's refusal: it gives its claim up, and the next bot renews."""
    expired(shared)
    claimer, other = Bot(shared, clock), Bot(shared, clock)

    def no_refresh_token_here() -> None:
        raise AuthorizationRequired("The stored token has no refresh token for the account.")

    claimer.refresh = no_refresh_token_here  # type: ignore[method-assign]
    with pytest.raises(AuthorizationRequired):
        claimer.renew()
    assert noted(shared, RELEASE, 1, claimer) and not noted(shared, REFUSED, 1, claimer)
    assert other.renew() is True and other.refreshes == 1


def test_a_claim_never_undoes_what_another_bot_stored(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)

    def refused_while_another_saves() -> None:
        shared.text = token(clock.now(), gen=2, secret="theirs")
        raise RuntimeError("Microsoft refused")

    bot.refresh = refused_while_another_saves  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        bot.renew()
    assert generation(stored(shared)) == 2 and "theirs" in shared.text
    assert shared.writes == 0, "claims and releases are notes: the token is never rewritten"


def test_a_logout_during_a_claimed_refresh_is_not_undone(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    original = bot.refresh

    def refresh_while_logged_out() -> None:
        original()
        shared.text = None

    bot.refresh = refresh_while_logged_out  # type: ignore[method-assign]
    assert bot.renew() is True
    assert shared.text is None and bot.life.outcome == "not written (removed)"


def test_a_newer_token_stored_during_a_claimed_refresh_is_kept(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    original = bot.refresh

    def refresh_while_another_saves() -> None:
        original()
        shared.text = token(clock.now(), gen=2, secret="theirs")

    bot.refresh = refresh_while_another_saves  # type: ignore[method-assign]
    bot.renew()
    assert bot.life.outcome == "newer kept"
    assert "theirs" in shared.text and bot.held() == "theirs"


def test_a_logout_while_waiting_for_another_s_claim_ends_the_wait(shared, clock):
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "other", START + CLAIM_SECONDS)
    reads = []

    def logged_out_on_the_second_poll() -> None:
        reads.append(1)
        if len(reads) == 2:
            shared.text = None

    shared.on_read = logged_out_on_the_second_poll
    bot.renew()
    assert shared.text is None, "nothing brought back"
    assert bot.refreshes == 1, "it renewed for itself only"
    assert clock.now() - START < 5, "it stopped waiting when the token was gone"


def test_a_claim_holds_for_claim_seconds(shared, clock):
    """A claimer killed right after its claim holds the others CLAIM_SECONDS (6 s) and a
    poll at most: they are done within 10 s of it."""
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "killed", START + CLAIM_SECONDS)

    assert bot.renew() is True
    assert bot.refreshes == 1
    assert CLAIM_SECONDS <= clock.now() - START <= CLAIM_SECONDS + POLL <= 10


# -- rule 5: what is written after a refresh ---------------------------------------------------


def test_a_token_saved_meanwhile_by_another_bot_is_kept(shared, clock):
    shared.text = token(START - 3000, gen=3)
    bot = Bot(shared, clock)
    bot.life.schedule.leading = True
    original_refresh = bot.refresh

    def refresh_while_another_saves() -> None:
        original_refresh()
        shared.text = token(clock.now(), gen=4, secret="theirs")

    bot.refresh = refresh_while_another_saves  # type: ignore[method-assign]
    assert bot.renew() is True
    assert bot.life.outcome == "newer kept"
    assert generation(stored(shared)) == 4 and bot.held() == "theirs"
    assert bot.life.schedule.leading is False, "the other one leads now"


def test_nothing_is_written_where_the_token_was_removed(shared, clock):
    shared.text = token(START - 3000, gen=3)
    bot = Bot(shared, clock)
    bot.life.schedule.leading = True
    shared.text = None  # botcity-ms365 logout

    bot.renew()

    assert shared.text is None and bot.life.outcome == "not written (removed)"


def test_nothing_is_written_over_a_value_that_cannot_be_read(shared, clock):
    shared.text = token(START - 3000, gen=3)
    bot = Bot(shared, clock)
    bot.life.schedule.leading = True
    shared.text = "{not json"

    bot.renew()

    assert shared.text == "{not json" and bot.life.outcome == (
        "not written (unreadable)")


def test_a_store_that_fails_after_a_refresh_is_the_store_s_problem(shared, clock):
    shared.text = token(START - 3000, gen=3)
    bot = Bot(shared, clock)
    bot.life.schedule.leading = True
    shared.fail = True
    with pytest.raises(StoreUnavailable):
        bot.renew()  # a plain store raises; the Maestro store keeps it locally instead


# -- the clock --------------------------------------------------------------------------------


def test_the_clock_takes_microsoft_s_time_only_beyond_the_tolerance(monkeypatch):
    import time

    clock = Clock()
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    clock.learn(__import__("email.utils").utils.formatdate(now - 2, usegmt=True))
    assert clock.offset == 0.0, "two seconds is the network and the header's grain"
    clock.learn(__import__("email.utils").utils.formatdate(now - 7200, usegmt=True))
    assert clock.offset == pytest.approx(7200, abs=1)
    assert clock.now() == pytest.approx(now - 7200, abs=1)
    clock.learn("not a date")
    assert clock.offset == pytest.approx(7200, abs=1)


# -- a person's new sign-in wins over what bots hold -----------------------------------------


def test_a_newer_consent_whose_access_token_expired_is_renewed_from_its_refresh_token(
        shared, clock):
    """A person signed in again (new scopes, or after a revocation) and no bot used it for
    an hour: a bot still holding the older token renews from the newer one's refresh token,
    never writing its own older consent over it."""
    shared.text = token(START - 3000, gen=4)
    bot = Bot(shared, clock)
    newer = json.loads(token(START - 4000, gen=9))  # expired by now
    [rt] = newer["RefreshToken"].values()
    rt["secret"] = "the new consent's"
    shared.text = json.dumps(newer)

    assert bot.renew() is True
    [held] = bot.store._cache["RefreshToken"].values()
    assert held["secret"] == "the new consent's"
    assert generation(stored(shared)) == 10


def test_a_sign_in_after_a_logout_is_newer_than_anything_a_bot_holds(shared, clock):
    shared.text = token(START - 3000, gen=6)
    old_bot = Bot(shared, clock)
    person = Bot(shared, clock)  # stands for botcity-ms365 login's sign-in
    shared.text = None  # botcity-ms365 logout
    person.store._cache = json.loads(token(START, gen=0))
    person.store.replace_stored()
    assert generation(stored(shared)) >= int(START), "not 1: the old bot's 6 would win"

    assert old_bot.renew() is False, "the old bot takes the new sign-in's token"
    assert generation(stored(shared)) >= int(START)


def test_a_refused_bot_takes_a_token_a_person_stored_since(shared, clock):
    shared.text = token(START - 4000, gen=2)
    bot = Bot(shared, clock)
    bot.life.rejected = AuthorizationRequired("revoked", error="invalid_grant")
    with pytest.raises(AuthorizationRequired):
        bot.life.before_request()
    shared.text = token(START, gen=3, secret="signed in again")
    clock.t += 61  # it looks at most once a minute

    assert bot.life.before_request() is True
    assert bot.life.rejected is None and bot.held() == "signed in again"


def test_a_bot_that_claimed_and_finds_a_renewal_that_did_not_see_it_leaves_a_herd_note(
        shared, clock):
    """On a slow store another bot's claim can land first and its renewal be stored
    before this bot's claim shows: this bot never waited, yet it was part of a herd, and
    says so; else two such starts would make the herd look lone (every bot renewing)."""
    expired(shared)
    bot = Bot(shared, clock)
    add = shared.add_note

    def claimed_while_another_renewed(note):
        add(note)
        if note.kind == CLAIM:  # the other's renewal, stored before this claim showed
            shared.text = token(clock.now(), gen=2, secret="theirs", quiet=1)

    shared.add_note = claimed_while_another_renewed

    assert bot.renew() is False

    assert bot.held() == "theirs" and bot.refreshes == 0
    assert noted(shared, HERD, 2, bot)


@pytest.mark.parametrize(("age", "quiet", "noted_herd"), [
    (2, 1, True),                    # started with a renewer that met nobody
    (2, 0, False),                   # its renewer saw others already
    (CLAIM_SECONDS + 1, 1, False),   # long after it: not a herd
])
def test_a_bot_that_starts_beside_a_quiet_renewal_leaves_a_herd_note(
        shared, clock, age, quiet, noted_herd):
    shared.text = token(START - age, gen=2, quiet=quiet)
    bot = Bot(shared, clock)
    bot.life.load()
    assert noted(shared, HERD, 2, bot) is noted_herd


def test_a_claim_that_becomes_first_holds_a_whole_claim_s_time_from_then(shared, clock):
    """Two claims before this bot's; the first gives up 5 s in, so the second renews from
    then: its claim, made at the start, would lapse a second later, yet it holds the
    others a whole CLAIM_SECONDS from the release (on a slow store its token's write can
    take two seconds), and nobody renews a second time."""
    expired(shared)
    bot = Bot(shared, clock)
    shared.put_note(CLAIM, 1, "a", START + CLAIM_SECONDS)
    shared.put_note(CLAIM, 1, "b", START + CLAIM_SECONDS)

    def a_gives_up_then_b_stores_its_token():
        if clock.now() >= START + 5 and not any(k == RELEASE for k, _, _ in shared.kinds()):
            shared.put_note(RELEASE, 1, "a", clock.now())
        if clock.now() >= START + CLAIM_SECONDS + 3:
            shared.text = token(clock.now(), gen=2, secret="b's")

    shared.on_read = a_gives_up_then_b_stores_its_token

    assert bot.renew() is False

    assert bot.refreshes == 0 and bot.held() == "b's"


def test_a_bot_refused_late_takes_the_renewal_another_made_for_the_same_challenge(
        shared, clock):
    """Graph refused this bot's request seconds after it refused another's: the other
    already renewed with the challenge's claims (a token issued after the event its
    ``nbf`` names), and this bot takes that token instead of renewing again."""
    shared.text = token(START - 600, gen=1)
    bot = Bot(shared, clock)
    event = START - 5
    shared.text = token(START - 3, gen=2, secret="theirs")  # renewed for the challenge
    claims = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(event)}}})

    bot.life.refused_by_graph("insufficient_claims", claims)

    assert bot.refreshes == 0 and bot.held() == "theirs"
