"""The plugin's exceptions, and what Microsoft's answers mean.

One base class, and a subclass for each thing a user fixes differently. Messages name what
was wrong and what to do; they never hold a secret.

    MS365CredentialsError
    ├── ConfigurationError      arguments, labels, tenant or app credentials are missing or wrong
    ├── StoreError              Maestro or the token file could not be read or written
    │   ├── StoreUnavailable    ... because Maestro is unreachable or failing (try later)
    │   └── TokenFormatError    the stored token is not one this plugin can load
    ├── ServiceUnavailable      Microsoft's identity platform throttled or failed too long
    └── AuthorizationError      Microsoft refused (wrong or expired secret, refused consent, ...)
        └── AuthorizationRequired   a person must sign in and consent before the bot can go on

:data:`AADSTS` is the table of Azure AD error codes users meet: what each means and what
fixes it, in this plugin's words. :func:`explain` turns one of Microsoft's error answers
into the right exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple


class MS365CredentialsError(Exception):
    """Base class of every error this plugin raises on purpose."""


class ConfigurationError(MS365CredentialsError):
    """Arguments, Maestro labels, the tenant or the app's client id/secret are missing or
    malformed."""


class StoreError(MS365CredentialsError):
    """A credential or token store (BotCity Maestro, a local file) failed. ``status`` is
    the HTTP status Maestro answered, when that is what failed (401/403: it refused the
    login's access)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError):
    """Maestro did not answer, or answered 5xx or something that is not Maestro's: a
    passing problem, not a setting. ``status`` is the HTTP status Maestro answered, if
    it answered."""


class ServiceUnavailable(MS365CredentialsError):
    """Microsoft's identity platform answered 429 or 5xx (or was unreachable), or throttled
    a request loop (AADSTS50196), for longer than the retry budget
    (``MS365_RETRY_SECONDS``). ``code`` is the AADSTS code when Microsoft gave one."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


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
        known = AADSTS.get(self.code or "")
        return known.meaning if known else None


class AuthorizationRequired(AuthorizationError):
    """No usable token: a person must authorize the app before the bot can use Microsoft
    365. The message says where the plugin looked and the command that fixes it.
    ``claims`` is Microsoft's conditional-access challenge, when it sent one: the next
    sign-in passes it on."""

    def __init__(
        self,
        message: str,
        *,
        missing_permissions: tuple[str, ...] = (),
        error: str | None = None,
        code: str | None = None,
        claims: str | None = None,
    ):
        super().__init__(message, error=error, code=code)
        self.missing_permissions = missing_permissions
        self.claims = claims


# -- Microsoft's answers ------------------------------------------------------------------
_PORTAL = "In the Azure portal (entra.microsoft.com), App registrations > your app > "
_NEW_SECRET = (_PORTAL + "Certificates & secrets > New client secret; put its Value (not "
               "its Secret ID) into the credential's client_secret (or MS365_CLIENT_SECRET).")
_SIGN_IN_AGAIN = "A person must sign in again: botcity-ms365 login."
_CONDITIONAL = ("The person's own sign-in works, but a conditional access policy of the "
                "tenant refuses the sign-in from where the bot runs (a Runner's network or "
                "device). Ask the tenant's administrator to exclude the Runner's network (a "
                "trusted named location) or the bot's account from the policy, or use "
                "app-only access (auth_flow='app'). ")


class Known(NamedTuple):
    """An Azure AD error code: what it means, what fixes it, and how the plugin treats it:
    ``"sign_in"`` (a person must sign in: :class:`AuthorizationRequired`), ``"refused"``
    (the app's registration or secret: :class:`AuthorizationError`), ``"config"``
    (:class:`ConfigurationError`) or ``"throttled"`` (:class:`ServiceUnavailable`)."""

    meaning: str
    fix: str = ""
    kind: str = "refused"


#: Azure AD error codes users meet (Microsoft's error-code reference), in plain words.
AADSTS: dict[str, Known] = {
    "AADSTS50011": Known("the redirect URI is not registered for the app",
                         _PORTAL + "Authentication > Web: add "
                         "https://login.microsoftonline.com/common/oauth2/nativeclient "
                         "(console sign-in) and http://localhost (browser sign-in)."),
    "AADSTS50057": Known("the user account is disabled",
                         "An administrator must enable it (Entra admin center > Users > the "
                         "account > Account status), then a person signs in again: "
                         "botcity-ms365 login.", "sign_in"),
    "AADSTS50076": Known("conditional access requires multi-factor authentication for this "
                         "sign-in", _CONDITIONAL + "Then sign in once more with "
                         "botcity-ms365 login (with MFA).", "sign_in"),
    "AADSTS50079": Known("conditional access requires the account to register for "
                         "multi-factor authentication", "The account's owner must register "
                         "MFA (https://aka.ms/mfasetup), then sign in with botcity-ms365 "
                         "login. " + _CONDITIONAL, "sign_in"),
    "AADSTS53003": Known("access was blocked by a conditional access policy",
                         _CONDITIONAL + "Signing in again does not help until the policy "
                         "allows the bot.", "sign_in"),
    "AADSTS50173": Known("the grant was revoked: an administrator revoked the user's "
                         "sessions, or the user changed or reset their password",
                         _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS50194": Known("the app is single-tenant, so it cannot sign in through the "
                         "'common' endpoint",
                         "Set tenant_id (or MS365_TENANT_ID, or the key tenant_id of the "
                         "Maestro credential) to the Directory (tenant) ID shown on the app's "
                         "Overview page in the Azure portal.", "config"),
    "AADSTS50196": Known("Microsoft detected a request loop (too many identical token "
                         "requests in a short time) and is throttling them; the token is "
                         "fine", "Back off and try again in a few minutes.", "throttled"),
    "AADSTS54005": Known("the authorization code was already used",
                         "Start the sign-in again.", "refused"),
    "AADSTS65001": Known("the user or an administrator has not consented to (or revoked "
                         "consent for) the permissions the app asks for",
                         "A person must sign in and consent again (an administrator may "
                         "have to grant consent): botcity-ms365 login.", "sign_in"),
    "AADSTS65004": Known("the user declined to consent", "", "refused"),
    "AADSTS70008": Known("the refresh token expired or was revoked", _SIGN_IN_AGAIN,
                         "sign_in"),
    "AADSTS70011": Known("a requested permission does not exist",
                         "Check the scopes the bot asks for."),
    "AADSTS70043": Known("the tenant's conditional access (sign-in frequency) requires a "
                         "fresh sign-in", _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS700016": Known("no app with this client id exists in the tenant",
                          "Check client_id (the Application (client) ID on the app's "
                          "Overview page) and tenant_id."),
    "AADSTS700025": Known("the redirect URI is registered as a public client (Mobile and "
                          "desktop applications), so Microsoft refuses the client secret",
                          _PORTAL + "Authentication: remove the redirect URIs from 'Mobile "
                          "and desktop applications' and add them under 'Web' "
                          "(https://login.microsoftonline.com/common/oauth2/nativeclient and "
                          "http://localhost), or sign in with consent='device_code'."),
    "AADSTS700024": Known("the certificate's signed request (client assertion) is outside "
                          "its valid time range, which happens when this machine's clock is "
                          "wrong", "Set the machine's clock right (Windows: Settings > Time > "
                          "Sync now), then run again."),
    "AADSTS700027": Known("Microsoft does not accept the app's certificate",
                          _PORTAL + "Certificates & secrets > Certificates lists the "
                          "certificates registered on the app: upload the certificate the bot "
                          "uses (its public part: .cer, .pem or .crt), or, when it has "
                          "expired, make a new one, upload it and put it in the credential's "
                          "client_certificate."),
    "AADSTS700082": Known("the refresh token expired after 90 days without use",
                          _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS7000215": Known("the client secret is wrong (or it is the secret's ID instead "
                           "of its Value)", _NEW_SECRET),
    "AADSTS7000218": Known("the app registration does not allow public client flows",
                           _PORTAL + "Authentication: set 'Allow public client flows' to "
                           "Yes (needed for device code sign-in)."),
    "AADSTS7000222": Known("the client secret has expired", _NEW_SECRET),
    "AADSTS90002": Known("the tenant does not exist (in this cloud)",
                         "Set tenant_id to your Directory (tenant) ID or domain (the app's "
                         "Overview page in the Azure portal).", "config"),
}

_CODE = re.compile(r"AADSTS\d+")
#: Azure AD ends its descriptions with lines for its support: "Trace ID: ...".
_TRACE = re.compile(r"[\r\n ]+Trace ID:.*", re.DOTALL)


def aadsts_code(text: str | None) -> str | None:
    """The first ``AADSTSnnnn`` code in Microsoft's error description, if any."""
    match = _CODE.search(text or "")
    return match.group(0) if match else None


def microsoft_text(description: str | None) -> str:
    """Microsoft's error description without its trace, correlation and time lines."""
    return _TRACE.sub("", description or "").strip()


def explain(answer: Mapping[str, Any], doing: str) -> MS365CredentialsError:
    """The plugin's exception for an error answer of Microsoft's identity platform (a token
    or devicecode endpoint answer, as msal returns it), saying what it means and what to
    do. ``doing`` says what the plugin was doing, for the message."""
    error = str(answer.get("error") or "unknown_error")
    code = aadsts_code(str(answer.get("error_description") or ""))
    known = AADSTS.get(code or "")
    if known is None:
        told = f" ({code}: {microsoft_text(str(answer.get('error_description')))})" if code \
            else ""
        if error in ("invalid_grant", "interaction_required", "consent_required"):
            return AuthorizationRequired(
                f"Microsoft refused the stored token while {doing}: {error}{told}. "
                + _SIGN_IN_AGAIN, error=error, code=code, claims=_claims(answer))
        if error in ("authorization_declined", "access_denied"):
            return AuthorizationError(f"The person declined the sign-in while {doing}{told}.",
                                      error=error, code=code)
        if error == "expired_token":
            return AuthorizationError(f"The device code expired while {doing}; start again.",
                                      error=error, code=code)
        return AuthorizationError(f"Microsoft refused {doing}: {error}{told}.", error=error,
                                  code=code)
    meaning = known.meaning
    if code == "AADSTS700027":  # Microsoft says which certificate, and why
        description = str(answer.get("error_description") or "")
        reason = re.search(r"Reason - (.+?)[.,]", description)
        used = re.search(r"Thumbprint of key used by client: '([0-9A-Fa-f]+)'", description)
        meaning += (f" {used.group(1).upper()}" if used else "") + (
            f": {reason.group(1)}" if reason else "")
    message = f"Microsoft refused {doing}: {error} ({code}: {meaning})." + (
        f" {known.fix}" if known.fix else "")
    if known.kind == "throttled":
        return ServiceUnavailable(message, code=code)
    if known.kind == "config":
        return ConfigurationError(message)
    if known.kind == "sign_in":
        return AuthorizationRequired(message, error=error, code=code, claims=_claims(answer))
    return AuthorizationError(message, error=error, code=code)


def _claims(answer: Mapping[str, Any]) -> str | None:
    claims = answer.get("claims")
    return claims if isinstance(claims, str) and claims.strip() else None
