"""Certificate credentials in the sandbox: certificates made for a test, their public part
registered on an app (as the portal's *Certificates & secrets > Certificates* keeps it),
and the check of a client assertion as Microsoft Entra ID answers it.

What Entra ID answers, with sources, is in ``docs/notes/certificates.md``. In short: the
assertion is a JWT signed RS256 (thumbprint header ``x5t``, SHA-1) or PS256 (``x5t#S256``),
``aud`` the token endpoint, ``iss`` = ``sub`` = the client id, ``exp`` in the future. A
``jti`` seen before is *accepted*: msal sends one assertion for up to 9 minutes and Entra ID
does not reject it. Failures are 401 ``invalid_client``: AADSTS700027 (key not registered,
expired, or the signature does not verify), 700024 (time range), 700023 (audience), 700021
(issuer), 50027 (no thumbprint).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["AppCertificate", "MadeCertificate", "Rejected", "check_assertion",
           "make_certificate"]

_PORTAL_HINT = (
    "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured "
    "keys for app Id '{app}'. Review the documentation at "
    "https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding "
    "service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?"
    "view=graph-rest-1.0&tabs=http to build a query request URL, such as "
    "'https://graph.microsoft.com/beta/applications/{app}'")
_DOC = "Review the documentation at https://learn.microsoft.com/entra/identity-platform/" \
       "certificate-credentials ."


class Rejected(Exception):
    """Entra ID refuses the assertion: ``code`` and ``description`` as it writes them."""

    def __init__(self, code: str, description: str, status: int = 401,
                 error: str = "invalid_client") -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description, self.status, self.error = code, description, status, error


@dataclass
class AppCertificate:
    """A certificate's public part registered on an app."""

    thumbprint: str  # SHA-1, upper-case hex, as the portal shows it
    thumbprint_sha256: str
    public_key: Any
    start: float
    end: float
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def from_pem(cls, certificate_pem: str | bytes) -> AppCertificate:
        data = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
        cert = x509.load_pem_x509_certificate(data)
        return cls(cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Azure's
                   cert.fingerprint(hashes.SHA256()).hex().upper(), cert.public_key(),
                   cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp())

    def found_key(self) -> str:
        def stamp(moment: float) -> str:
            return time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(moment))
        return f"Found key 'Start={stamp(self.start)}, End={stamp(self.end)}'"


@dataclass(frozen=True)
class MadeCertificate:
    """A self-signed certificate made for a test (as the README's openssl line makes one)."""

    key_pem: str = field(repr=False)  # PKCS#8, encrypted when made with a password
    certificate_pem: str
    thumbprint: str

    @property
    def pem(self) -> str:
        """The private key followed by the certificate: one PEM that holds both."""
        return self.key_pem + self.certificate_pem


def make_certificate(*, days: float = 365, key_size: int = 2048, password: str | None = None,
                     subject: str = "botcity-bot", starts: float | None = None) -> MadeCertificate:
    """A new RSA key and a self-signed certificate valid from ``starts`` (default: an
    hour ago) for ``days`` (negative: already expired)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = time.time()
    if days > 0:
        first = now - 3600 if starts is None else starts
        last = first + days * 86400
    else:  # expired |days| days ago, after a year of validity
        last = now + days * 86400
        first = last - 365 * 86400
    start = dt.datetime.fromtimestamp(first, dt.timezone.utc)
    end = dt.datetime.fromtimestamp(last, dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password
        else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                encryption).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return MadeCertificate(key_pem, cert_pem,
                           cert.fingerprint(hashes.SHA1()).hex().upper())  # noqa: S303


def _thumbprint(header: dict[str, Any]) -> tuple[str, str] | None:
    """(``"x5t"`` or ``"x5t#S256"``, upper-case hex) from the JWT header (base64url, with or
    without padding), None when it has none or it does not decode."""
    for name in ("x5t#S256", "x5t"):
        value = header.get(name)
        if isinstance(value, str) and value:
            try:
                raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except (binascii.Error, ValueError):
                return None
            return name, raw.hex().upper()
    return None


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f0Z")


def check_assertion(assertion: str, *, client_id: str, endpoint: str,
                    certificates: list[AppCertificate], now: float | None = None) -> None:
    """Accept ``assertion`` for ``client_id`` at the token ``endpoint``, or raise
    :class:`Rejected` as Entra ID answers."""
    now = time.time() if now is None else now
    hint = _PORTAL_HINT.format(app=client_id)
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise Rejected("AADSTS50027", "Invalid JWT token. Token format not valid.") from None
    found = _thumbprint(header)
    if found is None:
        raise Rejected("AADSTS50027", "Invalid JWT token. No certificate thumbprint specified "
                       "in token header.")
    kind, thumbprint = found
    used = f"Thumbprint of key used by client: '{thumbprint}'"
    match = next((c for c in certificates if thumbprint == (
        c.thumbprint_sha256 if kind == "x5t#S256" else c.thumbprint)), None)
    if match is None:
        raise Rejected("AADSTS700027", "The certificate with identifier used to sign the "
                       "client assertion is not registered on application. [Reason - The key "
                       f"was not found., {used}, {hint}].")
    if not match.start <= now < match.end:
        raise Rejected("AADSTS700027", "The certificate with identifier used to sign the "
                       "client assertion is expired on application. [Reason - The key used is "
                       f"expired., {used}, {match.found_key()}, {hint}].")
    try:
        claims = jwt.decode(assertion, match.public_key, algorithms=["RS256", "PS256"],
                            options={"verify_exp": False, "verify_aud": False,
                                     "verify_iat": False, "verify_nbf": False})
    except jwt.PyJWTError:
        raise Rejected("AADSTS700027", "Client assertion contains an invalid signature. "
                       "[Reason - The provided signature value did not match the expected "
                       f"signature value., {used}, {match.found_key()}, {hint}].") from None
    valid_from = float(claims.get("nbf") or 0)
    expires = float(claims.get("exp") or 0)
    if not valid_from <= now < expires:
        raise Rejected("AADSTS700024", "Client assertion is not within its valid time range. "
                       f"Current time: {_iso(now)}, assertion valid from {_iso(valid_from)}, "
                       f"expiry time of assertion {_iso(expires)}. {_DOC}")
    if claims.get("aud") != endpoint:
        raise Rejected("AADSTS700023", "Client assertion audience claim does not match Realm "
                       f"issuer. {_DOC}")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise Rejected("AADSTS700021", "Client assertion application identifier doesn't match "
                       f"'client_id' parameter. {_DOC.rstrip(' .')}.")
