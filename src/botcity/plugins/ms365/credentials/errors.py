"""The plugin's exceptions: one base class, and a subclass for each thing a user fixes
differently. Messages name what was wrong and what to do; they never hold a secret.

    MS365CredentialsError
    ├── ConfigurationError      arguments, labels or app credentials are missing or wrong
    ├── StoreError              Maestro or the token file could not be read or written
    │   ├── StoreUnavailable    ... because Maestro is unreachable or failing (try later)
    │   └── TokenFormatError    the stored token is not one this plugin can load
    ├── ServiceUnavailable      Microsoft's identity platform throttled or failed too long
    └── AuthorizationError      Microsoft refused (wrong secret, refused consent, ...)
        └── AuthorizationRequired   a person must sign in and consent before the bot can go on
"""

from __future__ import annotations

import re

#: Azure AD error codes users meet, in plain words.
AADSTS_MEANINGS = {
    "AADSTS50173": "the grant was revoked, usually because the user changed or reset "
                   "their password",
    "AADSTS65001": "the user or an administrator has not consented to (or revoked consent "
                   "for) the permissions the app asks for",
    "AADSTS65004": "the user declined to consent",
    "AADSTS70008": "the refresh token expired or was revoked",
    "AADSTS70011": "a requested permission does not exist",
    "AADSTS70043": "the tenant's conditional access (sign-in frequency) requires a fresh "
                   "sign-in",
    "AADSTS700016": "no app with this client id exists in the tenant",
    "AADSTS700082": "the refresh token expired after 90 days without use",
    "AADSTS7000215": "the client secret is wrong or expired (or it is the secret's ID "
                     "instead of its value)",
    "AADSTS7000218": "the app registration does not allow public client flows",
}

_CODE = re.compile(r"AADSTS\d+")


def aadsts_code(text: str | None) -> str | None:
    """The first ``AADSTSnnnn`` code in Microsoft's error description, if any."""
    match = _CODE.search(text or "")
    return match.group(0) if match else None


class MS365CredentialsError(Exception):
    """Base class of every error this plugin raises on purpose."""


class ConfigurationError(MS365CredentialsError):
    """Arguments, Maestro labels or the app's client id/secret are missing or malformed."""


class StoreError(MS365CredentialsError):
    """A credential or token store (BotCity Maestro, a local file) failed."""


class StoreUnavailable(StoreError):
    """Maestro did not answer, or answered 5xx: a passing problem, not a setting."""


class ServiceUnavailable(MS365CredentialsError):
    """Microsoft's identity platform answered 429 or 5xx (or was unreachable) for longer
    than the retry budget (``MS365_RETRY_SECONDS``)."""


class TokenFormatError(StoreError):
    """The stored token is unreadable (not JSON, truncated) or in a format this version
    cannot load. The stored value is left as it was."""


class AuthorizationError(MS365CredentialsError):
    """Microsoft's identity platform refused a request. ``error`` is the OAuth error
    (``invalid_grant``, ...), ``code`` the AADSTS code when Microsoft gave one."""

    def __init__(self, message: str, *, error: str | None = None, code: str | None = None):
        super().__init__(message)
        self.error = error
        self.code = code

    @property
    def meaning(self) -> str | None:
        return AADSTS_MEANINGS.get(self.code or "")


class AuthorizationRequired(AuthorizationError):
    """No usable token: a person must authorize the app before the bot can use Microsoft
    365. The message says where the plugin looked and the command that fixes it."""

    def __init__(
        self,
        message: str,
        *,
        missing_permissions: tuple[str, ...] = (),
        error: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, error=error, code=code)
        self.missing_permissions = missing_permissions
