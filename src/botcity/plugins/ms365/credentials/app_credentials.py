"""Where the Azure app's client id and secret (and tenant) come from.

First hit wins: explicit arguments; the Maestro credential ``credential_label`` (keys
``client_id``, ``client_secret``, optional ``tenant_id``); the environment
(``MS365_CLIENT_ID``, ``MS365_CLIENT_SECRET``, ``MS365_TENANT_ID``). When none has them,
the error lists every place that was searched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ._maestro import MaestroVault
from .errors import ConfigurationError
from .settings import ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_TENANT_ID


@dataclass(frozen=True)
class AppCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    tenant_id: str
    source: str  # where they were found, for logs and messages


def _pair(
    client_id: str | None, client_secret: str | None, where: str
) -> tuple[str, str] | None:
    """Both values, None when neither is set, an error when only one is."""
    client_id = (client_id or "").strip() or None
    client_secret = (client_secret or "").strip() or None
    if client_id and client_secret:
        return client_id, client_secret
    if client_id or client_secret:
        have, lack = ("client_id", "client_secret") if client_id else ("client_secret",
                                                                        "client_id")
        raise ConfigurationError(
            f"{where}: {have} is set but {lack} is missing. Set both (client_secret is the "
            "secret's Value from the Azure portal, not its ID)."
        )
    return None


def resolve_app_credentials(
    client_id: str | None,
    client_secret: str | None,
    tenant_id: str | None,
    *,
    vault: MaestroVault | None,
    label: str | None,
    environ: Mapping[str, str],
) -> AppCredentials:
    searched: list[str] = []

    found = _pair(client_id, client_secret, "The arguments")
    if found:
        return AppCredentials(*found, tenant_id or environ.get(ENV_TENANT_ID) or "common",
                              "arguments")
    searched.append("the client_id/client_secret arguments")

    if label:
        if vault is None:
            searched.append(f"Maestro credential '{label}' (skipped: Maestro is not connected)")
        else:
            values = vault.read(label)
            where = f"Maestro credential '{label}' at {vault.server}"
            if values is None:
                searched.append(f"{where} (no such label)")
            else:
                found = _pair(values.get("client_id"), values.get("client_secret"), where)
                if found:
                    tenant = tenant_id or values.get("tenant_id") or environ.get(ENV_TENANT_ID)
                    return AppCredentials(*found, tenant or "common",
                                          f"Maestro credential '{label}'")
                searched.append(f"{where} (no client_id/client_secret keys)")

    found = _pair(environ.get(ENV_CLIENT_ID), environ.get(ENV_CLIENT_SECRET),
                  f"The environment ({ENV_CLIENT_ID}/{ENV_CLIENT_SECRET})")
    if found:
        return AppCredentials(*found, tenant_id or environ.get(ENV_TENANT_ID) or "common",
                              "environment")
    searched.append(f"the environment variables {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}")

    raise ConfigurationError(
        "No client id and secret for the Azure app. Searched: " + "; ".join(searched) + ". "
        "Pass client_id and client_secret, or create a Maestro credential with the keys "
        "client_id and client_secret and pass its label as credential_label, or set the "
        "environment variables."
    )
