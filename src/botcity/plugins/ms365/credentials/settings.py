"""The environment variables the plugin reads: their names, and the values a plugin
takes from them when it is made (one parser for seconds). ``MS365_CONSENT`` is read by
``consent.choose_mode`` at each sign-in, the app's id, secret and tenant by
``app_credentials``, ``MS365_FALLBACK_DIR`` when a fallback is first needed, and
``BOTCITY_SERVER``/``BOTCITY_LOGIN``/``BOTCITY_KEY`` by ``botcity-ms365``. Arguments win
over all of these; the README's configuration table lists both."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

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


class Settings(NamedTuple):
    """What the environment says, read once when a plugin is made."""

    consent_timeout: float = 300.0
    retry_seconds: float = 60.0
    http_timeout: float = 60.0
    coordinate: bool = True
    authority_host: str | None = None
    graph_url: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        return cls(
            consent_timeout=seconds(environ, ENV_CONSENT_TIMEOUT, 300.0, 1, 86400),
            retry_seconds=seconds(environ, ENV_RETRY_SECONDS, 60.0, 0, 3600),
            http_timeout=seconds(environ, ENV_HTTP_TIMEOUT, 60.0, 1, 3600),
            coordinate=environ.get(ENV_COORDINATE, "").strip() != "0",
            authority_host=environ.get(ENV_AUTHORITY_HOST, "").strip() or None,
            graph_url=environ.get(ENV_GRAPH_URL, "").strip() or None,
        )
