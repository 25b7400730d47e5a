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

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from O365.utils.token import BaseTokenBackend

from ._maestro import MaestroVault, check_name
from .errors import StoreError, TokenFormatError
from .scopes import RESERVED, permission_name

log = logging.getLogger(__name__)

META_KEY = "botcity"
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
            isinstance(entry, dict) for entry in entries.values()
        ):
            raise TokenFormatError(f"The token in {where} has a malformed {section} entry. "
                                   f"{then}")
    return data


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
    return {
        "format": 1,
        "saved_at": _iso(time.time()),
        "account": accounts[0].get("username") if accounts else None,
        "permissions": sorted({
            permission_name(scope)
            for entry in refresh + access
            for scope in str(entry.get("target", "")).split()
        } - RESERVED),
        "access_token_expires_on": max(expires) if expires else None,
        "has_refresh_token": bool(refresh),
        "refresh_token_rotated_at": _iso(max(rotated)) if rotated else None,
        "refresh_token_unused_until": _iso(
            max(rotated) + REFRESH_TOKEN_INACTIVITY_DAYS * 86400) if rotated else None,
        "client": client_type,
    }


class TokenStore(BaseTokenBackend):
    """Common behaviour of the stores; subclasses read, write and remove the raw text."""

    #: Where the token lives, for logs and messages (never a secret).
    location = "?"
    #: What a person removes to start over, for messages.
    removal = "remove it"
    #: "public" for a token from the device code flow (refreshed without the secret).
    client_type = "confidential"

    # -- the three things a store must do ---------------------------------------------
    def _read(self) -> str | None:
        raise NotImplementedError

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
            meta = data.pop(META_KEY, None)
            client = meta.get("client") if isinstance(meta, dict) else None
            self.client_type = "public" if client == "public" else "confidential"
            return data

    def load_token(self) -> bool:
        text = self._read()
        if not text or not text.strip():
            log.debug("No token in %s", self.location)
            return False
        self._cache = self.deserialize(text)
        return True

    def save_token(self, force: bool = False) -> bool:
        with self._lock:
            if not self._cache.get("RefreshToken") and not self._cache.get("AccessToken"):
                log.debug("Nothing to save to %s: the cache holds no token", self.location)
                return False
            if not force and not self._has_state_changed:
                return True
            text = self.serialize()
        self._write(text)
        log.debug("Token saved to %s", self.location)
        return True

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
            folder.mkdir(parents=True, exist_ok=True)
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

    def _read(self) -> str | None:
        return None

    def _write(self, text: str) -> None:
        return None

    def _remove(self) -> bool:
        return False


class MaestroTokenStore(TokenStore):
    """The token in key ``key`` of the BotCity Maestro credential ``label``, so every
    Runner of the workspace can use it. The other keys of the set are never touched."""

    def __init__(self, vault: MaestroVault, label: str, key: str = "token") -> None:
        super().__init__()
        self._vault = vault
        self.label = check_name("label", label)
        self.key = check_name("key", key)
        self.location = f"Maestro credential '{label}' key '{key}' at {vault.server}"
        self.removal = f"delete key '{key}' of the Maestro credential '{label}'"

    def _read(self) -> str | None:
        values = self._vault.read(self.label)
        return None if values is None else values.get(self.key)

    def _write(self, text: str) -> None:
        self._vault.write(self.label, self.key, text)

    def _remove(self) -> bool:
        self._vault.remove(self.label, self.key)
        return True
