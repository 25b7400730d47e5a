"""The environment variables the plugin reads: their names, and the values a plugin
takes from them when it is made (one parser for seconds, one check of a URL). This is the
only module that reads the plugin's variables; the others get :class:`Settings`. (The
operating system's own variables, such as ``LOCALAPPDATA``, are ``platform.py``'s.) The
``BOTCITY_*`` variables are the command's (``botcity-ms365``): :class:`MaestroConnection`.
Arguments win over all of these; the configuration page lists both."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from .errors import ConfigurationError

ENV_CLIENT_ID = "MS365_CLIENT_ID"
ENV_CLIENT_SECRET = "MS365_CLIENT_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_CLIENT_CERTIFICATE = "MS365_CLIENT_CERTIFICATE"
ENV_CLIENT_CERTIFICATE_THUMBPRINT = "MS365_CLIENT_CERTIFICATE_THUMBPRINT"
ENV_CLIENT_CERTIFICATE_PASSWORD = "MS365_CLIENT_CERTIFICATE_PASSWORD"  # noqa: S105 - a name
ENV_TENANT_ID = "MS365_TENANT_ID"
ENV_AUTHORITY_HOST = "MS365_AUTHORITY_HOST"
ENV_GRAPH_URL = "MS365_GRAPH_URL"
ENV_CONSENT = "MS365_CONSENT"
ENV_CONSENT_TIMEOUT = "MS365_CONSENT_TIMEOUT"
ENV_RETRY_SECONDS = "MS365_RETRY_SECONDS"
ENV_HTTP_TIMEOUT = "MS365_HTTP_TIMEOUT"
ENV_COORDINATE = "MS365_COORDINATE_REFRESH"
ENV_CAE = "MS365_CAE"
ENV_FALLBACK_DIR = "MS365_FALLBACK_DIR"
#: ``botcity-ms365``'s Maestro connection (a bot gets its own from the Runner).
ENV_BOTCITY_SERVER = "BOTCITY_SERVER"
ENV_BOTCITY_LOGIN = "BOTCITY_LOGIN"
ENV_BOTCITY_KEY = "BOTCITY_KEY"


class MaestroConnection(NamedTuple):
    """``botcity-ms365``'s Maestro server, login and key from the environment (None: not
    set). The key is kept out of ``repr``."""

    server: str | None
    login: str | None
    key: str | None

    def __repr__(self) -> str:
        return (f"MaestroConnection(server={self.server!r}, login={self.login!r}, "
                f"key={'***' if self.key else None})")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MaestroConnection:
        environ = os.environ if environ is None else environ
        return cls(*(environ.get(name, "").strip() or None for name in (
            ENV_BOTCITY_SERVER, ENV_BOTCITY_LOGIN, ENV_BOTCITY_KEY)))


def _on(value: str) -> bool:
    """A switch: on unless ``0``, ``false``, ``no`` or ``off`` (any case)."""
    return value.strip().lower() not in ("0", "false", "no", "off")


def seconds(environ: Mapping[str, str], name: str, default: float, low: float,
            high: float) -> float:
    """``name`` as seconds from ``low`` to ``high`` (``default`` when unset), or a
    :class:`ConfigurationError` naming the variable and the range."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be a number of seconds from {low:g} to "
                                 f"{high:g}, not {raw!r}.")
    return value


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(url_or_host: str) -> bool:
    """Whether a URL (or a bare host name) points at this machine."""
    host = urlsplit(url_or_host).hostname if "//" in url_or_host else url_or_host
    return (host or "") in LOOPBACK_HOSTS


def https_url(value: str, what: str, *, allow_local_http: bool) -> str:
    """``value`` without its trailing slash, when it is an https:// URL (or, with
    ``allow_local_http``, an http:// one on this machine); else :class:`ConfigurationError`."""
    parts = urlsplit(value)
    if not parts.hostname or not (parts.scheme == "https" or (
            allow_local_http and is_loopback(value) and parts.scheme == "http")):
        raise ConfigurationError(
            f"{what} must be an https:// URL such as https://login.microsoftonline.com, "
            f"not {value!r}.")
    return value.rstrip("/")


class AppEnvironment(NamedTuple):
    """The Azure app's credentials as the environment gives them (``MS365_CLIENT_*``)."""

    client_id: str | None = None
    client_secret: str | None = None
    certificate: str | None = None
    thumbprint: str | None = None
    password: str | None = None
    tenant_id: str | None = None

    def __repr__(self) -> str:  # never the secret or the password
        return f"AppEnvironment(client_id={self.client_id!r}, tenant_id={self.tenant_id!r})"


class Settings(NamedTuple):
    """What the environment says, read once when a plugin is made."""

    consent_timeout: float = 300.0
    retry_seconds: float = 60.0
    http_timeout: float = 60.0
    coordinate: bool = True
    #: ``MS365_CAE``: declare continuous access evaluation (msal's client capability CP1)
    cae: bool = True
    authority_host: str | None = None
    graph_url: str | None = None
    #: ``MS365_CONSENT``: the consent way when none is passed ("" : chosen by context)
    consent: str = ""
    #: ``MS365_FALLBACK_DIR``: where a token waits while Maestro cannot take it
    fallback_dir: str | None = None
    app: AppEnvironment = AppEnvironment()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        return cls(
            consent_timeout=seconds(environ, ENV_CONSENT_TIMEOUT, 300.0, 1, 86400),
            retry_seconds=seconds(environ, ENV_RETRY_SECONDS, 60.0, 0, 3600),
            http_timeout=seconds(environ, ENV_HTTP_TIMEOUT, 60.0, 1, 3600),
            coordinate=_on(environ.get(ENV_COORDINATE, "")),
            cae=_on(environ.get(ENV_CAE, "")),
            authority_host=text(ENV_AUTHORITY_HOST),
            graph_url=text(ENV_GRAPH_URL),
            consent=environ.get(ENV_CONSENT, "").strip(),
            fallback_dir=text(ENV_FALLBACK_DIR),
            app=AppEnvironment(
                client_id=text(ENV_CLIENT_ID), client_secret=text(ENV_CLIENT_SECRET),
                certificate=text(ENV_CLIENT_CERTIFICATE),
                thumbprint=text(ENV_CLIENT_CERTIFICATE_THUMBPRINT),
                password=environ.get(ENV_CLIENT_CERTIFICATE_PASSWORD) or None,
                tenant_id=text(ENV_TENANT_ID)),
        )
