"""Where the Azure app's client id and credential (a secret or a certificate) and tenant
come from.

First hit wins: explicit arguments; the Maestro credential ``credential_label`` (keys
``client_id``, and ``client_secret`` or ``client_certificate`` with optional
``client_certificate_thumbprint`` and ``client_certificate_password``, and optional
``tenant_id``); the environment (``MS365_CLIENT_ID``, ``MS365_CLIENT_SECRET`` or
``MS365_CLIENT_CERTIFICATE`` (a path) with ``MS365_CLIENT_CERTIFICATE_THUMBPRINT`` and
``MS365_CLIENT_CERTIFICATE_PASSWORD``, ``MS365_TENANT_ID``). A place has exactly one of a
secret or a certificate; both, or a client id with neither, is an error that names the
keys found there. When no place has anything, the error lists every place searched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._maestro import MaestroVault
from .errors import ConfigurationError
from .settings import (
    ENV_CLIENT_CERTIFICATE,
    ENV_CLIENT_CERTIFICATE_PASSWORD,
    ENV_CLIENT_CERTIFICATE_THUMBPRINT,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    AppEnvironment,
)

if TYPE_CHECKING:  # imported when a certificate is used: most bots have a secret
    from .certificates import ClientCertificate


class AppCredentials(NamedTuple):
    client_id: str
    client_secret: str  # "" when the app signs in with a certificate
    tenant_id: str
    source: str  # where they were found, for logs and messages
    certificate: ClientCertificate | None = None

    def __repr__(self) -> str:  # never the secret
        return (f"AppCredentials(client_id={self.client_id!r}, tenant_id={self.tenant_id!r}, "
                f"source={self.source!r}, credential={self.describe()!r})")

    @property
    def credential(self) -> str | dict[str, str]:
        """msal's ``client_credential``: the secret, or the certificate's key and
        thumbprint."""
        return self.certificate.msal_credential() if self.certificate else self.client_secret

    def describe(self) -> str:
        """What the app signs in with, without a secret: ``client secret`` or
        ``certificate <thumbprint>, expires <date>``."""
        return self.certificate.describe() if self.certificate else "client secret"


class _Found(NamedTuple):
    """What one place holds, under the names that place uses."""

    where: str
    names: tuple[str, str, str, str, str]  # id, secret, certificate, thumbprint, password
    client_id: str | None
    secret: str | None
    certificate: str | None
    thumbprint: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the secret, the key or the password
        return f"_Found(where={self.where!r})"

    def anything(self) -> bool:
        return bool(self.client_id or self.secret or self.certificate)

    def resolve(self, tenant: str, source: str) -> AppCredentials:
        id_name, secret_name, cert_name = self.names[:3]
        have = [name for name, value in ((id_name, self.client_id),
                                         (secret_name, self.secret),
                                         (cert_name, self.certificate)) if value]
        if self.secret and self.certificate:
            raise ConfigurationError(
                f"{self.where}: both {secret_name} and {cert_name} are set. The app signs in "
                f"with one: remove {secret_name} to use the certificate, or {cert_name} to "
                "use the secret.")
        if not self.client_id or not (self.secret or self.certificate):
            lack = id_name if not self.client_id else f"{secret_name} or {cert_name}"
            raise ConfigurationError(
                f"{self.where}: {', '.join(have)} {'is' if len(have) == 1 else 'are'} set but "
                f"{lack} is missing. Set the client id and one credential ({secret_name} is "
                "the secret's Value from the Azure portal, not its ID).")
        if self.certificate:
            from .certificates import load_certificate

            cert = load_certificate(self.certificate, where=self.where,
                                    thumbprint=self.thumbprint, password=self.password)
            return AppCredentials(self.client_id, "", tenant, source, cert)
        return AppCredentials(self.client_id, str(self.secret), tenant, source)


def _clean(value: Any) -> str | None:
    return (str(value).strip() or None) if value is not None else None


#: The keys of a Maestro credential that make the app's credential.
CREDENTIAL_KEYS = ("client_secret", "client_certificate", "client_certificate_thumbprint",
                   "client_certificate_password")


def credential_keys(values: Mapping[str, str] | None) -> tuple[str | None, ...]:
    """Those keys' values as read: equal tuples, the same credential (nothing to load)."""
    return tuple((values or {}).get(key) for key in CREDENTIAL_KEYS)


def from_credential(values: Mapping[str, str], where: str, *, tenant: str,
                    source: str) -> AppCredentials | None:
    """The app's credentials in a Maestro credential's keys (None: it has none of them)."""
    found = _Found(where, ("client_id", "client_secret", "client_certificate",
                           "client_certificate_thumbprint", "client_certificate_password"),
                   _clean(values.get("client_id")), _clean(values.get("client_secret")),
                   _clean(values.get("client_certificate")),
                   _clean(values.get("client_certificate_thumbprint")),
                   values.get("client_certificate_password") or None)
    return found.resolve(tenant, source) if found.anything() else None


def resolve_app_credentials(client_id: str | None, client_secret: str | None,
                            tenant_id: str | None, **where: Any) -> AppCredentials:
    """:func:`find_app_credentials`, and an error listing every place searched when none
    has them."""
    found = find_app_credentials(client_id, client_secret, tenant_id, **where)
    if isinstance(found, AppCredentials):
        return found
    raise ConfigurationError(
        "No client id and credential for the Azure app. Searched: " + "; ".join(found)
        + ". Pass client_id with client_secret (or client_certificate), or create a Maestro "
        "credential with the keys client_id and client_secret (or client_certificate) and "
        "pass its label as credential_label, or set the environment variables."
    )


def find_app_credentials(
    client_id: str | None,
    client_secret: str | None,
    tenant_id: str | None,
    *,
    vault: MaestroVault | None,
    label: str | None,
    env: AppEnvironment,
    client_certificate: str | None = None,
    client_certificate_thumbprint: str | None = None,
    client_certificate_password: str | None = None,
) -> AppCredentials | list[str]:
    """The app's credentials, or (when no place has any) the places searched. A place
    with a wrong or half credential is a :class:`ConfigurationError`."""
    searched: list[str] = []
    env_tenant = env.tenant_id

    found = _Found("The arguments", ("client_id", "client_secret", "client_certificate",
                                     "client_certificate_thumbprint",
                                     "client_certificate_password"),
                   _clean(client_id), _clean(client_secret), _clean(client_certificate),
                   _clean(client_certificate_thumbprint), client_certificate_password or None)
    if found.anything():
        return found.resolve(tenant_id or env_tenant or "common", "arguments")
    searched.append("the client_id/client_secret/client_certificate arguments")

    if label:
        if vault is None:
            searched.append(f"Maestro credential '{label}' (skipped: Maestro is not connected)")
        else:
            values = vault.read(label)
            where = f"Maestro credential '{label}' at {vault.server}"
            if values is None:
                searched.append(f"{where} (no such label)")
            else:
                tenant = tenant_id or values.get("tenant_id") or env_tenant or "common"
                app = from_credential(values, where, tenant=tenant,
                                      source=f"Maestro credential '{label}'")
                if app is not None:
                    return app
                searched.append(f"{where} (no client_id, client_secret or client_certificate "
                                "keys)")

    found = _Found(f"The environment ({ENV_CLIENT_ID}, {ENV_CLIENT_SECRET}, "
                   f"{ENV_CLIENT_CERTIFICATE})",
                   (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_CLIENT_CERTIFICATE,
                    ENV_CLIENT_CERTIFICATE_THUMBPRINT, ENV_CLIENT_CERTIFICATE_PASSWORD),
                   env.client_id, env.client_secret, env.certificate, env.thumbprint,
                   env.password)
    if found.anything():
        return found.resolve(tenant_id or env_tenant or "common", "environment")
    searched.append(f"the environment variables {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} or "
                    f"{ENV_CLIENT_CERTIFICATE}")
    return searched
