"""BotCity Maestro credential sets, read and written through botcity-maestro-sdk.

This is the only module that calls the SDK. A credential set (a *label*) is read in one
request, the SDK's by-label read, and kept: the app's client id/secret and the token
usually live in the same set, so a bot's start costs one Maestro request. A write sends
the whole set back with one key changed, based on a read a moment old, so the other keys
of the set (client_id, client_secret) survive.

Every failure becomes a :class:`~.errors.StoreError` naming the server, the label and
what to check (:class:`~.errors.StoreUnavailable` when Maestro is down or failing); the
Maestro access token never appears in a message. Besides the by-label read, writes use
the SDK's by-label edit, also private: both are checked by ``tests/test_stores.py``.

The SDK waits 30 s per socket read, makes no retries and never sleeps; every request it
makes for the plugin is bounded as a whole by ``MS365_HTTP_TIMEOUT`` (``_transport.
bounded``: a server that trickles its answer cannot hold a bot longer).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from ._transport import DeadlineExceeded, bounded, connection_failure
from .errors import MESSAGES, ConfigurationError, StoreError, StoreUnavailable, told
from .settings import Settings

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
#: What the SDK raises when Maestro fails or answers what it cannot read: requests'
#: errors, ``ValueError``/``KeyError`` (not JSON, a missing field), ``AttributeError``/
#: ``TypeError`` (JSON of another shape: its ``ServerMessage.from_json`` calls ``.get``),
#: ``RuntimeError`` (its own checks: not logged in, version unknown).
SDK_FAILURES = (requests.RequestException, ValueError, KeyError, AttributeError, TypeError,
                RuntimeError)


def failure(exc: BaseException, *, server: str, doing: str, label: str | None = None,
            user: str = "", task: str = "", timeout: float | None = None,
            sdk_timeout: float = 30.0) -> StoreError:
    """The plugin's error for a failed Maestro request (``doing``: "the login", "the read
    of credential 'ms365'", ...), one cause and one next step (:data:`.errors.MESSAGES`):
    the connection refused, a host that does not resolve, a certificate not trusted, a
    dropped connection, an answer too slow, a 5xx, a 401/403 (of a login, a logged-in SDK
    or a Runner's ``task``), or an answer that is not Maestro's. ``timeout``: the bound of
    the whole request (``MS365_HTTP_TIMEOUT``), ``sdk_timeout``: the SDK's own, per socket
    read."""
    where = {"server": server, "doing": doing, "label": label, "user": user, "task": task}
    if isinstance(exc, requests.Timeout):
        seconds = timeout if isinstance(exc, DeadlineExceeded) and timeout else sdk_timeout
        return _made("maestro-slow", where, seconds=f"{seconds:g}")
    if isinstance(exc, requests.ConnectionError):
        kind = connection_failure(exc)
        return _made(f"maestro-{kind}" if kind != "refused" else "maestro-refused-connection",
                     where, error=_innermost(exc))
    response = getattr(exc, "response", None)
    found = re.search(r"returned (\d{3})", str(exc)) if isinstance(exc, ValueError) else None
    status = getattr(response, "status_code", None) or (int(found.group(1)) if found else None)
    if status in (401, 403):
        name = ("maestro-refused-login" if doing == "the login" else
                "maestro-refused-runner" if task else "maestro-refused-key")
        return _made(name, where, status=status)
    if status is not None and (status >= 500 or status == 429):
        name = "maestro-failing-read" if label and doing.startswith("the read") else (
            "maestro-failing")
        return _made(name, where, status=status)
    if status == 404 and doing.startswith("the read of task"):
        return _made("maestro-no-task", where, status=status)
    if status is not None:
        return _made("maestro-not-maestro", where, status=status, what=f"HTTP {status}")
    if isinstance(exc, RuntimeError):  # the SDK's own checks: not logged in, no version
        return _made("maestro-not-logged-in", where, error=str(exc).strip().rstrip("."))
    if isinstance(exc, (ValueError, KeyError, AttributeError, TypeError)):
        # an answer that is not a credential set or a task: a proxy's page, an odd gateway
        return _made("maestro-not-maestro", where, what="not the JSON Maestro sends")
    return StoreError(f"BotCity Maestro at {server} failed {doing}: {type(exc).__name__}.")


def _innermost(exc: BaseException) -> str:
    """The error under requests' and urllib3's wrappers ("RemoteDisconnected: Remote end
    closed connection without response"), without an address's details."""
    inner: BaseException = exc
    for _ in range(5):  # requests' ConnectionError > urllib3's MaxRetryError > ... > the OS's
        nested = getattr(inner, "reason", None) or next(
            (a for a in inner.args if isinstance(a, BaseException)), None)
        if not isinstance(nested, BaseException):
            break
        inner = nested
    text = str(inner.args[-1] if inner.args else "")
    return f"{type(inner).__name__}: {text}" if text and len(text) < 120 else (
        type(inner).__name__)


def _made(name: str, where: dict[str, Any], status: int | None = None,
          **values: object) -> StoreError:
    kind = MESSAGES[name].raised_as
    assert issubclass(kind, StoreError), name
    return kind(told(name, **where, status=status, **values), status=status)


def connect(server: str, login: str, key: str, timeout: float | None = None) -> Any:
    """A ``BotMaestroSDK`` logged in to ``server`` (what ``botcity-ms365`` uses); each
    request of the login ends within ``timeout`` s (``MS365_HTTP_TIMEOUT``)."""
    from botcity.maestro import BotMaestroSDK

    sdk = BotMaestroSDK(server, login, key)
    seconds = Settings.from_environ().http_timeout if timeout is None else timeout
    try:
        with bounded(seconds):
            sdk.login()
    except SDK_FAILURES as exc:
        # its version call raises HTTPError; its login says "Error during login. Server
        # returned <status>. <Maestro's message>"
        raise failure(exc, server=server, doing="the login", user=login,
                      timeout=seconds) from None
    return sdk


def task_execution(maestro: Any) -> Any:
    """``maestro.get_execution()``, the task a Runner started the bot for (its id and
    parameters), bounded by ``MS365_HTTP_TIMEOUT``; Maestro's failures are the plugin's
    :class:`~.errors.StoreError` (:class:`~.errors.StoreUnavailable` when Maestro is down
    or failing), one cause and one next step, instead of the SDK's ``ConnectionError`` or
    ``ValueError``. Without a Runner (BotCity's offline mode) it is the SDK's offline
    execution."""
    seconds = Settings.from_environ().http_timeout
    try:
        with bounded(seconds):
            return maestro.get_execution()
    except SDK_FAILURES as exc:
        raise failure(exc, server=str(getattr(maestro, "server", "") or "?"),
                      doing=f"the read of task {task_id(maestro) or '?'}",
                      task=task_id(maestro), timeout=seconds,
                      sdk_timeout=float(getattr(maestro, "timeout", 30.0) or 30.0)) from None


def is_online(sdk: Any) -> bool:
    """Whether a ``BotMaestroSDK`` is connected (not BotCity's offline mode)."""
    return bool(getattr(sdk, "is_online", False))


def task_id(sdk: Any) -> str:
    """The task a Runner started the bot for ("" without a Runner)."""
    value = getattr(sdk, "task_id", None) if sdk is not None else None
    return "" if value in (None, "", 0, "0") else str(value)


def started_by_runner(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is how a BotCity Runner starts a bot: ``bot.py <server> <task_id>
    <token> [<organization>]`` (what ``BotMaestroSDK.from_sys_args`` takes), with the
    server an ``http(s)://`` address. True even when the bot never hands the plugin its
    Maestro connection (code written for 0.2.0): nobody is at a Runner to consent."""
    if len(argv) < 4:
        return False
    server, task = urlsplit(str(argv[1])), str(argv[2])
    return (server.scheme in ("https", "http") and bool(server.hostname)
            and not server.query and not server.fragment
            and task.isascii() and task.isdigit())  # Maestro's task ids are numbers


def runner_sdk(argv: Sequence[str]) -> Any:
    """The ``BotMaestroSDK`` a Runner's ``argv`` describes (as ``from_sys_args`` makes it,
    without logging in): for alerts of a bot that did not hand the plugin its own."""
    from botcity.maestro import BotMaestroSDK

    server, task, token, *rest = [str(a) for a in argv[1:]]
    sdk = BotMaestroSDK()
    sdk.server, sdk.access_token, sdk.task_id = server, token, task
    sdk.organization = rest[0] if rest else ""
    return sdk


def _version_tuple(version: str | None) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version or "")
    return tuple(int(n) for n in numbers[:3]) or (0,)


#: The Maestro version the plugin's token writes need: changing an existing key (the
#: SDK's update and remove read the set and write it back whole).
WRITES_NEED = (3, 0, 0)


def edits_keys(version: str | None) -> bool:
    """Whether a Maestro of ``version`` can change and remove existing credential keys."""
    return _version_tuple(version) >= WRITES_NEED


class MaestroVault:
    """Credential sets of one connected ``BotMaestroSDK``.

    Reads are kept: ``read(label)`` answers from the last read unless it is older than
    ``max_age`` seconds. A write changes one key of the set as it was last read (callers
    read just before they write; a read older than :data:`WRITE_BASE_AGE` seconds is made
    again), so the other keys, and the fields Maestro keeps with each, are written back as
    an operator last left them. Maestro's API writes whole sets: two writers within a few
    milliseconds can still lose one write."""

    #: How old the read a write is based on may be (callers read just before).
    WRITE_BASE_AGE = 1.0

    def __init__(self, maestro: Any, timeout: float | None = None) -> None:
        self._sdk = maestro
        #: Seconds each request to Maestro may take in all (``MS365_HTTP_TIMEOUT``).
        self.timeout = Settings.from_environ().http_timeout if timeout is None else timeout
        self._sets: dict[str, list[dict[str, Any]] | None] = {}
        self._read_at: dict[str, float] = {}
        self._watchers: dict[str, list[Callable[[dict[str, str]], None]]] = {}

    @property
    def server(self) -> str:
        return str(getattr(self._sdk, "server", "") or "?")

    @property
    def version(self) -> str | None:
        """Maestro's version, as its ``GET /api/v2/maestro/version`` answered the login
        (None: not known)."""
        value = getattr(self._sdk, "version", None)
        return str(value) if value else None

    @property
    def organization(self) -> str:
        """The workspace (organization label; empty when a Runner gave only three
        arguments)."""
        return str(getattr(self._sdk, "organization", "") or "")

    def watch(self, label: str, callback: Callable[[dict[str, str]], None]) -> None:
        """Call ``callback(values)`` after every read of ``label`` (an operator may have
        changed a key, such as the client secret, since the last one)."""
        self._watchers.setdefault(label, []).append(callback)

    def __repr__(self) -> str:
        return f"MaestroVault(server={self.server!r})"

    def _fail(self, action: str, label: str, exc: BaseException) -> StoreError:
        """The error for ``action`` ("read", "write", "remove a key of") on ``label``."""
        doing = {"read": f"the read of credential '{label}'",
                 "write": f"the write of credential '{label}'"}.get(
            action, f"the removal of a key of credential '{label}'")
        return failure(exc, server=self.server, doing=doing, label=label,
                       user=str(getattr(self._sdk, "_login", "") or ""),
                       task=task_id(self._sdk), timeout=self.timeout,
                       sdk_timeout=float(getattr(self._sdk, "timeout", 30.0) or 30.0))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The SDK's ``method``; each request it makes ends within :attr:`timeout` s."""
        with bounded(self.timeout):
            return getattr(self._sdk, method)(*args, **kwargs)

    def _secrets(self, label: str, max_age: float | None) -> list[dict[str, Any]] | None:
        check_name("label", label)
        cached = label in self._sets
        if cached and (max_age is None or time.monotonic() - self._read_at[label] <= max_age):
            return self._sets[label]
        try:
            data = self._call("_get_credential_by_label", label, raise_exception=True)
        except requests.HTTPError as exc:
            # Maestro's answer for a label that does not exist is not documented: a client
            # error (404, 400) means "no such label"; a 5xx may mean that too, or an outage
            if exc.response is not None and exc.response.status_code in (400, 404):
                data = None
            else:
                raise self._fail("read", label, exc) from None
        except SDK_FAILURES as exc:
            # not JSON (a proxy's page), or JSON the SDK cannot read (a list)
            raise self._fail("read", label, exc) from None
        if data is not None and (not isinstance(data, dict)
                                 or not isinstance(data.get("secrets"), list)):
            raise self._fail("read", label, ValueError())
        secrets = None if data is None else [
            dict(item) for item in data["secrets"]
            if isinstance(item, dict) and item.get("key") is not None
        ]
        self._read_at[label] = time.monotonic()  # first: a reader checks _sets, then this
        self._sets[label] = secrets
        if secrets is not None:
            values = self._values(secrets)
            for callback in self._watchers.get(label, []):
                callback(values)
        return secrets

    @staticmethod
    def _values(secrets: list[dict[str, Any]]) -> dict[str, str]:
        return {str(item["key"]): "" if item.get("value") is None else str(item["value"])
                for item in secrets}

    def read(self, label: str, *, max_age: float | None = None) -> dict[str, str] | None:
        """The keys and values of ``label`` (None when the label does not exist), from a
        read at most ``max_age`` seconds old (``None``: any earlier read will do)."""
        secrets = self._secrets(label, max_age)
        return None if secrets is None else self._values(secrets)

    def add(self, label: str, key: str, value: str) -> None:
        """Add the new key ``key`` to the existing set ``label`` without sending any other
        key (Maestro's add-key request, which the SDK's ``create_credential`` makes for a
        set that exists): nothing another writer changed meanwhile can be undone by it.
        ``key`` must not exist in the set yet (what Maestro does then is not documented)."""
        check_name("key", key)
        sdk = self._sdk
        try:
            with bounded(self.timeout):
                from botcity.maestro import sdk as module

                with module.requests.post(
                        f"{sdk.server}/api/v2/credential/{check_name('label', label)}/key",
                        json={"key": key, "value": value}, headers=sdk._headers(),
                        timeout=sdk.timeout, verify=sdk.VERIFY_SSL_CERT) as answer:
                    answer.raise_for_status()
        except SDK_FAILURES as exc:
            raise self._fail("write", label, exc) from None
        kept = self._sets.get(label)
        if kept is not None:
            kept.append({"key": key, "value": value, "valid": True})
        log.debug("Added key %r to Maestro credential %r", key, label)

    def write(self, label: str, key: str, value: str, *,
              drop: Callable[[str], bool] | None = None) -> None:
        """Set ``key`` of ``label`` to ``value``, creating the label or key when absent and
        leaving every other key of the set as it is, but those ``drop`` says to remove
        (Maestro 3.0 or newer: the set is written whole)."""
        check_name("key", key)
        # A read that failed (a 5xx, a timeout) raises here and nothing is written: a
        # failed read is never a reason to create the label, which would replace a set
        # holding the app's client id and secret with one holding only this key.
        try:
            secrets = self._secrets(label, self.WRITE_BASE_AGE)
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"{exc} Nothing was written.", status=exc.status) from None
        try:
            if secrets is None:
                self._call("_create_credential_by_label",
                    label, [{"key": key, "value": value, "valid": True}])
                secrets = []
            elif not edits_keys(getattr(self._sdk, "version", None)):
                if any(item.get("key") == key for item in secrets):
                    raise StoreError(told("maestro-too-old", server=self.server,
                                          version=self._sdk.version, key=key, label=label))
                self._call("create_credential", label, key, value)
            else:
                edited = [dict(item) for item in secrets if item.get("key") == key
                          or drop is None or not drop(str(item.get("key")))]
                for item in edited:
                    if item.get("key") == key:
                        item["value"] = value
                        break
                else:
                    edited.append({"key": key, "value": value, "valid": True})
                try:
                    self._call("_edit_credential_by_label", label, edited)
                except requests.HTTPError as exc:
                    if exc.response is None or exc.response.status_code != 404:
                        raise
                    # the label was deleted since it was read: create it with this key
                    self._call("_create_credential_by_label",
                        label, [{"key": key, "value": value, "valid": True}])
                    secrets = []
        except StoreError:
            raise
        except SDK_FAILURES as exc:
            self._sets.pop(label, None)  # what Maestro holds now is unknown
            raise self._fail("write", label, exc) from None
        changed = [item for item in secrets or [] if item.get("key") != key
                   and (drop is None or not drop(str(item.get("key"))))]
        self._sets[label] = [*changed, {"key": key, "value": value, "valid": True}]
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
            self._call("alert", task_id=task_id(self._sdk), title=title,
                            message=message,
                            alert_type=AlertType.ERROR if error else AlertType.WARN)
        except SDK_FAILURES as exc:
            log.warning("Could not raise a Maestro alert at %s: %s", self.server,
                        type(exc).__name__)
            return False
        return True

    def remove(self, label: str, key: str, *,
               also: Callable[[str], bool] | None = None) -> None:
        """Remove ``key`` from ``label``, and the keys ``also`` says to (the other keys
        stay)."""
        try:
            if also is not None and edits_keys(getattr(self._sdk, "version", None)):
                # the read the caller just made will do, as for a write
                secrets = self._secrets(label, self.WRITE_BASE_AGE)
                kept = [dict(item) for item in secrets or []
                        if item.get("key") != key and not also(str(item.get("key")))]
                if secrets is not None and len(kept) < len(secrets):
                    self._call("_edit_credential_by_label", label, kept)
                self._sets.pop(label, None)
                return
            self._call("remove_credential", label, key)
        except ValueError as exc:
            if "does not exist" not in str(exc):
                raise self._fail("remove a key of", label, exc) from None
        except SDK_FAILURES as exc:
            raise self._fail("remove a key of", label, exc) from None
        self._sets.pop(label, None)  # read again when next asked
