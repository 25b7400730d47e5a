"""BotCity Maestro credential sets, read and written through botcity-maestro-sdk.

This is the only module that calls the SDK. A credential set (a *label*) is read in one
request, the SDK's by-label read, and kept: the app's client id/secret and the token
usually live in the same set, so a bot's start costs one Maestro request. Writes go
through the SDK's public ``update_credential``/``create_credential``, which rewrite the
set from a fresh read, so the other keys of the set (client_id, client_secret) survive.

Every failure becomes a :class:`~.errors.StoreError` naming the server, the label and
what to check; the Maestro access token never appears in a message.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import requests

from .errors import ConfigurationError, StoreError

log = logging.getLogger(__name__)

# The SDK puts labels and keys in the URL unescaped: these characters would change the path.
_BAD_NAME = re.compile(r"[/?#%\\\s]")


def check_name(kind: str, name: object) -> str:
    """A Maestro label or key the SDK can put in a URL as it is."""
    if not isinstance(name, str) or not name or _BAD_NAME.search(name):
        raise ConfigurationError(
            f"Invalid Maestro credential {kind} {name!r}: use a non-empty name without "
            "spaces, '/', '?', '#', '%' or '\\'."
        )
    return name


#: Alerts sent by this process, so a bot that retries does not flood the operator.
_ALERTED: set[tuple[str, str]] = set()


def _version_tuple(version: str | None) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version or "")
    return tuple(int(n) for n in numbers[:3]) or (0,)


class MaestroVault:
    """Credential sets of one connected ``BotMaestroSDK``."""

    def __init__(self, maestro: Any) -> None:
        self._sdk = maestro
        self._sets: dict[str, dict[str, str] | None] = {}

    @property
    def server(self) -> str:
        return str(getattr(self._sdk, "server", "") or "?")

    def __repr__(self) -> str:
        return f"MaestroVault(server={self.server!r})"

    def _fail(self, action: str, label: str, exc: BaseException) -> StoreError:
        where = f"BotCity Maestro at {self.server}"
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status in (401, 403):
                hint = ("Maestro refused the bot's access: check the login and key (or that "
                        "the Runner's task is still running) and that this workspace may use "
                        f"credential '{label}'")
            else:
                hint = f"Maestro answered HTTP {status}; try again, or check Maestro's health"
            return StoreError(f"Could not {action} credential '{label}' in {where}: {hint}.")
        if isinstance(exc, requests.Timeout):
            return StoreError(
                f"Could not {action} credential '{label}': {where} did not answer in "
                f"{getattr(self._sdk, 'timeout', '?')} s."
            )
        if isinstance(exc, requests.ConnectionError):
            return StoreError(f"Could not {action} credential '{label}': {where} is unreachable.")
        if isinstance(exc, ValueError):  # an answer that is not a credential set
            return StoreError(
                f"Could not {action} credential '{label}': {where} answered something that "
                "is not a credential set."
            )
        return StoreError(f"Could not {action} credential '{label}' in {where}: "
                          f"{type(exc).__name__}.")

    def read(self, label: str, *, fresh: bool = False) -> dict[str, str] | None:
        """The keys and values of ``label``, or None when the label does not exist."""
        check_name("label", label)
        if not fresh and label in self._sets:
            return self._sets[label]
        try:
            data = self._sdk._get_credential_by_label(label, raise_exception=True)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                self._sets[label] = None
                return None
            raise self._fail("read", label, exc) from None
        except (requests.RequestException, ValueError) as exc:
            raise self._fail("read", label, exc) from None
        if not isinstance(data, dict) or not isinstance(data.get("secrets"), list):
            raise self._fail("read", label, ValueError())
        values = {
            str(item.get("key")): "" if item.get("value") is None else str(item.get("value"))
            for item in data["secrets"]
            if isinstance(item, dict) and item.get("key") is not None
        }
        self._sets[label] = values
        return values

    def write(self, label: str, key: str, value: str) -> None:
        """Set ``key`` of ``label`` to ``value``, creating the label or key when absent and
        leaving every other key of the set as it is."""
        check_name("label", label)
        check_name("key", key)
        known = self._sets.get(label) if label in self._sets else self.read(label)
        try:
            if known is not None and key in known:
                if _version_tuple(getattr(self._sdk, "version", None)) < (3, 0, 0):
                    raise StoreError(
                        f"BotCity Maestro at {self.server} is version {self._sdk.version}; "
                        "changing an existing credential key needs Maestro 3.0.0 or newer. "
                        f"Upgrade Maestro, or delete key '{key}' of credential '{label}' "
                        "so the plugin can add it again."
                    )
                try:
                    self._sdk.update_credential(label, key, value)
                except ValueError as exc:  # the key was removed meanwhile
                    if "does not exist" not in str(exc):
                        raise
                    self._sdk.create_credential(label, key, value)
            else:
                self._sdk.create_credential(label, key, value)
        except StoreError:
            raise
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                # the label vanished between read and write: create it anew
                try:
                    self._sdk.create_credential(label, key, value)
                except (requests.RequestException, ValueError, RuntimeError) as again:
                    raise self._fail("write", label, again) from None
            else:
                raise self._fail("write", label, exc) from None
        except (requests.RequestException, ValueError, RuntimeError) as exc:
            raise self._fail("write", label, exc) from None
        current = self._sets.get(label) or {}
        self._sets[label] = {**current, key: value}
        log.debug("Wrote key %r of Maestro credential %r", key, label)

    def alert(self, title: str, message: str, *, error: bool = False, once: str = "") -> bool:
        """Raise a Maestro alert on the running task; with ``once``, at most one alert per
        process for that subject. A failing alert is logged, never raised: telling the
        operator must not stop the bot from reporting the real problem."""
        if once:
            key = (self.server, once)
            if key in _ALERTED:
                return False
            _ALERTED.add(key)
        from botcity.maestro import AlertType

        try:
            self._sdk.alert(task_id=str(getattr(self._sdk, "task_id", "") or ""), title=title,
                            message=message,
                            alert_type=AlertType.ERROR if error else AlertType.WARN)
        except (requests.RequestException, ValueError, RuntimeError) as exc:
            log.warning("Could not raise a Maestro alert at %s: %s", self.server,
                        type(exc).__name__)
            return False
        return True

    def remove(self, label: str, key: str) -> None:
        """Remove ``key`` from ``label`` (the other keys stay)."""
        try:
            self._sdk.remove_credential(label, key)
        except ValueError as exc:
            if "does not exist" not in str(exc):
                raise self._fail("remove a key of", label, exc) from None
        except (requests.RequestException, RuntimeError) as exc:
            raise self._fail("remove a key of", label, exc) from None
        if self._sets.get(label):
            self._sets[label] = {k: v for k, v in (self._sets[label] or {}).items() if k != key}
