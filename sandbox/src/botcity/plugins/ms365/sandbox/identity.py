"""A local Microsoft identity platform (Azure AD v2.0 endpoints), as msal and O365 expect it,
answering as Azure AD really does, unkind answers included.

Authority: ``https://127.0.0.1:PORT/<tenant>``. It serves OIDC discovery, the authorize
endpoint (the person's sign-in and consent, answered at once as :attr:`Tenant.signing_in`),
the token endpoint (authorization_code with PKCE, refresh_token with rotation,
client_credentials, device_code) and the devicecode endpoint.

What it models of Azure AD (sources: Microsoft's error-code reference and OAuth docs,
msal's sources, answers quoted in users' reports: ``docs/notes/azure-ad.md``):

- the app registration: redirect URIs per platform (*Web* is a confidential client;
  *Mobile and desktop* a public one, which refuses a secret: AADSTS700025), single- or
  multi-tenant (a single-tenant app on ``/common``: AADSTS50194, at the authorize endpoint
  as a redirect with ``error=invalid_request``), client secrets with an ID, a Value and an
  expiry (AADSTS7000222 expired, AADSTS7000215 wrong or the ID sent);
- tenants by id or domain; an unknown tenant fails OpenID discovery (400, AADSTS90002);
- permissions compared case-insensitively; the token answer's ``scope`` in Microsoft's
  casing, without the Graph prefix and ``offline_access``, with ``openid profile email``,
  and listing every permission the user consented to the app;
- authorization codes that live :attr:`Tenant.code_lifetime` seconds (10 minutes) and are
  redeemed once (AADSTS70008, AADSTS54005);
- conditional access on refreshes from the Runner (AADSTS50076/50079/53003 with
  ``suberror`` and ``claims``), satisfied by a person's interactive sign-in for MFA;
- loop detection (AADSTS50196) when :attr:`Tenant.loop_threshold` is set;
- error bodies with Trace ID, Correlation ID and Timestamp in the description,
  ``error_codes``, ``error_uri``;
- device codes with Azure AD's interval (5 s) and lifetime (900 s);
- tokens of realistic size (the stored token is 6 to 9 KB);
- access tokens that live a random 60 to 90 minutes (Microsoft's default), or, for a
  client that declares continuous access evaluation (the client capability ``cp1`` in the
  request's ``claims``: msal's ``client_capabilities``), 20 to 28 hours with ``refresh_in``
  (half of it); :attr:`Tenant.cae_enabled` off gives every client ordinary tokens;
- critical events (:meth:`Tenant.revoke_sessions`, :meth:`Tenant.change_password`,
  :meth:`Tenant.disable_account`, :meth:`Tenant.fail_ip_policy`): the refresh tokens they
  kill answer as Azure AD does (AADSTS50173, AADSTS50057, AADSTS53003), and Graph refuses
  the CAE access tokens issued before them with a claims challenge (``graph.py``).

:class:`Tenant` holds the state that the Graph server also reads (which access token
belongs to whom, with which permissions, until when).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import random
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._http import Reply, Request, RequestLog, Route, Service
from .client_assertions import AppCertificate, Rejected, check_assertion

RESERVED = {"openid", "profile", "offline_access", "email"}

#: Delegated Microsoft Graph permissions the sandbox knows, in Microsoft's casing; anything
#: else is invalid_scope, as Azure AD answers for a permission that does not exist.
GRAPH_PERMISSIONS = {
    "User.Read", "User.ReadBasic.All", "User.Read.All",
    "Mail.Read", "Mail.ReadWrite", "Mail.Send", "Mail.ReadBasic",
    "Mail.Read.Shared", "Mail.ReadWrite.Shared", "Mail.Send.Shared", "MailboxSettings.ReadWrite",
    "Contacts.Read", "Contacts.ReadWrite", "Contacts.Read.Shared", "Contacts.ReadWrite.Shared",
    "Calendars.Read", "Calendars.ReadWrite", "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
    "Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All",
    "Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All",
    "Tasks.Read", "Tasks.ReadWrite", "Presence.Read", "Notes.ReadWrite.All",
}
_CASING = {p.lower(): p for p in GRAPH_PERMISSIONS}
#: The Graph resource's app id, which Azure AD names in conditional-access messages.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
NATIVECLIENT = "/common/oauth2/nativeclient"

#: What the sandbox says for each way a refresh token can die.
REFRESH_TOKEN_DEATHS = {
    "revoked": ("AADSTS70008", "The provided authorization code or refresh token has expired "
                "due to inactivity. Send a new interactive authorization request for this "
                "user and resource."),
    "inactive": ("AADSTS700082", "The refresh token has expired due to inactivity. The token "
                 "was issued on 2026-01-01T00:00:00.0000000Z and was inactive for "
                 "90.00:00:00."),
    "password_reset": ("AADSTS50173", "The provided grant has expired due to it being revoked, "
                       "a fresh auth token is needed. The user might have changed or reset "
                       "their password."),
    "consent_revoked": ("AADSTS65001", "The user or administrator has not consented to use the "
                        "application. Send an interactive authorization request for this "
                        "user and resource."),
}

#: Conditional access policies a tenant can apply to refreshes made where the person is
#: not (a Runner): (code, suberror, text). "mfa" is satisfied by a person's interactive
#: sign-in with MFA; "mfa_registration" and "blocked" are not (only an admin can help).
CONDITIONAL_ACCESS = {
    "mfa": ("AADSTS50076", "basic_action",
            "Due to a configuration change made by your administrator, or because you moved "
            f"to a new location, you must use multi-factor authentication to access "
            f"'{GRAPH_APP_ID}'."),
    "mfa_registration": ("AADSTS50079", "additional_action",
                         "Due to a configuration change made by your administrator, or "
                         "because you moved to a new location, you must enroll in "
                         f"multi-factor authentication to access '{GRAPH_APP_ID}'."),
    "blocked": ("AADSTS53003", "message_only",
                "Access has been blocked by Conditional Access policies. The access policy "
                "does not allow token issuance."),
}


#: Microsoft's default access token lifetime, drawn for each token: "a random value ranging
#: between 60-90 minutes (75 minutes on average)" (Microsoft identity platform, "Access
#: tokens", Token lifetime).
DEFAULT_LIFETIME = (3600, 5400)
#: A continuous access evaluation token's lifetime: "up to 28 hours" ("How to use
#: Continuous Access Evaluation enabled APIs in your applications"); day-long in practice.
CAE_LIFETIME = (72000, 100800)
#: Tokens at least this long get ``refresh_in`` (half their life) in the token answer, as
#: Microsoft sends it for long-lived tokens (msal keeps it as the token's ``refresh_on``).
LONG_LIVED = 7200

#: A location policy the Runner's address fails (:meth:`Tenant.fail_ip_policy`): refreshes
#: from there are refused as conditional access refuses them.
IP_POLICY = "ip_location"


def cae_declared(claims: str | None) -> bool:
    """Whether a request's ``claims`` (a form field of token requests, a query parameter of
    the authorize endpoint) declares the client capability ``cp1``, as msal's
    ``client_capabilities=["CP1"]`` sends it: ``{"access_token": {"xms_cc": {"values":
    ["CP1"]}}}``, merged with a claims challenge when there is one. Case-insensitive."""
    if not claims:
        return False
    try:
        values = json.loads(claims)["access_token"]["xms_cc"]["values"]
    except (ValueError, TypeError, KeyError):
        return False
    if isinstance(values, str):  # some clients send one value, not a list
        values = [values]
    return isinstance(values, list) and any(
        isinstance(v, str) and v.lower() == "cp1" for v in values)


def _aad_time(epoch: float) -> str:
    """A time as Azure AD writes it in error texts: ``2022-08-23T07:43:29.0000000Z``."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((epoch - whole) * 1e7):07d}Z")


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: where _token() tells _client_auth() the endpoint's own address (not a form field)
ENDPOINT_FIELD = "\x00endpoint"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def permission_name(scope: str) -> str:
    """``https://graph.microsoft.com/Mail.Read`` -> ``Mail.Read``; reserved scopes unchanged."""
    if "://" in scope:
        return urlsplit(scope).path.lstrip("/")
    return scope


def canonical(permission: str) -> str | None:
    """A Graph permission in Microsoft's casing (None: no such permission)."""
    return _CASING.get(permission.lower())


@dataclass
class User:
    oid: str
    upn: str
    name: str
    #: Entra's ``refreshTokensValidFromDateTime``: refresh tokens of sign-ins before it are
    #: refused (AADSTS50173). Revoking the sessions and changing the password set it.
    tokens_valid_from: float = 0.0
    #: Entra's ``accountEnabled`` (False: AADSTS50057 for every sign-in and refresh).
    enabled: bool = True
    #: The last critical event (sessions revoked, password changed, account disabled):
    #: Graph refuses the continuous access evaluation tokens issued before it.
    revoked_at: float = 0.0


@dataclass
class Secret:
    """A client secret as the portal shows it: an ID, a Value (shown once) and an expiry."""

    value: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    expires_at: float = field(default_factory=lambda: time.time() + 180 * 86400)


@dataclass
class App:
    """An app registration. New registrations in the portal are single-tenant; the redirect
    URIs of O365's and this plugin's consent ways are registered under *Web* (a
    confidential client), as O365's guide and this project's README say."""

    client_id: str
    secrets: list[Secret]
    name: str = "BotCity bots"
    public_client_flows: bool = False
    multi_tenant: bool = False
    web_redirect_uris: list[str] = field(default_factory=list)
    #: *Mobile and desktop applications*: redeeming their codes makes a public client
    public_redirect_uris: list[str] = field(default_factory=list)
    #: *Certificates & secrets > Certificates*: the public parts uploaded
    certificates: list[AppCertificate] = field(default_factory=list)

    @property
    def secret(self) -> str:
        """The Value of the app's first client secret (what goes into ``client_secret``)."""
        return self.secrets[0].value

    def redirect_platform(self, uri: str) -> str | None:
        """``"web"``, ``"public"`` or None (not registered). Azure AD ignores the port of
        ``http://localhost``; a registered path (``/common/oauth2/nativeclient``) stands
        for that page of the sandbox's own host, as Microsoft's stands for its own."""
        def same(registered: str) -> bool:
            if registered == uri:
                return True
            if registered.startswith("/"):  # a page of the sandbox's own host
                return urlsplit(uri).path == registered
            want, got = urlsplit(registered), urlsplit(uri)
            return (want.hostname == got.hostname == "localhost" and want.scheme == got.scheme
                    and want.path.rstrip("/") == got.path.rstrip("/"))
        if any(same(r) for r in self.web_redirect_uris):
            return "web"
        if any(same(r) for r in self.public_redirect_uris):
            return "public"
        return None


@dataclass
class RefreshToken:
    client_id: str
    user: User
    dead: str | None = None  # a key of REFRESH_TOKEN_DEATHS
    #: 0 from a consent, then one more for every refresh in its line
    generation: int = 0
    #: issued to a public client (a Mobile and desktop redirect, or device code)
    public: bool = False
    #: the person passed MFA in the sign-in this token comes from
    mfa: bool = False
    #: when the person signed in (the sign-in this token's line comes from): Azure AD's
    #: "The grant was issued on"
    auth_time: float = field(default_factory=time.time)


@dataclass
class AccessToken:
    client_id: str
    user: User | None  # None: an app-only token (client credentials)
    permissions: frozenset[str]
    expires_at: float
    #: the generation of the refresh token issued with it (see RefreshToken)
    generation: int = 0
    #: a continuous access evaluation token (the client declared cp1, the tenant has CAE):
    #: Graph refuses it after a critical event with a claims challenge
    cae: bool = False
    issued_at: float = field(default_factory=time.time)


@dataclass
class _Code:
    client_id: str
    user: User
    redirect_uri: str
    permissions: frozenset[str]
    scopes: list[str]
    challenge: str
    nonce: str
    issued_at: float
    public: bool
    mfa: bool
    redeemed: bool = False


@dataclass
class DeviceCode:
    client_id: str
    user_code: str
    scopes: list[str]
    expires_at: float
    interval: int
    state: str = "pending"  # pending | approved | declined
    polled_at: float = 0.0


def _new_user(upn: str, name: str) -> User:
    return User(str(uuid.uuid4()), upn, name)


@dataclass
class Tenant:
    """State of the sandbox tenant, shared by the identity and Graph servers. The knobs
    below default to what Azure AD does, except loop detection (off: the herd tests
    renew far more often than any real bot)."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    domain: str = "contoso.onmicrosoft.com"
    user: User = field(
        default_factory=lambda: _new_user("bot@contoso.onmicrosoft.com", "Bot User"))
    #: Other accounts of the tenant (see :meth:`add_user`).
    others: list[User] = field(default_factory=list)
    #: Who the person at the browser signs in as (default: :attr:`user`).
    signing_in: User | None = None
    apps: dict[str, App] = field(default_factory=dict)
    #: Seconds an access token lives; None: Microsoft's default, drawn for each token in
    #: :data:`DEFAULT_LIFETIME` (60 to 90 minutes). A value set here applies to continuous
    #: access evaluation tokens too (tests that force renewals with short tokens), unless
    #: :attr:`cae_access_token_lifetime` is set.
    access_token_lifetime: int | None = None
    #: Continuous access evaluation (Entra has it on for every tenant): a client that
    #: declares ``cp1`` gets day-long tokens that Graph refuses after a critical event.
    #: False: every client gets ordinary tokens, and Graph never challenges.
    cae_enabled: bool = True
    #: Seconds a continuous access evaluation token lives; None: drawn in
    #: :data:`CAE_LIFETIME` (20 to 28 hours), or :attr:`access_token_lifetime` when set.
    cae_access_token_lifetime: int | None = None
    #: Since when the Runner's address fails the tenant's location policy (None: it is in
    #: range): see :meth:`fail_ip_policy`.
    ip_policy_failing_since: float | None = None
    #: The last time the Runner's address left the range: Graph refuses the continuous
    #: access evaluation tokens issued before it.
    ip_event_at: float = 0.0
    #: "approve": the authorize endpoint consents at once; "deny": the user refuses;
    #: "ask": it shows a page with *Accept* and *Cancel*, as a person sees it.
    consent: str = "approve"
    #: A key of CONDITIONAL_ACCESS applied to refreshes (None: no policy).
    conditional_access: str | None = None
    #: Identical token requests allowed per :attr:`loop_window` s (None: no loop detection).
    loop_threshold: int | None = None
    loop_window: float = 300.0
    code_lifetime: float = 600.0
    device_code_interval: int = 5
    device_code_lifetime: int = 900
    #: Answer device-code polls that come sooner than the interval with ``slow_down``
    #: (RFC 8628; msal handles it, Microsoft's docs do not list it).
    device_code_slow_down: bool = False
    #: (client id, user oid) -> the permissions the user consented to the app
    grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    device_codes: dict[str, DeviceCode] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _recent: dict[tuple[Any, ...], deque[float]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def register_app(self, *, public_client_flows: bool = False, multi_tenant: bool = False,
                     platform: str = "web") -> App:
        """A new app registration with one client secret and the redirect URIs of the
        console and browser consent ways under ``platform`` ("web" or "public")."""
        uris = [NATIVECLIENT, "http://localhost"]
        app = App(str(uuid.uuid4()), [Secret("sbx~" + secrets.token_urlsafe(30))],
                  public_client_flows=public_client_flows, multi_tenant=multi_tenant)
        self.set_redirect_platform(app, platform, uris)
        with self.lock:
            self.apps[app.client_id] = app
        return app

    @staticmethod
    def set_redirect_platform(app: App, platform: str, uris: list[str] | None = None) -> None:
        """Move the app's redirect URIs to *Web* ("web") or *Mobile and desktop*
        ("public"), as in App registrations > Authentication."""
        uris = uris or app.web_redirect_uris + app.public_redirect_uris
        if platform not in ("web", "public"):
            raise ValueError("platform is 'web' or 'public'")
        app.web_redirect_uris = list(uris) if platform == "web" else []
        app.public_redirect_uris = list(uris) if platform == "public" else []

    def add_user(self, upn: str, name: str) -> User:
        user = _new_user(upn, name)
        with self.lock:
            self.others.append(user)
        return user

    def knows(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id, self.domain, "common", "organizations")

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (Graph answers 401)."""
        with self.lock:
            for token in self.access_tokens.values():
                token.expires_at = 0

    # -- continuous access evaluation ---------------------------------------------------
    def lifetime(self, cae: bool) -> tuple[int, int | None]:
        """``(expires_in, refresh_in)`` of a new access token (``refresh_in`` None: not
        sent). ``cae``: a continuous access evaluation token."""
        if cae:
            fixed = (self.cae_access_token_lifetime if self.cae_access_token_lifetime
                     is not None else self.access_token_lifetime)
            life = fixed if fixed is not None else random.randint(*CAE_LIFETIME)
        else:
            life = (self.access_token_lifetime if self.access_token_lifetime is not None
                    else random.randint(*DEFAULT_LIFETIME))
        return life, (life // 2 if cae and life >= LONG_LIVED else None)

    def _event(self, user: User | None, *, revoke: bool, enabled: bool | None = None
               ) -> float:
        now = time.time()
        with self.lock:
            target = user or self.user
            if revoke:
                target.tokens_valid_from = now
            if enabled is not None:
                target.enabled = enabled
            if enabled is not True:
                target.revoked_at = now
        return now

    def revoke_sessions(self, user: User | None = None) -> float:
        """An administrator revokes the user's sessions (Entra's *Revoke sessions*, Graph's
        ``revokeSignInSessions``): the refresh tokens of earlier sign-ins are refused with
        AADSTS50173 (a person must sign in again), and Graph refuses the continuous access
        evaluation tokens issued before now. Returns the event's time (epoch seconds)."""
        return self._event(user, revoke=True)

    def change_password(self, user: User | None = None) -> float:
        """The user's password is changed or reset: as :meth:`revoke_sessions` (Azure AD
        answers both with AADSTS50173, "The user might have changed or reset their
        password")."""
        return self._event(user, revoke=True)

    def disable_account(self, user: User | None = None) -> float:
        """An administrator disables the account (``accountEnabled`` false): every refresh
        and sign-in is refused with AADSTS50057, and Graph refuses the continuous access
        evaluation tokens issued before now (ordinary ones work until they expire)."""
        return self._event(user, revoke=False, enabled=False)

    def enable_account(self, user: User | None = None) -> None:
        """The account is enabled again: its refresh tokens work again (the continuous
        access evaluation tokens refused meanwhile stay refused)."""
        self._event(user, revoke=False, enabled=True)

    def fail_ip_policy(self) -> float:
        """The Runner's address leaves the named location a conditional access policy
        requires: refreshes from it are refused with AADSTS53003 (and the policy's
        claims), and Graph refuses the continuous access evaluation tokens issued before now,
        and every one while the address is out of range (Entra enforces location policies at
        once: "IP locations policy enforcement is instant"). :meth:`pass_ip_policy` puts it
        back in range."""
        now = time.time()
        with self.lock:
            self.ip_policy_failing_since = now
            self.ip_event_at = now
        return now

    def pass_ip_policy(self) -> None:
        """The Runner's address is in range again: refreshes work; a token issued before the
        address left the range stays refused by Graph (a renewal with the challenge's claims
        gets a new one)."""
        with self.lock:
            self.ip_policy_failing_since = None

    def cae_refusal(self, token: AccessToken) -> tuple[str, float] | None:
        """Why Graph refuses a continuous access evaluation token now: ``(Graph's code,
        the event's time)``, None when it is accepted (and always for an ordinary token)."""
        if not token.cae or not self.cae_enabled:
            return None
        with self.lock:
            user = token.user
            if user is not None and token.issued_at < user.revoked_at:
                return "TokenIssuedBeforeRevocationTimestamp", user.revoked_at
            if self.ip_policy_failing_since is not None or token.issued_at < self.ip_event_at:
                return "LocationConditionEvaluationSatisfied", self.ip_event_at
        return None

    def kill_refresh_tokens(self, how: str = "revoked") -> None:
        """Every refresh token issued so far dies as ``how`` says (see REFRESH_TOKEN_DEATHS)."""
        if how not in REFRESH_TOKEN_DEATHS:
            raise ValueError(f"how must be one of {sorted(REFRESH_TOKEN_DEATHS)}")
        with self.lock:
            for token in self.refresh_tokens.values():
                token.dead = how

    def upload_certificate(self, app: App, certificate_pem: str | bytes) -> AppCertificate:
        """Register a certificate's public part on ``app``, as the portal's *Upload
        certificate* does (.cer, .pem, .crt: no private key)."""
        registered = AppCertificate.from_pem(certificate_pem)
        with self.lock:
            app.certificates.append(registered)
        return registered

    def expire_client_secret(self, app: App) -> None:
        """Every secret of ``app`` has expired (as after its 6, 12 or 24 months)."""
        with self.lock:
            for secret in app.secrets:
                secret.expires_at = time.time() - 1

    def approve_device_code(self, user_code: str, approve: bool = True) -> None:
        with self.lock:
            for code in self.device_codes.values():
                if code.user_code == user_code:
                    code.state = "approved" if approve else "declined"
                    return
        raise KeyError(user_code)

    def access_token(self, secret: str) -> AccessToken | None:
        with self.lock:
            return self.access_tokens.get(secret)

    def granted(self, app: App, user: User) -> set[str]:
        with self.lock:
            return set(self.grants.get((app.client_id, user.oid), set()))

    def looping(self, key: tuple[Any, ...]) -> bool:
        """Count one more token request of ``key``; True when there have been more than
        :attr:`loop_threshold` of them in the last :attr:`loop_window` seconds."""
        if self.loop_threshold is None:
            return False
        now = time.time()
        with self.lock:
            seen = self._recent.setdefault(key, deque())
            while seen and seen[0] < now - self.loop_window:
                seen.popleft()
            seen.append(now)
            return len(seen) > self.loop_threshold


class AadError(Exception):
    """An Azure AD error answer, raised inside the handlers and turned into a Reply."""

    def __init__(self, error: str, code: str, description: str, status: int = 400,
                 **extra: str) -> None:
        super().__init__(code)
        self.error, self.code, self.description = error, code, description
        self.status, self.extra = status, extra


def _disabled() -> AadError:
    return AadError("invalid_grant", "AADSTS50057", "The user account is disabled. The "
                    "directory object specified by the user is disabled.")


def _revoked(refresh: RefreshToken) -> AadError:
    """Azure AD's answer to a refresh token of a sign-in before the user's
    ``TokensValidFrom`` (revoked sessions, a changed password), as quoted in
    Azure/azure-cli#23635 after ``revokeSignInSessions``."""
    return AadError("invalid_grant", "AADSTS50173", "The provided grant has expired due to it "
                    "being revoked, a fresh auth token is needed. The user might have changed "
                    "or reset their password. The grant was issued on "
                    f"'{_aad_time(refresh.auth_time)}' and the TokensValidFrom date (before "
                    "which tokens are not valid) for this user is "
                    f"'{_aad_time(refresh.user.tokens_valid_from)}'.", suberror="bad_token")


class IdentityService(Service):
    name = "identity"

    def __init__(self, log: RequestLog, tls: Any, tenant: Tenant) -> None:
        self.tenant = tenant
        super().__init__(log, tls)

    def routes(self) -> list[tuple[str, str, Route]]:
        t = r"(?P<tenant>[^/]+)"
        return [
            ("GET", rf"/{t}/v2\.0/\.well-known/openid-configuration", self._discovery),
            ("GET", rf"/{t}/oauth2/v2\.0/authorize", self._authorize),
            ("POST", rf"/{t}/oauth2/v2\.0/authorize", self._authorize),
            ("POST", rf"/{t}/oauth2/v2\.0/token", self._guarded(self._token)),
            ("POST", rf"/{t}/oauth2/v2\.0/devicecode", self._guarded(self._devicecode)),
            ("GET", NATIVECLIENT.replace(".", r"\."), self._nativeclient),
            ("GET", r"/devicelogin", self._nativeclient),
        ]

    @property
    def issuer(self) -> str:
        return f"{self.url}/{self.tenant.tenant_id}/v2.0"

    # -- Azure AD's error shapes ----------------------------------------------------------
    def error_body(self, error: AadError, request: Request | None = None) -> dict[str, Any]:
        """An error answer as Azure AD writes it: the description ends with the trace,
        correlation and time lines; ``error_codes`` and ``error_uri`` carry the number."""
        number = int(error.code.removeprefix("AADSTS"))
        trace = str(uuid.uuid4())
        correlation = (request.headers.get("client-request-id") if request else None) or str(
            uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        return {
            "error": error.error,
            "error_description": f"{error.code}: {error.description}\r\nTrace ID: {trace}"
                                 f"\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}",
            "error_codes": [number],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{self.url}/error?code={number}",
            **error.extra,
        }

    def _guarded(self, function: Route) -> Route:
        def wrapper(request: Request, **kwargs: str) -> Reply:
            try:
                return function(request, **kwargs)
            except AadError as error:
                headers = {"Retry-After": "60"} if error.status == 429 else {}
                return Reply.json(self.error_body(error, request), error.status, **headers)
        return wrapper

    @staticmethod
    def _error_page(code: str, text: str) -> Reply:
        """What the browser shows when Azure AD cannot send it back (no redirect)."""
        return Reply.text(f"<!doctype html><title>Sign in</title><h1>Sorry, but we're having "
                          f"trouble signing you in.</h1><p>{code}: {text}</p>", 400,
                          content_type="text/html")

    # -- who is asking ----------------------------------------------------------------
    def _app(self, client_id: str, tenant: str) -> App:
        app = self.tenant.apps.get(client_id)
        if app is None:
            raise AadError("unauthorized_client", "AADSTS700016",
                           f"Application with identifier '{client_id}' was not found in the "
                           f"directory '{self.tenant.domain}'. This can happen if the "
                           "application has not been installed by the administrator of the "
                           "tenant or consented to by any user in the tenant. You may have "
                           "sent your authentication request to the wrong tenant.")
        self._check_tenant(app, tenant)
        return app

    def _check_tenant(self, app: App, tenant: str) -> None:
        if not self.tenant.knows(tenant):
            raise AadError("invalid_tenant", "AADSTS90002", f"Tenant '{tenant}' not found. "
                           "Check to make sure you have the correct tenant ID and are signing "
                           "into the correct cloud. Check with your subscription "
                           "administrator, this may happen if there are no active "
                           "subscriptions for the tenant.")
        if not app.multi_tenant and tenant.lower() in ("common", "organizations"):
            raise AadError("invalid_request", "AADSTS50194",
                           f"Application '{app.client_id}'({app.name}) is not configured as a "
                           "multi-tenant application. Usage of the /common endpoint is not "
                           "supported for such applications created after '10/15/2018'. Use "
                           "a tenant-specific endpoint or configure the application to be "
                           "multi-tenant.")

    def _client_auth(self, app: App, form: dict[str, str], public: bool) -> None:
        """Check the client's credential: a public client must send none, a confidential
        one a current secret (its Value) or a client assertion signed with a certificate
        registered on the app (see client_assertions.py)."""
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if public:
            if secret is not None or assertion is not None:
                raise AadError("invalid_client", "AADSTS700025", "Client is public so neither "
                               "'client_assertion' nor 'client_secret' should be presented.",
                               401)
            return
        if secret is not None and assertion is not None:
            raise AadError("invalid_request", "AADSTS9002324", "Request should not contain "
                           "more than one client credential parameters, this includes "
                           "'client_secret', 'client_assertion' and 'request' parameters.")
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise AadError("invalid_request", "AADSTS50027", "Invalid JWT token. "
                               "client_assertion_type must be " + ASSERTION_TYPE + ".")
            try:
                check_assertion(assertion, client_id=app.client_id,
                                endpoint=form.get(ENDPOINT_FIELD, ""),
                                certificates=list(app.certificates))
            except Rejected as no:
                raise AadError(no.error, no.code, no.description, no.status) from None
            return
        if secret is None:
            raise AadError("invalid_client", "AADSTS7000218", "The request body must contain "
                           "the following parameter: 'client_assertion' or 'client_secret'.",
                           401)
        for known in app.secrets:
            if secrets.compare_digest(secret, known.value):
                if known.expires_at <= time.time():
                    raise AadError("invalid_client", "AADSTS7000222", "The provided client "
                                   f"secret keys for app '{app.client_id}' are expired. Visit "
                                   "the Azure portal to create new keys for your app: "
                                   "https://aka.ms/NewClientSecret, or consider using "
                                   "certificate credentials for added security: "
                                   "https://aka.ms/certCreds.", 401)
                return
        raise AadError("invalid_client", "AADSTS7000215", "Invalid client secret provided. "
                       "Ensure the secret being sent in the request is the client secret "
                       f"value, not the client secret ID, for a secret added to app "
                       f"'{app.client_id}'.", 401)

    @staticmethod
    def _permissions(scopes: list[str]) -> frozenset[str]:
        """Graph permissions named in ``scopes`` (prefixed or not, any casing), in
        Microsoft's casing; AADSTS70011 for one that does not exist."""
        names = {permission_name(s) for s in scopes} - RESERVED
        unknown = sorted(n for n in names if n != ".default" and canonical(n) is None)
        if unknown:
            raise AadError("invalid_scope", "AADSTS70011", "The provided value for the input "
                           f"parameter 'scope' is not valid. The scope {' '.join(unknown)} is "
                           "not valid.")
        return frozenset(canonical(n) or n for n in names)

    # -- endpoints ------------------------------------------------------------------------
    def _discovery(self, request: Request, tenant: str) -> Reply:
        if not self.tenant.knows(tenant):
            error = AadError("invalid_tenant", "AADSTS90002", f"Tenant '{tenant}' not found. "
                             "Check to make sure you have the correct tenant ID and are "
                             "signing into the correct cloud. Check with your subscription "
                             "administrator, this may happen if there are no active "
                             "subscriptions for the tenant.")
            return Reply.json(self.error_body(error, request), 400)
        base = f"{self.url}/{tenant}/oauth2/v2.0"
        return Reply.json(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "device_authorization_endpoint": f"{base}/devicecode",
                "end_session_endpoint": f"{base}/logout",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "private_key_jwt",
                                                          "client_secret_basic"],
                "tenant_region_scope": "WW",
            }
        )

    def _nativeclient(self, request: Request) -> Reply:
        return Reply.text(
            "<!doctype html><title>Sandbox</title><p>Copy the address of this page and paste "
            "it where the bot asks for it.</p>",
            content_type="text/html",
        )

    def _authorize(self, request: Request, tenant: str) -> Reply:
        q = request.query
        app = self.tenant.apps.get(q.get("client_id", ""))
        if app is None:
            return self._error_page("AADSTS700016", "Application with identifier "
                                    f"'{q.get('client_id', '')}' was not found in the "
                                    f"directory '{self.tenant.domain}'.")
        redirect_uri = q.get("redirect_uri", "")
        platform = app.redirect_platform(redirect_uri)
        if platform is None:
            return self._error_page("AADSTS50011", "The redirect URI "
                                    f"'{redirect_uri}' specified in the request does not match "
                                    "the redirect URIs configured for the application "
                                    f"'{app.client_id}'.")
        scopes = q.get("scope", "").split()
        back = {"state": q.get("state", "")}
        user = self.tenant.signing_in or self.tenant.user
        if not user.enabled:
            return self._error_page("AADSTS50057", "The user account is disabled. The "
                                    "directory object specified by the user is disabled.")
        try:
            self._check_tenant(app, tenant)
            permissions = self._permissions(scopes) - {".default"}
        except AadError as error:
            back = {"error": error.error,
                    "error_description": self.error_body(error, request)["error_description"],
                    **back}
        else:
            decision = self.tenant.consent
            if decision == "ask":
                if request.method == "GET":
                    return self._consent_page(request, app, user, permissions)
                decision = "approve" if request.form().get("decision") == "accept" else "deny"
            if decision != "approve":
                back = {"error": "access_denied",
                        "error_description": "AADSTS65004: User declined to consent to access "
                        "the app.", **back}
            else:
                code = "0.A" + secrets.token_urlsafe(800)
                with self.tenant.lock:
                    self.tenant._codes[code] = _Code(
                        app.client_id, user, redirect_uri, permissions, scopes,
                        q.get("code_challenge", ""), q.get("nonce", ""), time.time(),
                        public=platform == "public",
                        # a person signs in interactively: MFA is done when a policy asks
                        mfa=self.tenant.conditional_access == "mfa")
                back = {"code": code, **back, "session_state": str(uuid.uuid4())}
        return Reply.redirect(f"{redirect_uri}?{urlencode(back)}")

    @staticmethod
    def _consent_page(request: Request, app: App, user: User,
                      permissions: frozenset[str]) -> Reply:
        """The page a person sees: who signs in, what the app asks for, Accept or Cancel
        (a form posted back to this address, query and all)."""
        action = html.escape(f"{request.path}?{urlencode(request.query)}", quote=True)
        asked = "".join(f"<li>{html.escape(p)}</li>" for p in sorted(permissions))
        return Reply.text(
            "<!doctype html><html><head><meta charset='utf-8'><title>Permissions requested"
            "</title></head><body><h1>Permissions requested</h1>"
            f"<p>Signed in as <b>{html.escape(user.upn)}</b> (sandbox account).</p>"
            f"<p>The app <b>{html.escape(app.client_id)}</b> would like to:</p><ul>{asked}"
            "<li>Maintain access to data you have given it access to</li></ul>"
            f"<form method='post' action='{action}'>"
            "<button id='accept' name='decision' value='accept'>Accept</button> "
            "<button id='cancel' name='decision' value='cancel'>Cancel</button></form>"
            "<p><small>BotCity Microsoft 365 sandbox: nothing leaves this machine."
            "</small></p></body></html>", content_type="text/html")

    def _devicecode(self, request: Request, tenant: str) -> Reply:
        form = request.form()
        app = self._app(form.get("client_id", ""), tenant)
        scopes = form.get("scope", "").split()
        self._permissions(scopes)
        device_code = "DAQABAAEAAA" + secrets.token_urlsafe(120)
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                            for _ in range(9))
        lifetime, interval = self.tenant.device_code_lifetime, self.tenant.device_code_interval
        with self.tenant.lock:
            self.tenant.device_codes[device_code] = DeviceCode(
                app.client_id, user_code, scopes, time.time() + lifetime, interval)
        uri = f"{self.url}/devicelogin"
        return Reply.json(
            {
                "user_code": user_code, "device_code": device_code,
                "verification_uri": uri, "expires_in": lifetime, "interval": interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter "
                f"the code {user_code} to authenticate.",
            }
        )

    def _token(self, request: Request, tenant: str) -> Reply:
        form = request.form()
        # the address the request came to: a client assertion's audience must be it
        form[ENDPOINT_FIELD] = f"{self.url}/{tenant}/oauth2/v2.0/token"
        grant = form.get("grant_type", "")
        app = self._app(form.get("client_id", ""), tenant)
        handler = {
            "authorization_code": self._grant_code,
            "refresh_token": self._grant_refresh,
            "client_credentials": self._grant_client,
            "urn:ietf:params:oauth:grant-type:device_code": self._grant_device,
        }.get(grant)
        if handler is None:
            raise AadError("unsupported_grant_type", "AADSTS70003",
                           "The app requested an unsupported grant type.")
        return handler(app, form)

    def _loop_check(self, app: App, user: User | None, grant: str, scopes: list[str]) -> None:
        key = (app.client_id, user.oid if user else None, grant,
               frozenset(s.lower() for s in scopes))
        if not self.tenant.looping(key):
            return
        text = ("The server terminated an operation because it encountered a client request "
                "loop. Please contact your app vendor.")
        if user is None:  # client credentials: throttled with Retry-After (MSAL.NET docs)
            raise AadError("temporarily_unavailable", "AADSTS50196", text, 429)
        raise AadError("invalid_grant", "AADSTS50196", text)

    # -- grants ---------------------------------------------------------------------------
    def _grant_code(self, app: App, form: dict[str, str]) -> Reply:
        with self.tenant.lock:
            code = self.tenant._codes.get(form.get("code", ""))
        self._client_auth(app, form, public=bool(code and code.public))
        if code is None or code.client_id != app.client_id:
            raise AadError("invalid_grant", "AADSTS70000", "The provided value for the input "
                           "parameter 'code' is not valid. The code is malformed or invalid.")
        if code.redeemed:
            raise AadError("invalid_grant", "AADSTS54005", "OAuth2 Authorization code was "
                           "already redeemed, please retry with a new valid code or use an "
                           "existing refresh token.")
        if time.time() - code.issued_at > self.tenant.code_lifetime:
            raise AadError("invalid_grant", "AADSTS70008", "The provided authorization code or "
                           "refresh token has expired due to inactivity. Send a new "
                           "interactive authorization request for this user and resource.")
        if code.redirect_uri != form.get("redirect_uri"):
            raise AadError("invalid_grant", "AADSTS50148", "The redirect_uri does not match "
                           "the one used in the authorization request.")
        verifier = form.get("code_verifier", "")
        if code.challenge and _b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            raise AadError("invalid_grant", "AADSTS501481", "The Code_Verifier does not match "
                           "the code_challenge supplied in the authorization request.")
        if not code.user.enabled:
            raise _disabled()
        code.redeemed = True
        with self.tenant.lock:
            self.tenant.grants.setdefault((app.client_id, code.user.oid), set()).update(
                code.permissions)
        return self._issue(app, code.user, code.scopes, code.nonce, public=code.public,
                           mfa=code.mfa, cae=self._cae(form))

    def _grant_refresh(self, app: App, form: dict[str, str]) -> Reply:
        with self.tenant.lock:
            old = self.tenant.refresh_tokens.get(form.get("refresh_token", ""))
        self._client_auth(app, form, public=bool(old and old.public))
        if old is None or old.client_id != app.client_id:
            code, text = REFRESH_TOKEN_DEATHS["revoked"]
            raise AadError("invalid_grant", code, text)
        if old.dead:
            code, text = REFRESH_TOKEN_DEATHS[old.dead]
            raise AadError("invalid_grant", code, text, suberror="bad_token")
        if not old.user.enabled:
            raise _disabled()
        if old.auth_time < old.user.tokens_valid_from:
            raise _revoked(old)
        policy = self.tenant.conditional_access
        if self.tenant.ip_policy_failing_since is not None:
            policy = "blocked"  # a location policy blocks: AADSTS53003, its own policy id
        if policy and not (policy == "mfa" and old.mfa):
            code, suberror, text = CONDITIONAL_ACCESS[policy]
            policy_id = IP_POLICY if self.tenant.ip_policy_failing_since is not None else policy
            claims = {"access_token": {"capolids": {"essential": True,
                                                    "values": [str(uuid.uuid5(
                                                        uuid.NAMESPACE_URL, policy_id))]}}}
            raise AadError("invalid_grant", code, text, suberror=suberror,
                           claims=json.dumps(claims, separators=(",", ":")))
        scopes = form.get("scope", "").split()
        self._loop_check(app, old.user, "refresh_token", scopes)
        asked = self._permissions(scopes)
        granted = self.tenant.granted(app, old.user)
        missing = {p for p in asked if p != ".default"} - granted
        if missing:
            raise AadError("invalid_grant", "AADSTS65001", "The user or administrator has not "
                           f"consented to use the application with ID '{app.client_id}' named "
                           f"'{app.name}'. Send an interactive authorization request for this "
                           "user and resource.", suberror="consent_required")
        return self._issue(app, old.user, scopes, None, old.generation + 1, public=old.public,
                           mfa=old.mfa, cae=self._cae(form), auth_time=old.auth_time)

    def _grant_client(self, app: App, form: dict[str, str]) -> Reply:
        self._client_auth(app, form, public=False)
        scopes = form.get("scope", "").split()
        if [permission_name(s) for s in scopes] != [".default"]:
            raise AadError("invalid_scope", "AADSTS1002012", "The provided value for scope "
                           f"{' '.join(scopes)} is not valid. Client credential flows must "
                           "have a scope value with /.default suffixed to the resource "
                           "identifier (application ID URI).")
        self._loop_check(app, None, "client_credentials", scopes)
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(1200)
        lifetime, _ = self.tenant.lifetime(cae=False)  # app-only: no CAE in the sandbox
        with self.tenant.lock:
            self.tenant.access_tokens[token] = AccessToken(
                app.client_id, None, frozenset({".default"}), time.time() + lifetime
            )
        return Reply.json({"token_type": "Bearer", "expires_in": lifetime,
                           "ext_expires_in": lifetime, "access_token": token})

    def _grant_device(self, app: App, form: dict[str, str]) -> Reply:
        if not app.public_client_flows:
            # the device code flow is a public client flow: without the portal's switch,
            # Azure AD asks for the confidential client's credential
            raise AadError("invalid_client", "AADSTS7000218", "The request body must contain "
                           "the following parameter: 'client_assertion' or 'client_secret'.",
                           401)
        self._client_auth(app, form, public=True)
        with self.tenant.lock:
            device = self.tenant.device_codes.get(form.get("device_code", ""))
        if device is None or device.client_id != app.client_id:
            raise AadError("invalid_grant", "AADSTS70000", "The provided value for the input "
                           "parameter 'device_code' is not valid.")
        now = time.time()
        if now > device.expires_at:
            raise AadError("expired_token", "AADSTS70020", "The provided value for the input "
                           "parameter 'device_code' is not valid. This device code has "
                           "expired.")
        too_soon = now - device.polled_at < device.interval - 0.5
        device.polled_at = now
        if device.state == "pending":
            if too_soon and self.tenant.device_code_slow_down:
                raise AadError("slow_down", "AADSTS70016", "OAuth 2.0 device flow error. "
                               "Polling too fast: slow down.")
            raise AadError("authorization_pending", "AADSTS70016", "OAuth 2.0 device flow "
                           "error. Authorization is pending. Continue polling.")
        if device.state == "declined":
            raise AadError("authorization_declined", "AADSTS65004", "User declined to "
                           "consent to access the app.")
        with self.tenant.lock:
            del self.tenant.device_codes[form["device_code"]]
        user = self.tenant.signing_in or self.tenant.user
        if not user.enabled:
            raise _disabled()
        permissions = self._permissions(device.scopes) - {".default"}
        with self.tenant.lock:
            self.tenant.grants.setdefault((app.client_id, user.oid), set()).update(permissions)
        return self._issue(app, user, device.scopes, None, public=True,
                           mfa=self.tenant.conditional_access == "mfa", cae=self._cae(form))

    def _cae(self, form: dict[str, str]) -> bool:
        """Whether the token request gets a continuous access evaluation token: the client
        declared ``cp1`` and the tenant has CAE."""
        return self.tenant.cae_enabled and cae_declared(form.get("claims"))

    def _issue(
        self, app: App, user: User, scopes: list[str], nonce: str | None,
        generation: int = 0, *, public: bool = False, mfa: bool = False, cae: bool = False,
        auth_time: float | None = None,
    ) -> Reply:
        """A user token. Its access token carries every permission the user consented to
        the app (Azure AD puts all of them in ``scp``), and ``scope`` says so. A continuous
        access evaluation token (``cae``) lives about a day and says when to refresh it
        (``refresh_in``); ``auth_time``: when the person signed in (default: now)."""
        issued_at = time.time()
        now = int(issued_at)
        lifetime, refresh_in = self.tenant.lifetime(cae)
        granted = frozenset(self.tenant.granted(app, user))
        asked = {s.lower() for s in scopes}
        reserved = [s for s in ("profile", "openid", "email") if "openid" in asked]
        # a Graph access token as long as a real one (a JWT of about 2 KB)
        access = "eyJ0eXAiOiJKV1QiLCJub25jZSI6I." + secrets.token_urlsafe(1700)
        tid = self.tenant.tenant_id
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(granted) + reserved),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access,
            "client_info": _b64url(json.dumps({"uid": user.oid, "utid": tid}).encode()),
        }
        if refresh_in is not None:
            answer["refresh_in"] = refresh_in
        with self.tenant.lock:
            self.tenant.access_tokens[access] = AccessToken(
                app.client_id, user, granted, now + lifetime, generation, cae=cae,
                issued_at=issued_at)
            if "offline_access" in asked:
                refresh = "1.A" + secrets.token_urlsafe(1100)  # about 1.5 KB, as Azure AD's
                self.tenant.refresh_tokens[refresh] = RefreshToken(
                    app.client_id, user, generation=generation, public=public, mfa=mfa,
                    auth_time=issued_at if auth_time is None else auth_time)
                answer["refresh_token"] = refresh
        if "openid" in asked:
            claims: dict[str, Any] = {
                "aud": app.client_id, "iss": self.issuer, "iat": now, "nbf": now,
                "exp": now + lifetime, "name": user.name, "oid": user.oid,
                "preferred_username": user.upn, "sub": _b64url(user.oid.encode()),
                "tid": tid, "ver": "2.0", "rh": "0.A" + secrets.token_urlsafe(60),
                "uti": secrets.token_urlsafe(16), "aio": secrets.token_urlsafe(300),
            }
            if nonce:
                claims["nonce"] = nonce
            header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256",
                                         "kid": "sandbox"}).encode())
            signature = secrets.token_urlsafe(256)
            answer["id_token"] = f"{header}.{_b64url(json.dumps(claims).encode())}.{signature}"
        return Reply.json(answer)
