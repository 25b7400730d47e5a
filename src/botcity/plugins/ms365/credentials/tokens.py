"""The stored token as a document: what is in it, whether it can be trusted, and its times.

A stored token is single-line JSON: msal's token cache as O365's ``FileSystemTokenBackend``
writes it (``AccessToken``, ``RefreshToken``, ``IdToken``, ``Account``, ``AppMetadata``),
plus a ``"botcity"`` entry (:func:`summarize`) that an operator can read and that the
plugin's bots use to agree on one token:

- ``generation``: bumped on every save, so which of two tokens is newer never depends on
  the clocks of the machines that wrote them;
- ``renewing``: ``{"by", "until"}``, a claim 1.0.0 bots wrote into the token (1.1 bots
  claim with notes beside it: ``lifecycle.py``); read, checked and ignored.
- ``discovery``: msal's discovery answers, so that a renewal needs no request but the
  token's (see ``discovery.py``; never a reason to refuse a token);
- ``quiet``: how many renewals in a row met no other bot renewing (``lifecycle.py``).

A shared store keeps renewed tokens beside the written one, each naming the generation it
renews (:func:`follow` finds the newest).

msal and O365 ignore the entry, so a plugin token loads in plain O365 and an O365 2.x
``o365_token.txt`` loads here. A value that is not such a document, or whose numbers are
outside what Azure AD issues (a 20-digit time, a token that lives a year), is refused as
unreadable: :class:`TokenFormatError`, and the stored value is left as it is.

Nothing here does I/O; every function that needs the time takes ``now``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from .errors import TokenFormatError
from .scopes import RESERVED, permission_name

META_KEY = "botcity"
SECTIONS = ("AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata")
#: Azure AD ends a refresh token after this many days without use.
REFRESH_TOKEN_INACTIVITY_DAYS = 90
#: Times outside these (epoch seconds: 2000-01-01, 2200-01-01) are not Azure AD's.
EARLIEST, LATEST = 946_684_800, 7_258_118_400
#: Azure AD's access tokens live at most a day (configurable lifetimes); two is generous.
LONGEST_LIFE = 2 * 86_400
#: Generations and claim times are JSON numbers below this (an exact float).
_BIGGEST = 2 ** 53

#: The fields msal and O365 read from each entry; msal writes every value as a string.
_REQUIRED = {
    "AccessToken": ("secret", "home_account_id", "environment", "client_id", "target",
                    "expires_on"),
    "RefreshToken": ("secret", "home_account_id", "environment", "client_id"),
    "IdToken": ("secret", "home_account_id", "environment", "client_id"),
    "Account": ("home_account_id", "environment", "username"),
    "AppMetadata": ("client_id", "environment"),
}
_TIMES = ("expires_on", "cached_at", "extended_expires_on", "refresh_on",
          "last_modification_time")


def parse_token(text: str | bytes, where: str, fix: str = "remove it") -> dict[str, Any]:
    """The token held in ``text`` (msal's cache and the ``botcity`` entry), or
    :class:`TokenFormatError` saying what is wrong and how to fix it (``fix``: what to
    remove before authorizing again)."""
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
    if not any(section in data for section in SECTIONS):
        raise TokenFormatError(
            f"The token in {where} is JSON but not an msal token cache (no AccessToken, "
            f"RefreshToken or Account entries). {then}"
        )
    for section in SECTIONS:
        entries = data.get(section, {})
        if not isinstance(entries, dict) or not all(
            _entry_ok(section, entry) for entry in entries.values()
        ):
            raise TokenFormatError(f"The token in {where} has a malformed {section} entry "
                                   f"(or times Azure AD does not issue). {then}")
    if not _meta_ok(data.get(META_KEY)):
        raise TokenFormatError(f"The token in {where} has a malformed '{META_KEY}' entry. "
                               f"{then}")
    return data


def _entry_ok(section: str, entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items()):
        return False
    if not all(entry.get(field) for field in _REQUIRED[section]):
        return False
    for field in _TIMES:
        if field in entry:
            value = entry[field]
            if not (value.isascii() and value.isdigit() and len(value) <= 10
                    and EARLIEST <= int(value) <= LATEST):
                return False
    if "cached_at" in entry and "expires_on" in entry:
        return 0 <= int(entry["expires_on"]) - int(entry["cached_at"]) <= LONGEST_LIFE
    return True


def _number_ok(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (
        0 <= value < _BIGGEST)


def _meta_ok(meta: object) -> bool:
    if meta is None:
        return True
    if not isinstance(meta, dict):
        return False
    if "generation" in meta and not (isinstance(meta["generation"], int)
                                     and _number_ok(meta["generation"])):
        return False
    claim = meta.get("renewing")
    return claim is None or (isinstance(claim, dict) and isinstance(claim.get("by"), str)
                             and len(claim["by"]) <= 64 and _number_ok(claim.get("until")))


class Chain(NamedTuple):
    """Where the renewals beside a written token lead (:func:`follow`)."""

    #: the newest token: the written one, or the last renewal of the chain
    token: dict[str, Any]
    #: how many renewals lead from the written token to it
    links: int
    #: more than one bot renewed the last token of the chain (they started together)
    crowded: bool


#: A chain is followed this far at most (a credential holds a few renewals: see stores.py).
LONGEST_CHAIN = 256


def follow(written: dict[str, Any], renewals: Iterable[tuple[int, str]],
           where: str) -> Chain:
    """The newest token from ``written`` and ``renewals`` (``(generation renewed, text)``
    in the order the store keeps them): each generation's first renewal that is a token
    of the same app and account and of a later generation is the next link. A renewal
    that cannot be read is passed over (never a reason to refuse the written token)."""
    by_generation: dict[int, list[str]] = {}
    for renewed, text in renewals:
        by_generation.setdefault(renewed, []).append(text)
    token, links, crowded = written, 0, False
    who = identity(written)
    while links < LONGEST_CHAIN:
        current = generation(token)
        found: list[dict[str, Any]] = []
        for text in by_generation.get(current, []):
            try:
                candidate = parse_token(text, where)
            except TokenFormatError:
                continue
            if identity(candidate) == who and generation(candidate) > current:
                found.append(candidate)
        if not found:
            break
        token, links, crowded = found[0], links + 1, len(found) > 1
    return Chain(token, links, crowded)


def quiet(data: dict[str, Any] | None) -> int:
    """How many renewals in a row met no other bot renewing (0: unknown, or they did)."""
    value = meta(data).get("quiet", 0)
    return value if isinstance(value, int) and 0 <= value < _BIGGEST else 0


# -- what the botcity entry says ----------------------------------------------------------
def meta(data: dict[str, Any] | None) -> dict[str, Any]:
    entry = (data or {}).get(META_KEY)
    return entry if isinstance(entry, dict) else {}


def generation(data: dict[str, Any] | None) -> int:
    """How many saves made the token (0: written before generations, or never saved)."""
    value = meta(data).get("generation", 0)
    return value if isinstance(value, int) else 0


def client_type(data: dict[str, Any] | None) -> str:
    """``public`` for a token of the device code flow (its ``botcity`` entry says so)."""
    return "public" if meta(data).get("client") == "public" else "confidential"


def identity(data: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """``(client_id, home_account_id)``: which app and account the token is for."""
    entries = [e for section in ("RefreshToken", "AccessToken")
               for e in (data or {}).get(section, {}).values() if isinstance(e, dict)]
    first = entries[0] if entries else {}
    return first.get("client_id"), first.get("home_account_id")


# -- times ----------------------------------------------------------------------------------
def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(seconds))


def _times(entries: list[dict[str, Any]], field: str) -> list[int]:
    return [int(e[field]) for e in entries if str(e.get(field, "")).isdigit()]


def access_tokens(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [e for e in (data or {}).get("AccessToken", {}).values() if isinstance(e, dict)]


def issued_at(data: dict[str, Any] | None) -> int:
    """When the newest access token in ``data`` was issued (0: none)."""
    return max(_times(access_tokens(data), "cached_at"), default=0)


def newest_access_token(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The access token entry of ``data`` that expires last (None: there is none)."""
    entries = access_tokens(data)
    if not entries:
        return None
    return max(entries, key=lambda e: int(e["expires_on"]) if str(
        e.get("expires_on", "")).isdigit() else 0)


def margin(entry: dict[str, Any]) -> float:
    """How long before its expiry an access token is taken as expired: a minute, or a
    tenth of its lifetime when that is shorter (tenants can make tokens short-lived)."""
    try:
        lifetime = int(entry["expires_on"]) - int(entry["cached_at"])
    except (KeyError, TypeError, ValueError):
        return 60.0
    return max(0.0, min(60.0, lifetime / 10))


def usable_for(data: dict[str, Any] | None, now: float) -> float:
    """Seconds the newest access token in ``data`` still has to live (0 or less: none).
    A token stamped in the future (written by a machine whose clock runs ahead, before
    the plugin corrected its clocks) cannot be timed: it counts as expired."""
    newest = newest_access_token(data)
    if newest is None:
        return 0.0
    if int(newest.get("cached_at", "0") or 0) > now + 300:
        return 0.0
    return int(newest["expires_on"]) - now


def fresh_enough(data: dict[str, Any] | None, now: float) -> bool:
    """Whether the newest access token in ``data`` is good for a while yet."""
    newest = newest_access_token(data)
    return newest is not None and usable_for(data, now) > margin(newest)


# -- for operators --------------------------------------------------------------------------
def summarize(cache: dict[str, Any], client: str = "confidential", *, now: float,
              generation: int = 0) -> dict[str, Any]:
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
        "generation": generation,
        "saved_at": _iso(now),
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
        "client": client,
    }


def with_meta(cache: dict[str, Any], entry: dict[str, Any]) -> str:
    """The stored text: ``cache`` and its ``botcity`` entry, as single-line JSON."""
    body = {k: v for k, v in cache.items() if k != META_KEY}
    return json.dumps({**body, META_KEY: entry}, separators=(",", ":"))
