"""Where the user's token lives: a BotCity Maestro credential key, or a local file.

Both are O365 token backends (``O365.utils.token.BaseTokenBackend``, itself msal's token
cache), so O365 loads them at start and saves them after the first authorization and
after every refresh. What they store is single-line JSON: msal's token cache as O365's
``FileSystemTokenBackend`` writes it, plus a ``"botcity"`` entry an operator can read
(who signed in, which permissions, when it was saved, when the access token expires).
msal and O365 ignore that entry, so a plugin file still loads in plain O365, and an
O365 2.x ``o365_token.txt`` loads here.

Rules every store keeps:

- a value that is not a token this version can load raises :class:`TokenFormatError`
  and is left untouched;
- an empty cache is never saved, so a good stored token is never replaced by nothing;
- secrets never reach ``repr()``, logs or messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from O365.utils.token import BaseTokenBackend

from ._maestro import MaestroVault, check_name
from .coordination import Schedule, before_refresh
from .errors import StoreError, StoreUnavailable, TokenFormatError
from .scopes import RESERVED, permission_name

log = logging.getLogger(__name__)

META_KEY = "botcity"
ENV_FALLBACK_DIR = "MS365_FALLBACK_DIR"
#: "0": refresh at expiry without looking at the store first (see coordination.py).
ENV_COORDINATE = "MS365_COORDINATE_REFRESH"
DEFAULT_FILENAME = "o365_token.txt"
_SECTIONS = ("AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata")


def parse_token(text: str | bytes, where: str, fix: str = "remove it") -> dict[str, Any]:
    """The msal cache held in ``text``, or :class:`TokenFormatError` saying what is wrong
    and how to fix it (``fix``: what to remove before authorizing again)."""
    then = f"It was left as it is: {fix} and authorize again."
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenFormatError(f"The token in {where} is not UTF-8 text. {then}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise TokenFormatError(
            f"The token in {where} is not valid JSON (truncated, or edited by hand). {then}"
        ) from None
    if not isinstance(data, dict):
        raise TokenFormatError(f"The token in {where} is not a JSON object. {then}")
    if "access_token" in data or "refresh_token" in data:
        raise TokenFormatError(
            f"The token in {where} is in the O365 1.x format, which O365 2.1 cannot load. "
            "It was left as it is: convert it with 'botcity-ms365 migrate' (a token file), "
            f"or {fix} and authorize again."
        )
    if not any(section in data for section in _SECTIONS):
        raise TokenFormatError(
            f"The token in {where} is JSON but not an msal token cache (no AccessToken, "
            f"RefreshToken or Account entries). {then}"
        )
    for section in _SECTIONS:
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(
            _entry_ok(section, entry) for entry in entries.values()
        ):
            raise TokenFormatError(f"The token in {where} has a malformed {section} entry. "
                                   f"{then}")
    return data


#: The fields msal and O365 read from each entry; msal writes every value as a string.
_REQUIRED = {
    "AccessToken": ("secret", "home_account_id", "environment", "client_id", "target",
                    "expires_on"),
    "RefreshToken": ("secret", "home_account_id", "environment", "client_id"),
    "IdToken": ("secret", "home_account_id", "environment", "client_id"),
    "Account": ("home_account_id", "environment", "username"),
    "AppMetadata": ("client_id", "environment"),
}
_NUMBERS = ("expires_on", "cached_at", "extended_expires_on", "refresh_on",
            "last_modification_time")


def _entry_ok(section: str, entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items()):
        return False
    if not all(entry.get(field) for field in _REQUIRED[section]):
        return False
    return all(entry[f].isdigit() and entry[f].isascii() for f in _NUMBERS if f in entry)


#: Azure AD ends a refresh token after this many days without use.
REFRESH_TOKEN_INACTIVITY_DAYS = 90


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(seconds))


def _times(entries: list[dict[str, Any]], field: str) -> list[int]:
    return [int(e[field]) for e in entries if str(e.get(field, "")).isdigit()]


def summarize(cache: dict[str, Any], client_type: str = "confidential") -> dict[str, Any]:
    """What an operator wants to know about a token, without any secret: the stored
    ``botcity`` entry, and what ``botcity-ms365 status`` shows."""
    accounts = list(cache.get("Account", {}).values())
    refresh = list(cache.get("RefreshToken", {}).values())
    access = list(cache.get("AccessToken", {}).values())
    expires = _times(access, "expires_on")
    rotated = _times(refresh, "last_modification_time")
    clients = [e.get("client_id") for e in refresh + access if e.get("client_id")]
    return {
        "format": 1,
        "saved_at": _iso(time.time()),
        "account": accounts[0].get("username") if accounts else None,
        "client_id": clients[0] if clients else None,
        "permissions": sorted({
            permission_name(scope)
            for entry in refresh + access
            for scope in str(entry.get("target", "")).split()
        } - RESERVED),
        "access_token_expires_on": max(expires) if expires else None,
        "access_token_issued_at": issued_at(cache) or None,
        "has_refresh_token": bool(refresh),
        "refresh_token_rotated_at": _iso(max(rotated)) if rotated else None,
        "refresh_token_unused_until": _iso(
            max(rotated) + REFRESH_TOKEN_INACTIVITY_DAYS * 86400) if rotated else None,
        "client": client_type,
    }


def _client_type(meta: object) -> str:
    """``public`` for a token of the device code flow (its ``botcity`` entry says so)."""
    client = meta.get("client") if isinstance(meta, dict) else None
    return "public" if client == "public" else "confidential"


def issued_at(cache: dict[str, Any] | None) -> int:
    """When the newest access token in ``cache`` was issued (0: none): newer is better."""
    return max(_times(list((cache or {}).get("AccessToken", {}).values()), "cached_at"),
               default=0)


def usable_for(cache: dict[str, Any] | None) -> float:
    """Seconds the newest access token in ``cache`` still has to live."""
    expires = _times(list((cache or {}).get("AccessToken", {}).values()), "expires_on")
    return max(expires, default=0) - time.time()


def margin(entry: dict[str, Any]) -> float:
    """How long before its expiry an access token is taken as expired: a minute, or a
    tenth of its lifetime when that is shorter (tenants can make tokens short-lived)."""
    try:
        lifetime = int(entry["expires_on"]) - int(entry["cached_at"])
    except (KeyError, TypeError, ValueError):
        return 60.0
    return max(0.0, min(60.0, lifetime / 10))


def newest_access_token(cache: dict[str, Any] | None) -> dict[str, Any] | None:
    """The access token entry of ``cache`` that expires last (None: there is none)."""
    entries = list((cache or {}).get("AccessToken", {}).values())
    if not entries:
        return None
    return max(entries, key=lambda e: int(e.get("expires_on", 0) or 0)
               if str(e.get("expires_on", "")).isdigit() else 0)


def fresh_enough(cache: dict[str, Any] | None) -> bool:
    """Whether the newest access token in ``cache`` is good for a while yet."""
    newest = newest_access_token(cache)
    return newest is not None and usable_for(cache) > margin(newest)


class TokenStore(BaseTokenBackend):
    """Common behaviour of the stores; subclasses read, write and remove the raw text.

    Several processes may share a store. Each renews the access token at a moment of its
    own before it expires, and first looks whether another already did
    (:mod:`.coordination`, through O365's ``should_refresh_token`` hook); a save never
    replaces a newer stored token with an older one.
    """

    #: False for stores no other process can see (nothing to coordinate).
    shared = True

    #: Where the token lives, for logs and messages (never a secret).
    location = "?"
    #: What a person removes to start over, for messages.
    removal = "remove it"
    #: "public" for a token from the device code flow (refreshed without the secret).
    client_type = "confidential"
    #: ``(what the store held,)`` when a refresh was decided on a read (:meth:`look`):
    #: the save after it checks against that read instead of reading again.
    _looked: tuple[dict[str, Any] | None] | None = None

    def __init__(self) -> None:
        super().__init__()
        #: When this process renews the access token (see :mod:`.coordination`).
        self.schedule = Schedule()

    # -- the three things a store must do ---------------------------------------------
    def _read(self) -> str | None:
        raise NotImplementedError

    def _read_fresh(self, max_age: float = 0.0) -> str | None:
        """What the store holds now (or held at most ``max_age`` seconds ago)."""
        return self._read()

    def _write(self, text: str) -> None:
        raise NotImplementedError

    def _remove(self) -> bool:
        raise NotImplementedError

    # -- O365's token backend interface -----------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"

    def serialize(self) -> str:
        with self._lock:
            self._has_state_changed = False
            cache = {k: v for k, v in self._cache.items() if k != META_KEY}
            meta = summarize(cache, self.client_type)
            return json.dumps({**cache, META_KEY: meta}, separators=(",", ":"))

    def deserialize(self, token_cache_state: str | bytes) -> dict:
        with self._lock:
            self._has_state_changed = False
            if not token_cache_state:
                return {}
            data = parse_token(token_cache_state, self.location, self.removal)
            self.client_type = _client_type(data.pop(META_KEY, None))
            return data

    def load_token(self) -> bool:
        text = self._read()
        if not text or not text.strip():
            log.debug("No token in %s", self.location)
            return False
        self._cache = self.deserialize(text)
        return True

    def save_token(self, force: bool = False) -> bool:
        """Save the token. ``force=True`` is an explicit save (after a person consented):
        it writes even when nothing changed, and a store that fails raises, since someone
        is there to act on it. O365 saves after a refresh with ``force=False``: then a
        Maestro that fails is worked around (see :class:`MaestroTokenStore`)."""
        with self._lock:
            if not self._cache.get("RefreshToken") and not self._cache.get("AccessToken"):
                log.debug("Nothing to save to %s: the cache holds no token", self.location)
                return False
            if not force and not self._has_state_changed:
                return True
            looked, self._looked = self._looked, None
            text = self.serialize()
        self._save_text(text, strict=force, looked=looked, replace=force)
        return True

    def _save_text(self, text: str, strict: bool = True,
                   looked: tuple[dict[str, Any] | None] | None = None,
                   replace: bool = False) -> None:
        """Write ``text`` unless the store holds a newer token: as read now, or, after a
        refresh, as read when the refresh was decided (``looked``). ``replace``: write
        whatever is stored (a person just signed in: a new consent replaces it)."""
        current = None if replace else self.peek() if looked is None else looked[0]
        if current and issued_at(current) > issued_at(json.loads(text)):
            log.info("A newer token is already in %s; kept it", self.location)
            return
        self._write(text)
        log.debug("Token saved to %s", self.location)

    # -- sharing the token between processes (see coordination.py) --------------------
    def coordinating(self) -> bool:
        return self.shared and os.environ.get(ENV_COORDINATE, "").strip() != "0"

    def should_refresh_token(self, con: Any = None, *, username: str | None = None) -> bool:
        """O365's hook before a refresh. False: another process's newer token is loaded."""
        return before_refresh(self) if self.coordinating() else True

    def refresh_due(self, username: str | None = None) -> bool:
        """Whether this process should renew the access token now: it has expired, or
        this process's moment in its refresh window has come (see :mod:`.coordination`)."""
        if not self.has_data:
            return False
        token = self.get_access_token(username=username)  # msal drops an expired one
        if token is None or not self.coordinating():
            return token is None
        return self.schedule.due(token)

    def look(self, max_age: float = 0.0) -> dict[str, Any] | None:
        """:meth:`peek`, remembered as the read a refresh is decided on: the save that
        follows the refresh checks against it (see :meth:`forget_look`)."""
        stored = self.peek(max_age)
        self._looked = (stored,)
        return stored

    def forget_look(self) -> None:
        """The refresh failed: the next save reads the store again."""
        self._looked = None

    def cache_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._cache)

    def peek(self, max_age: float = 0.0) -> dict[str, Any] | None:
        """The token the store holds now, with its ``botcity`` entry; None when there is
        none or it cannot be read as a token (a broken value is never trusted)."""
        text = self._read_fresh(max_age)
        if not text or not text.strip():
            return None
        try:
            stored = parse_token(text, self.location)
        except TokenFormatError:
            return None
        return stored

    def adopt(self, stored: dict[str, Any]) -> None:
        """Use a token another process stored (from :meth:`peek`) instead of ours."""
        with self._lock:
            data = dict(stored)
            self.client_type = _client_type(data.pop(META_KEY, None))
            self._cache = data
            self._has_state_changed = False

    def keep_only_account(self, home_account_id: str) -> None:
        """Drop every token of another account: after a sign-in the store holds only the
        account that signed in (the old account's refresh token is gone)."""
        with self._lock:
            for section in ("AccessToken", "RefreshToken", "IdToken", "Account"):
                entries = self._cache.get(section, {})
                for key in [k for k, e in entries.items()
                            if e.get("home_account_id") != home_account_id]:
                    del entries[key]
            self._has_state_changed = True

    def delete_token(self) -> bool:
        with self._lock:
            self._cache = {}
        return self._remove()

    def check_token(self) -> bool:
        text = self._read()
        return bool(text and text.strip())

    # -- for operators (the CLI) ------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What is known about the loaded token, without secrets (see :func:`summarize`)."""
        return summarize(self._cache, self.client_type)

    def copy_to(self, other: TokenStore) -> dict[str, Any]:
        """Write this store's token, checked and as it is, to ``other``; return its summary."""
        text = self._read()
        if not text or not text.strip():
            raise StoreError(f"There is no token in {self.location} to copy.")
        cache = self.deserialize(text)
        other._write(text)
        return summarize(cache, self.client_type)


class FileTokenStore(TokenStore):
    """The token in a local file, for a bot that runs without Maestro.

    ``token_path`` is read as O365 and 0.2.0 read it: an existing file is the file; an
    existing folder (or ``""``, the working directory) holds ``o365_token.txt``. A path
    that does not exist yet is a file when it has a suffix (``token.json``), otherwise a
    folder. Writes go to a temporary file in the same folder, made 0600, then renamed
    over the old one, so the file is always either the old or the new token, never half.
    """

    def __init__(self, token_path: str | os.PathLike[str] = "") -> None:
        super().__init__()
        path = Path(token_path) if token_path else Path()
        if path.is_dir() or not path.suffix and not path.is_file():
            path = path / DEFAULT_FILENAME
        self.path = path
        self.location = f"file {path.resolve()}"
        self.removal = f"delete {path.resolve()}"

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise TokenFormatError(
                f"The token in {self.location} is not UTF-8 text. It was left as it is: "
                f"{self.removal} and authorize again."
            ) from None
        except OSError as exc:
            raise StoreError(f"Cannot read {self.location}: {exc.strerror}.") from None

    def _write(self, text: str) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StoreError(f"Cannot write {self.location}: {exc.strerror}.") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"Cannot write {self.location}: {exc.strerror}.") from None

    def _remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class MemoryTokenStore(TokenStore):
    """Tokens kept in memory only: app-only (client credentials) tokens last an hour and
    are renewed without a person, so there is nothing worth storing."""

    location = "memory (app-only tokens are not stored)"
    shared = False

    def _read(self) -> str | None:
        return None

    def _write(self, text: str) -> None:
        return None

    def _remove(self) -> bool:
        return False


class MaestroTokenStore(TokenStore):
    """The token in key ``key`` of the BotCity Maestro credential ``label``, so every
    Runner of the workspace can use it. The other keys of the set are never touched.

    When Maestro cannot take a refreshed token (down, failing, refusing), the bot goes on
    with the token in memory and keeps it in a local fallback file (0600, written
    atomically; see :func:`fallback_path`), warning once; the next save or the next start
    writes it to Maestro, the newest token winning. When Maestro is unreachable at start,
    a still-valid fallback token is used, and the log says so.
    """

    def __init__(self, vault: MaestroVault, label: str, key: str = "token") -> None:
        super().__init__()
        self._vault = vault
        self.label = check_name("label", label)
        self.key = check_name("key", key)
        self.location = f"Maestro credential '{label}' key '{key}' at {vault.server}"
        self.removal = f"delete key '{key}' of the Maestro credential '{label}'"
        self.fallback = FileTokenStore(fallback_path(vault.server, label, key))
        self._warned = False

    def _read(self) -> str | None:
        values = self._vault.read(self.label)
        return None if values is None else values.get(self.key)

    def _read_fresh(self, max_age: float = 0.0) -> str | None:
        values = self._vault.read(self.label, max_age=max_age)
        return None if values is None else values.get(self.key)

    def _write(self, text: str) -> None:
        self._vault.write(self.label, self.key, text)

    def _remove(self) -> bool:
        self._vault.remove(self.label, self.key)
        return True

    def _local(self) -> str | None:
        try:
            text = self.fallback._read()
            return text if text and parse_token(text, self.fallback.location) else None
        except StoreError:  # an unreadable fallback is no fallback
            return None

    def load_token(self) -> bool:
        try:
            text = self._read()
        except StoreUnavailable as exc:
            local = self._local()
            if local is None or not fresh_enough(json.loads(local)):
                raise StoreUnavailable(f"{exc} No still-valid token was saved locally "
                                       f"either ({self.fallback.path}).",
                                       status=exc.status) from None
            log.warning("%s Using the token saved locally at %s (%s) until Maestro is back.",
                        exc, json.loads(local).get(META_KEY, {}).get("saved_at", "?"),
                        self.fallback.path)
            self._cache = self.deserialize(local)
            return True
        local = self._local()
        if local is not None:
            stored = None
            if text and text.strip():
                try:
                    stored = parse_token(text, self.location, self.removal)
                except TokenFormatError:
                    stored = None
            # a fallback exists because saving a token at least as new failed: on a tie
            # (msal times tokens to the second) it wins
            if issued_at(json.loads(local)) >= issued_at(stored):
                self._cache = self.deserialize(local)
                self._push_local(local)
                return True
            self.fallback._remove()
        if not text or not text.strip():
            log.debug("No token in %s", self.location)
            return False
        self._cache = self.deserialize(text)
        return True

    def _push_local(self, local: str) -> None:
        try:
            super()._save_text(local)
        except StoreError as exc:
            log.warning("The token saved locally while Maestro was unreachable could not be "
                        "written to Maestro yet (%s); it stays in %s", exc,
                        self.fallback.path)
            return
        self.fallback._remove()
        log.info("Wrote the token saved locally while Maestro was unreachable to %s",
                 self.location)

    def _save_text(self, text: str, strict: bool = True,
                   looked: tuple[dict[str, Any] | None] | None = None,
                   replace: bool = False) -> None:
        try:
            super()._save_text(text, looked=looked, replace=replace)
        except StoreError as exc:
            if strict:
                raise
            self.fallback._write(text)
            if not self._warned:
                self._warned = True
                log.warning("%s The refreshed token is kept in %s and will be written to "
                            "Maestro at the next save or start.", exc, self.fallback.path)
            return
        if self.fallback.path.exists():
            self.fallback._remove()


def fresh_fallback(server: str, label: str, key: str) -> dict[str, Any] | None:
    """The token kept locally for this Maestro credential, if its access token is still
    good for a while (what a bot may use while Maestro is unreachable)."""
    local = FileTokenStore(fallback_path(server, label, key))
    try:
        text = local._read()
        data = parse_token(text, local.location) if text and text.strip() else None
    except StoreError:
        return None
    return data if data and fresh_enough(data) else None


def fallback_path(server: str, label: str, key: str) -> Path:
    """Where a token Maestro could not take waits: ``MS365_FALLBACK_DIR`` (default
    ``~/.botcity-ms365``), one file per server, label and key."""
    folder = Path(os.environ.get(ENV_FALLBACK_DIR) or Path.home() / ".botcity-ms365")
    digest = hashlib.sha256(f"{server}|{label}|{key}".encode()).hexdigest()[:16]
    return folder / f"fallback-{digest}.json"
