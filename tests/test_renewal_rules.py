"""The lifecycle's rules (lifecycle.py) as unit tests: a store on an in-memory persistence,
a fake clock, and a refresh that mints a token the way msal adds one. No server, no sleep."""

from __future__ import annotations

import json

import pytest

from botcity.plugins.ms365.credentials._clock import Clock
from botcity.plugins.ms365.credentials.errors import StoreUnavailable
from botcity.plugins.ms365.credentials.lifecycle import TokenLifecycle
from botcity.plugins.ms365.credentials.persistence import TextPersistence
from botcity.plugins.ms365.credentials.renewal import CLAIM_SECONDS, SETTLE
from botcity.plugins.ms365.credentials.stores import TokenStore
from botcity.plugins.ms365.credentials.tokens import generation, meta, with_meta

START = 1_800_000_000.0
HOME = "uid.tid"


class FakeClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.t = START

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class InMemory(TextPersistence):
    """A store other bots share: reads and writes are counted; ``on_read`` lets a test act
    between a bot's read and its write (another bot, an operator)."""

    location = "memory"

    def __init__(self) -> None:
        self.text: str | None = None
        self.reads = self.writes = 0
        self.on_read = None
        self.fail = False

    def load(self, max_age=None):
        self.reads += 1
        if self.fail:
            raise StoreUnavailable("down", status=503)
        text = self.text
        if self.on_read:
            self.on_read()
        return text

    def save(self, text):
        if self.fail:
            raise StoreUnavailable("down", status=503)
        self.writes += 1
        self.text = text

    def remove(self):
        had, self.text = self.text is not None, None
        return had


def token(issued: float, life: int = 3600, gen: int = 0, secret: str = "at0") -> str:
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
    return with_meta(cache, {"generation": gen})


class Bot:
    """A bot: its store on the shared persistence, its clock, and a refresh that mints a
    new access token at the clock's time."""

    def __init__(self, shared: InMemory, clock: FakeClock, *, settle: float = SETTLE,
                 retry_budget: float = 60.0) -> None:
        self.store = TokenStore(shared, clock=clock)
        self.life = TokenLifecycle(self.store, clock=clock, sleep=clock.sleep,
                                   retry_budget=retry_budget, refresh=lambda: self.refresh())
        self.life.settle = settle
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
def shared() -> InMemory:
    return InMemory()


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


# -- rule 4: an expired token is claimed ------------------------------------------------------


def test_an_expired_token_is_claimed_then_renewed_by_one(shared, clock):
    shared.text = token(START - 4000, gen=1)  # expired
    bot = Bot(shared, clock)
    shared.reads = shared.writes = 0

    assert bot.renew() is True

    assert bot.refreshes == 1
    assert shared.writes == 2, "the claim, then the renewed token"
    assert shared.reads == 3, "the look, the read after the settle, the read before writing"
    assert "renewing" not in meta(stored(shared)), "the renewed token carries no claim"
    assert generation(stored(shared)) == 2


def test_a_bot_that_finds_another_s_claim_waits_for_its_token(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)
    claimed = stored(shared)
    claimed["botcity"]["renewing"] = {"by": "other", "until": START + CLAIM_SECONDS}
    shared.text = json.dumps(claimed)
    polls = []

    def the_other_stores_its_token():
        polls.append(clock.now())
        if len(polls) == 3:  # it took a while
            shared.text = token(clock.now(), gen=2, secret="theirs")

    shared.on_read = the_other_stores_its_token

    assert bot.renew() is False

    assert bot.refreshes == 0 and shared.writes == 0
    assert bot.held() == "theirs"


def test_a_claim_that_lapses_is_taken_over(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)
    claimed = stored(shared)
    claimed["botcity"]["renewing"] = {"by": "gone", "until": START + 3}  # killed claimer
    shared.text = json.dumps(claimed)

    assert bot.renew() is True

    assert bot.refreshes == 1 and generation(stored(shared)) == 2
    assert 3 <= clock.now() - START < 3 + 2, "it waited for the claim to lapse, no longer"


def test_a_claim_timed_by_a_clock_far_ahead_is_ignored(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)
    claimed = stored(shared)
    claimed["botcity"]["renewing"] = {"by": "fast", "until": START + 7200}
    shared.text = json.dumps(claimed)

    assert bot.renew() is True
    assert clock.now() - START < 2, "no waiting on a claim that cannot be honest"


def test_a_failed_refresh_gives_its_claim_up(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)

    def refused() -> None:
        raise RuntimeError("Microsoft refused")

    with pytest.raises(RuntimeError):
        bot.refresh = refused  # type: ignore[method-assign]
        bot.renew()
    assert "renewing" not in meta(stored(shared)), "the others need not wait for it"
    assert generation(stored(shared)) == 1
    assert json.loads(shared.text)["AccessToken"] == json.loads(token(
        START - 4000))["AccessToken"], "the stored token itself is as it was"


def test_giving_a_claim_up_never_undoes_what_another_bot_stored(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)

    def refused_while_another_saves() -> None:
        shared.text = token(clock.now(), gen=2, secret="theirs")
        raise RuntimeError("Microsoft refused")

    with pytest.raises(RuntimeError):
        bot.refresh = refused_while_another_saves  # type: ignore[method-assign]
        bot.renew()
    assert generation(stored(shared)) == 2 and "theirs" in shared.text


def test_giving_a_claim_up_never_brings_a_logged_out_token_back(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)

    def refused_after_a_logout() -> None:
        shared.text = None
        raise RuntimeError("Microsoft refused")

    with pytest.raises(RuntimeError):
        bot.refresh = refused_after_a_logout  # type: ignore[method-assign]
        bot.renew()
    assert shared.text is None


def test_a_logout_during_a_claimed_refresh_is_not_undone(shared, clock):
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)
    original = bot.refresh

    def refresh_while_logged_out() -> None:
        original()
        shared.text = None

    bot.refresh = refresh_while_logged_out  # type: ignore[method-assign]
    assert bot.renew() is True
    assert shared.text is None and bot.life.outcome == "not written (removed)"


def test_a_newer_token_stored_during_a_claimed_refresh_is_kept(shared, clock):
    shared.text = token(START - 4000, gen=1)
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
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock)
    claimed = stored(shared)
    claimed["botcity"]["renewing"] = {"by": "other", "until": START + 60}
    shared.text = json.dumps(claimed)
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


@pytest.mark.parametrize("budget", [5.0, 60.0])
def test_a_claim_lasts_as_long_as_the_claimer_may_be_kept_retrying(shared, clock, budget):
    """MS365_RETRY_SECONDS (``budget``) bounds how long Microsoft may keep the claimer
    retrying; its claim holds that long and ten seconds more, so nobody takes over a
    renewal that is still under way, and nobody waits for one that cannot be."""
    shared.text = token(START - 4000, gen=1)
    bot = Bot(shared, clock, retry_budget=budget)
    claims = []
    save = shared.save

    def noting_claims(text: str) -> None:
        claims.append(meta(json.loads(text)).get("renewing"))
        save(text)

    shared.save = noting_claims  # type: ignore[method-assign]
    assert bot.renew() is True
    assert claims[0]["until"] == START + budget + 10
    assert claims[-1] is None, "the token written after the refresh carries no claim"


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
