"""Where the user's token lives, as O365 token backends: a BotCity Maestro credential key
(:class:`MaestroTokenStore`) or a local file (:class:`FileTokenStore`).

Both are ``O365.utils.token.BaseTokenBackend`` subclasses (themselves msal's token cache):
O365 loads them at start and they save after the first authorization and after every
renewal. The text they keep is a token document (``tokens.py``), in a place
(``persistence.py``); when to renew, and what to do when a place fails, is the
:class:`~.lifecycle.TokenLifecycle`'s. A store is O365's backend and nothing more.

Rules every store keeps:

- a stored value that is not a token this version can load raises
  :class:`TokenFormatError` and is never overwritten;
- an empty cache is never saved, and a token is never written where the store holds none
  any more (after ``botcity-ms365 logout``), except by a person's sign-in;
- a save writes the token as the next generation of what the store holds right then, and
  leaves a newer one (another bot's, a new consent) in place;
- in a store several machines share (Maestro), a renewed token is *added* beside the
  written one (a note naming the generation it renews: ``persistence.py``), which sends
  no other key and so can undo nothing: no operator's edit, no newer token, no logout (a
  renewal of a token that is gone leads nowhere). Readers follow the renewals to the
  newest (:func:`.tokens.follow`). Every :data:`FOLD_AT`-th renewal is written over the
  token instead, over a read made right before, and drops the notes it folds in;
- secrets never reach ``repr()``, logs or messages.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from O365.utils.token import BaseTokenBackend

from ._clock import CLOCK, Clock
from ._maestro import MaestroVault
from .discovery import KEY as DISCOVERY_KEY
from .discovery import Discovery
from .errors import StoreError, TokenFormatError
from .persistence import (
    NEXT,
    Fallback,
    FileText,
    MaestroText,
    MemoryText,
    Note,
    TextPersistence,
    fallback_folder,
)
from .tokens import (
    META_KEY,
    client_type,
    follow,
    generation,
    issued_at,
    meta,
    parse_token,
    quiet,
    summarize,
    usable_for,
    with_meta,
)

log = logging.getLogger(__name__)

DEFAULT_FILENAME = "o365_token.txt"
#: The renewal that would make this many beside the written token is written over it
#: instead (the one write of a renewal that sends the whole credential: see the rules).
FOLD_AT = 8


class UnsavedToken(Exception):
    """A renewed token the store could not take: ``error`` says why, ``text`` is what it
    would have written (the lifecycle may keep it elsewhere)."""

    def __init__(self, error: StoreError, text: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.text = text


class TokenStore(BaseTokenBackend):
    """O365's token backend on a :class:`TextPersistence`. ``read_only``: never write
    (what ``botcity-ms365 status`` uses)."""

    #: False for stores no other process can see (nothing to coordinate).
    shared = True

    def __init__(self, persistence: TextPersistence, *, clock: Clock = CLOCK,
                 read_only: bool = False) -> None:
        super().__init__()
        self.persistence = persistence
        self.clock = clock
        self.read_only = read_only
        #: "public" for a token from the device code flow (refreshed without the secret).
        self.client_type = "confidential"
        #: The generation of the token held (as loaded, taken from another bot, or saved).
        self.generation = 0
        #: The held token came from the store (a save never recreates a removed one).
        self._from_store = False
        #: msal's discovery answers, saved with the token (see ``discovery.py``).
        self.discovery = Discovery()
        #: How many renewals in a row met no other bot renewing, as the held token says;
        #: a save writes it (the lifecycle sets it before a renewal's save).
        self.quiet = 0
        #: What the last read found: how many renewals beside the written token, and
        #: whether several bots renewed its newest token (started together).
        self.links = 0
        self.crowded = False
        self._name = secrets.token_hex(6)
        self._renewals = 0

    @property
    def location(self) -> str:
        """Where the token lives, for logs and messages (never a secret)."""
        return self.persistence.location

    @property
    def removal(self) -> str:
        return self.persistence.removal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"

    # -- msal's cache and O365's backend interface ----------------------------------------
    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        """msal adds each new token: stamp it with the corrected clock, so its expiry is
        right even when this machine's clock is not (see ``_clock.py``)."""
        super().add(event, now=self.clock.now() if now is None else now)

    def search(self, credential_type: Any, target: Any = None, query: Any = None, *,
               now: float | None = None) -> Any:
        """msal's search, which drops access tokens it finds expired: by the corrected
        clock, not this machine's."""
        return super().search(credential_type, target=target, query=query,
                              now=self.clock.now() if now is None else now)

    def serialize(self) -> str:
        return self.text(self.generation)

    def text(self, stamp: int) -> str:
        """The held token as stored text, its ``botcity`` entry saying generation
        ``stamp``."""
        with self._lock:
            self._has_state_changed = False
            cache = {k: v for k, v in self._cache.items() if k != META_KEY}
            entry = {**summarize(cache, self.client_type, now=self.clock.now(),
                                 generation=stamp), **self.discovery.entry()}
            if self.quiet:
                entry["quiet"] = self.quiet
            return with_meta(cache, entry)

    def deserialize(self, token_cache_state: str | bytes) -> dict:
        with self._lock:
            self._has_state_changed = False
            if not token_cache_state:
                return {}
            data = parse_token(token_cache_state, self.location, self.removal)
            self._take_meta(data)
            return data

    def _take_meta(self, data: dict[str, Any]) -> None:
        """Take what the ``botcity`` entry of a stored token says, and remove it."""
        self.client_type = client_type(data)
        self.generation = generation(data)
        self.quiet = quiet(data)
        self.discovery.load(meta(data).get(DISCOVERY_KEY), self.clock.now())
        data.pop(META_KEY, None)

    def load_token(self) -> bool:
        stored = self.read_stored(max_age=None)
        if stored is None:
            log.debug("No token in %s", self.location)
            return False
        self.adopt(stored)
        return True

    def save_token(self, force: bool = False) -> bool:
        """O365's save. ``force=True``: a person just signed in; the token replaces what
        is stored (absent or readable, never a value that cannot be read), and a store
        that fails raises, since someone is there to act on it. Otherwise (O365 after a
        refresh of its own) as after a renewal: see :meth:`save_renewed`."""
        with self._lock:
            if not self._cache.get("RefreshToken") and not self._cache.get("AccessToken"):
                log.debug("Nothing to save to %s: the cache holds no token", self.location)
                return False
            changed = self._has_state_changed
        if force:
            self.replace_stored()
        elif changed:
            try:
                self.save_renewed()
            except UnsavedToken as unsaved:
                raise unsaved.error from None
        return True

    def keep_only_account(self, home_account_id: str,
                          issued: frozenset[str] = frozenset()) -> None:
        """Drop every token of another account: after a sign-in the store holds only the
        account that signed in (the old account's refresh token is gone). ``issued``: the
        secrets of the access and refresh token the sign-in gave; the account's other
        access and refresh tokens go too (msal keys a refresh token by its permissions, so
        a consent to more would leave the old one beside it, and O365 reads the first one
        it finds: a new process would see the old permissions only)."""
        with self._lock:
            for section in ("AccessToken", "RefreshToken", "IdToken", "Account"):
                entries = self._cache.get(section, {})
                mine = [e for e in entries.values() if e.get("home_account_id") ==
                        home_account_id and e.get("secret") in issued]
                for key in [k for k, e in entries.items()
                            if e.get("home_account_id") != home_account_id
                            or (mine and e.get("secret") not in issued)]:
                    del entries[key]
            self._has_state_changed = True

    def check_token(self) -> bool:
        text = self.persistence.load()
        return bool(text and text.strip())

    def delete_token(self) -> bool:
        empty: dict[str, Any] = {}
        with self._lock:
            self._cache = empty
        return self.persistence.remove()

    # -- what the lifecycle reads and writes (see lifecycle.py) ------------------------------
    def cache_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._cache)

    def read_stored(self, max_age: float | None = 0.0) -> dict[str, Any] | None:
        """The token the store holds (None: none); :class:`TokenFormatError` when the
        value is not a token this version can read; :class:`StoreError` when the store
        cannot be read. ``max_age``: an earlier read this recent will do."""
        text = self.persistence.load(max_age=max_age)
        if not text or not text.strip():
            self.links, self.crowded = 0, False
            return None
        written = parse_token(text, self.location, self.removal)
        if not self.persistence.takes_renewals:
            return written
        chain = follow(written, ((n.generation, n.text) for n in self.persistence.notes()
                                 if n.kind == NEXT), self.location)
        self.links, self.crowded = chain.links, chain.crowded
        return chain.token

    def adopt(self, stored: dict[str, Any]) -> None:
        """Use a token another bot stored (from :meth:`read_stored`) instead of ours."""
        with self._lock:
            data = dict(stored)
            self._take_meta(data)
            self._cache = data
            self._has_state_changed = False
            self._from_store = True

    def saved_since(self, stored: dict[str, Any] | None) -> bool:
        """Whether ``stored`` was saved after the token held (a higher generation; between
        tokens written before generations existed, a later issue)."""
        if stored is None:
            return False
        theirs = generation(stored)
        if self.generation or theirs:
            return theirs > self.generation
        return issued_at(stored) > issued_at(self.cache_snapshot())

    def notes(self) -> list[Note]:
        """The notes beside the token as the last read saw them (see ``persistence.py``)."""
        return self.persistence.notes()

    def add_note(self, note: Note) -> None:
        """Add a note beside the token, rewriting nothing else."""
        self.persistence.add_note(note)

    def put(self, data: dict[str, Any]) -> None:
        """Write the token document ``data`` as it is (its ``botcity`` entry included)."""
        self.persistence.save(with_meta({k: v for k, v in data.items() if k != META_KEY},
                                        meta(data)), generation=generation(data))

    def save_renewed(self) -> str:
        """After a refresh: read the store, and write the held token as the next
        generation of what it holds. Says what happened: ``saved``; ``newer kept``
        (another bot saved a token still good meanwhile: it is used); ``not written``
        (the store holds no token any more, or one that cannot be read: left as it is).
        :class:`UnsavedToken` when the store failed."""
        if self.read_only:
            return "not written (read-only)"
        if self.persistence.takes_renewals and self._from_store and (
                self.links + 1 < FOLD_AT or not self.persistence.rewritable):
            return self._add_renewal()
        try:
            stored = self.read_stored(max_age=0.0)
        except TokenFormatError:
            log.warning("%s holds a value that is not a token; the renewed token is not "
                        "written over it (%s to start over)", self.location, self.removal)
            return "not written (unreadable)"
        except StoreError as exc:
            raise UnsavedToken(exc, self.text(self.generation + 1)) from None
        if stored is None and self._from_store:
            log.warning("The token was removed from %s (logout?); the renewed token is not "
                        "written back", self.location)
            return "not written (removed)"
        if stored is not None and self.saved_since(stored) and (
                usable_for(stored, self.clock.now()) > 0):
            self.adopt(stored)
            log.info("A newer token is already in %s; kept it", self.location)
            return "newer kept"
        return self._write(generation(stored) + 1)

    def _add_renewal(self) -> str:
        """Add the held token beside the stored one as the renewal of the generation held:
        no read first, since the add rewrites nothing (a rival renewal of the same
        generation, added first, is the one readers take; this bot's is as good for
        itself)."""
        self._renewals += 1
        text = self.text(self.generation + 1)
        try:
            self.persistence.add_note(Note(NEXT, self.generation,
                                           f"{self._name}{self._renewals:x}", text=text))
        except StoreError as exc:
            if exc.status == 404:  # the label was deleted meanwhile: stays deleted
                log.warning("%s is gone (deleted?); the renewed token is not written back",
                            self.location)
                return "not written (removed)"
            raise UnsavedToken(exc, text) from None
        self.generation += 1
        self.links += 1
        log.debug("Renewed token added to %s", self.location)
        return "saved"

    def replace_stored(self) -> None:
        """Write the held token over what is stored (a person's sign-in, an operator's
        copy): absent or readable, never a value that cannot be read."""
        # a broken value raises TokenFormatError; a store that cannot be read, its error:
        # a failed read is never taken for "nothing stored"
        stored = self.read_stored(max_age=0.0)
        # a sign-in's generation never goes back, even after a logout removed the token:
        # a bot still holding a token of before (or one kept on a Runner) is older
        self.generation = max(generation(stored) + 1, int(self.clock.now()))
        self.persistence.save(self.serialize(), generation=self.generation)
        self._from_store = True
        self.links, self.crowded = 0, False

    def _write(self, next_generation: int) -> str:
        text = self.text(next_generation)
        try:
            self.persistence.save(text, generation=next_generation)
        except StoreError as exc:
            raise UnsavedToken(exc, text) from None
        self.generation = next_generation
        self._from_store = True
        self.links, self.crowded = 0, False  # the write folded the renewals in
        log.debug("Token saved to %s", self.location)
        return "saved"

    # -- for operators (the CLI) ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What is known about the loaded token, without secrets (see ``tokens.summarize``)."""
        return summarize(self._cache, self.client_type, now=self.clock.now(),
                         generation=self.generation)

    def copy_to(self, other: TokenStore) -> dict[str, Any]:
        """Write this store's token, checked, over ``other``'s (absent or readable); return
        its summary."""
        stored = self.read_stored(max_age=None)
        if stored is None:
            raise StoreError(f"There is no token in {self.location} to copy.")
        self.adopt(stored)
        other._cache = {k: v for k, v in stored.items() if k != META_KEY}
        other.client_type = self.client_type
        other.replace_stored()
        return other.summary()


class FileTokenStore(TokenStore):
    """The token in a local file, for a bot that runs without Maestro.

    ``token_path`` is read as O365 and 0.2.0 read it: an existing file is the file; an
    existing folder (or ``""``, the working directory) holds ``o365_token.txt``. A path
    that does not exist yet is a file when it has a suffix (``token.json``), otherwise a
    folder. The file is written atomically and readable only by its user
    (:class:`FileText`).
    """


    def __init__(self, token_path: str | os.PathLike[str] = "", *,
                 read_only: bool = False) -> None:
        path = Path(token_path) if token_path else Path()
        if path.is_dir() or not path.suffix and not path.is_file():
            path = path / DEFAULT_FILENAME
        self.path = path
        super().__init__(FileText(path), read_only=read_only)


class MemoryTokenStore(TokenStore):
    """Tokens kept in memory only: app-only (client credentials) tokens last an hour and
    are renewed without a person, so there is nothing worth storing."""

    shared = False

    def __init__(self) -> None:
        super().__init__(MemoryText())


class MaestroTokenStore(TokenStore):
    """The token in key ``key`` of the BotCity Maestro credential ``label``, so every
    Runner of the workspace can use it. The other keys of the set are never touched. What
    happens when Maestro is down is the lifecycle's (``lifecycle.py``): the token waits on
    this machine (:meth:`fallback`)."""

    def __init__(self, vault: MaestroVault, label: str, key: str = "token", *,
                 read_only: bool = False) -> None:
        persistence = MaestroText(vault, label, key)
        super().__init__(persistence, read_only=read_only)
        self.label, self.key = persistence.label, persistence.key
        self._where = (vault.server, vault.organization)

    def fallback(self, folder: str | None = None) -> Fallback:
        """Where this credential's token waits on this machine while Maestro cannot take it
        (one file per workspace, label and key), in ``folder`` (``MS365_FALLBACK_DIR``;
        None: the platform's per-user data folder)."""
        return Fallback(*self._where, self.label, self.key,
                        folder=lambda: fallback_folder(folder))


def fallback_path(server: str, label: str, key: str, organization: str = "") -> Path:
    """Where the token of a workspace's credential waits when Maestro could not take it."""
    from .settings import Settings

    return Fallback(server, organization, label, key, folder=lambda: fallback_folder(
        Settings.from_environ().fallback_dir)).file.path
