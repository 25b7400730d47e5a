"""A certificate as the Azure app's credential, instead of a client secret.

Microsoft recommends certificates for confidential clients: a secret lives at most two
years and every bot stops the day it expires; many tenants forbid secrets in production.
msal signs each token request with the private key (a *client assertion*) and names the
certificate by its SHA-1 thumbprint, the one the portal shows under *Certificates &
secrets > Certificates*.

:func:`load_certificate` takes what a person has at hand: the PEM of the private key (PKCS#8
or PKCS#1, encrypted or not), with or without the certificate after it, as text or as the
path of a file, or a .pfx/.p12 file (what Windows' ``Export-PfxCertificate`` writes). It
checks everything msal would only find at the first token request (a
certificate without its key, a wrong password, a thumbprint that is not 40 hex digits, or
not this certificate's), and raises :class:`ConfigurationError` naming where the value came
from and what to do. The key is kept decrypted in memory only; it never reaches a log,
``repr`` or an error.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["ClientCertificate", "load_certificate"]

#: How a person makes one (the README and docs say more).
HOW_TO_MAKE = (
    "Make one with: openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out "
    "cert.pem -days 365 -subj \"/CN=botcity-bot\" (upload cert.pem to the app under "
    "Certificates & secrets > Certificates; use key.pem followed by cert.pem here)")
#: Warn this many days before the certificate expires.
WARN_DAYS = 30


@dataclass(frozen=True)
class ClientCertificate:
    """The app's certificate: its private key (decrypted, in memory only), its SHA-1
    thumbprint as the portal shows it, and, when the PEM held the certificate, its
    validity and subject."""

    private_key_pem: str = field(repr=False)
    thumbprint: str
    not_after: dt.datetime | None = None
    subject: str | None = None

    def msal_credential(self) -> dict[str, str]:
        """What msal's ``client_credential`` takes for a certificate."""
        return {"private_key": self.private_key_pem, "thumbprint": self.thumbprint}

    def days_left(self, now: dt.datetime | None = None) -> float | None:
        if self.not_after is None:
            return None
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400

    def describe(self) -> str:
        """``certificate <thumbprint>, expires <date>`` (no secret in it)."""
        if self.not_after is None:
            return f"certificate {self.thumbprint} (its expiry is not known: the PEM holds " \
                   "only the key)"
        return f"certificate {self.thumbprint}, expires " \
               f"{self.not_after.strftime('%Y-%m-%d %H:%M UTC')}"


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)


def _content(value: str, where: str) -> str | bytes:
    """``value`` itself when it is PEM text, else the content of the file it names: its
    text (PEM), or its bytes when it is binary (a .pfx/.p12)."""
    text = value.strip()
    if "-----BEGIN" in text:
        return text
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{where}: the client certificate is neither PEM text nor an existing file "
            f"('{path}' does not exist). Give the path of the PEM or .pfx file, or the PEM "
            "text.") from None
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: cannot read the client certificate file '{path}' "
            f"({exc.strerror or type(exc).__name__}). Check the path and its permissions."
        ) from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data
    if "-----BEGIN" not in content:
        raise ConfigurationError(
            f"{where}: '{path}' is neither a PEM file (no -----BEGIN line) nor a .pfx.")
    return content


def _key_and_certificate(content: str | bytes, password: str | None,
                         where: str) -> tuple[Any, Any]:
    """The private key and the certificate (None when the PEM holds only the key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    secret = password.encode() if password else None
    if isinstance(content, bytes):  # PKCS#12, as Windows' Export-PfxCertificate writes
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(content, secret)
        except ValueError:
            raise ConfigurationError(
                f"{where}: the .pfx cannot be opened: " + (
                    "wrong client_certificate_password, or not a .pfx." if secret else
                    "give its password (client_certificate_password, or "
                    "MS365_CLIENT_CERTIFICATE_PASSWORD), or it is not a .pfx.")) from None
        if key is None:
            raise ConfigurationError(f"{where}: the .pfx holds no private key: export it "
                                     "with its private key.")
        return key, cert

    blocks: dict[str, str] = {}
    for match in _PEM_BLOCK.finditer(content):  # the first of each kind: a chain's leaf
        blocks.setdefault(match.group(1), match.group(0))
    key_block = next((block for name, block in blocks.items() if "PRIVATE KEY" in name), None)
    if key_block is None:
        raise ConfigurationError(
            f"{where}: the client certificate holds no private key (no BEGIN PRIVATE KEY "
            "block). The app signs in with the key: put the PEM of the private key (the "
            "certificate may follow it); the certificate alone is what you upload to Azure.")
    try:
        key = serialization.load_pem_private_key(key_block.encode(), password=secret)
    except TypeError:
        if secret is None:
            raise ConfigurationError(
                f"{where}: the private key is encrypted: give its password "
                "(client_certificate_password, or MS365_CLIENT_CERTIFICATE_PASSWORD).") from None
        raise ConfigurationError(
            f"{where}: a password was given but the private key is not encrypted: remove "
            "client_certificate_password.") from None
    except ValueError:
        if secret is not None:
            raise ConfigurationError(
                f"{where}: the password does not decrypt the private key (wrong "
                "client_certificate_password).") from None
        raise ConfigurationError(
            f"{where}: the private key is not a PEM private key this plugin can read. "
            + HOW_TO_MAKE + ".") from None
    cert = None
    if "CERTIFICATE" in blocks:
        try:
            cert = x509.load_pem_x509_certificate(blocks["CERTIFICATE"].encode())
        except ValueError:
            raise ConfigurationError(f"{where}: the certificate after the key is not a "
                                     "readable X.509 certificate.") from None
    return key, cert


def _thumbprint(value: str, where: str) -> str:
    """Upper-case hex, with the colons and spaces people copy along taken out."""
    text = re.sub(r"[\s:]", "", value).upper()
    if not re.fullmatch(r"[0-9A-F]{40}", text):
        raise ConfigurationError(
            f"{where}: client_certificate_thumbprint is not a SHA-1 thumbprint (40 hex "
            f"digits, as the portal shows under Certificates & secrets > Certificates; "
            f"got {len(text)} characters).")
    return text


def load_certificate(value: str, *, where: str, thumbprint: str | None = None,
                     password: str | None = None) -> ClientCertificate:
    """Read the app's certificate from ``value``: PEM text, or the path of a PEM or .pfx
    file. ``where`` names its source in errors ("Maestro credential 'ms365'")."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key, cert = _key_and_certificate(_content(value, where), password, where)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(
            f"{where}: the private key is not an RSA key; Microsoft Entra ID accepts only RSA "
            "certificates. " + HOW_TO_MAKE + ".")
    if key.key_size < 2048:
        raise ConfigurationError(
            f"{where}: the RSA key has {key.key_size} bits; Microsoft Entra ID requires at "
            "least 2048 (AADSTS50032). " + HOW_TO_MAKE + ".")
    not_after = subject = None
    given = _thumbprint(thumbprint, where) if thumbprint else None
    if cert is not None:
        public = cert.public_key()
        if not (isinstance(public, rsa.RSAPublicKey)
                and public.public_numbers() == key.public_key().public_numbers()):
            raise ConfigurationError(
                f"{where}: the certificate is not the private key's (another key pair). Put "
                "the key and its own certificate together.")
        computed = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Azure's id
        if given and given != computed:
            raise ConfigurationError(
                f"{where}: client_certificate_thumbprint {given} is not this certificate's "
                f"({computed}). Remove the thumbprint (it is computed from the certificate) "
                "or correct it.")
        given = computed
        not_after = cert.not_valid_after_utc
        subject = cert.subject.rfc4514_string()
    if given is None:
        raise ConfigurationError(
            f"{where}: the PEM holds only the private key, so the certificate's thumbprint "
            "is needed: set client_certificate_thumbprint (as the portal shows it under "
            "Certificates & secrets > Certificates), or append the certificate to the PEM.")
    decrypted = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    return ClientCertificate(decrypted, given, not_after, subject)
