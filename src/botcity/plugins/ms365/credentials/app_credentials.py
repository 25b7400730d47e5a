"""Where the Azure app's client id and credential (a secret or a certificate) and tenant
come from.

First hit wins: explicit arguments; the Maestro credential ``credential_label`` (keys
``client_id``, and ``client_secret`` or ``client_certificate`` with optional
``client_certificate_thumbprint`` and ``client_certificate_password``, and optional
``tenant_id``); the environment (``MS365_CLIENT_ID``, ``MS365_CLIENT_SECRET`` or
``MS365_CLIENT_CERTIFICATE`` (a path) with ``MS365_CLIENT_CERTIFICATE_THUMBPRINT`` and
``MS365_CLIENT_CERTIFICATE_PASSWORD``, ``MS365_TENANT_ID``). A place has exactly one of a
secret or a certificate; both, or a client id with neither, is an error that names the
keys found there. A Maestro credential that does not exist is an error of its own (a
mistyped label is not helped by the environment's keys, which a Runner does not have); one
without the app's keys is skipped, with a warning when the environment's keys are used
instead. When no place has anything, the error lists every place searched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._maestro import MaestroVault
from .errors import ConfigurationError, login_command, told
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

log = logging.getLogger(__name__)


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


class Searched(list[str]):
    """The places searched, when none had the app's credentials; ``bare``: the Maestro
    credential that exists without them (its message), if one was named."""

    bare: str | None = None


def held_keys(values: Mapping[str, str]) -> str:
    """What a credential holds, for a message (its keys' names, without the notes the
    plugin adds beside the token)."""
    names = sorted(k for k in values if not _NOTE_KEY.search(k))
    if not names:
        return "no keys"
    if len(names) == 1:
        return f"only the key {names[0]}"
    return f"only the keys {', '.join(names[:-1])} and {names[-1]}"


_NOTE_KEY = re.compile(r"\.(claim|release|refused)\.\d+\.[0-9a-f]+$")


def no_such_label(label: str, server: str) -> ConfigurationError:
    """A Maestro credential ``label`` that the workspace at ``server`` does not have."""
    return ConfigurationError(told("no-such-label", label=label, server=server,
                                   command=login_command(label=label)))


def resolve_app_credentials(client_id: str | None, client_secret: str | None,
                            tenant_id: str | None, **where: Any) -> AppCredentials:
    """:func:`find_app_credentials`, and an error saying where they are missing when none
    has them."""
    found = find_app_credentials(client_id, client_secret, tenant_id, **where)
    if isinstance(found, AppCredentials):
        return found
    if isinstance(found, Searched) and found.bare:
        raise ConfigurationError(found.bare)
    raise ConfigurationError(told("no-app-keys", searched="; ".join(found)))


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
    with a wrong or half credential, and a Maestro credential ``label`` that does not
    exist, are a :class:`ConfigurationError`."""
    searched = Searched()
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
                raise no_such_label(label, vault.server)
            tenant = tenant_id or values.get("tenant_id") or env_tenant or "common"
            app = from_credential(values, where, tenant=tenant,
                                  source=f"Maestro credential '{label}'")
            if app is not None:
                return app
            searched.append(f"{where} (no client_id, client_secret or client_certificate "
                            "keys)")
            searched.bare = told("label-without-app-keys", label=label, server=vault.server,
                                 keys=held_keys(values))

    found = _Found(f"The environment ({ENV_CLIENT_ID}, {ENV_CLIENT_SECRET}, "
                   f"{ENV_CLIENT_CERTIFICATE})",
                   (ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_CLIENT_CERTIFICATE,
                    ENV_CLIENT_CERTIFICATE_THUMBPRINT, ENV_CLIENT_CERTIFICATE_PASSWORD),
                   env.client_id, env.client_secret, env.certificate, env.thumbprint,
                   env.password)
    if found.anything():
        if searched.bare:
            log.warning("Maestro credential '%s' has no app keys: using the environment's "
                        "(%s). A Runner, which has no such variables, cannot use this "
                        "credential: add client_id and client_secret to it in Maestro.",
                        label, ENV_CLIENT_ID)
        return found.resolve(tenant_id or env_tenant or "common", "environment")
    searched.append(f"the environment variables {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} or "
                    f"{ENV_CLIENT_CERTIFICATE}")
    return searched
