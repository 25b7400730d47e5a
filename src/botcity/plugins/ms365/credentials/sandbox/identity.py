"""A local Microsoft identity platform (Azure AD v2.0 endpoints), as msal and O365 expect it.

Authority: ``https://127.0.0.1:PORT/<tenant>``. It serves OIDC discovery, the authorize
endpoint (consent answered at once, as the sandbox user), the token endpoint
(authorization_code with PKCE, refresh_token with rotation, client_credentials,
device_code) and the devicecode endpoint. Errors are shaped like Azure AD's
(``{"error", "error_description": "AADSTSnnnn: ...", "error_codes", ...}``).

:class:`Tenant` holds the state that the Graph server also reads (which access token
belongs to whom, with which permissions, until when).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._http import Reply, Request, RequestLog, Route, Service

RESERVED = {"openid", "profile", "offline_access", "email"}

#: Delegated Microsoft Graph permissions the sandbox accepts; anything else is invalid_scope,
#: as Azure AD answers for a permission that does not exist.
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

#: What the sandbox says for each way a refresh token can die.
REFRESH_TOKEN_DEATHS = {
    "revoked": ("AADSTS70008", "The provided authorization code or refresh token has expired "
                "due to inactivity or was revoked."),
    "inactive": ("AADSTS700082", "The refresh token has expired due to inactivity. The token "
                 "was issued on 2026-01-01 and was inactive for 90.00:00:00."),
    "password_reset": ("AADSTS50173", "The provided grant has expired due to it being revoked, "
                       "a fresh auth token is needed. The user might have changed or reset "
                       "their password."),
    "consent_revoked": ("AADSTS65001", "The user or administrator has not consented to use the "
                        "application."),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def permission_name(scope: str) -> str:
    """``https://graph.microsoft.com/Mail.Read`` -> ``Mail.Read``; reserved scopes unchanged."""
    if "://" in scope:
        return urlsplit(scope).path.lstrip("/")
    return scope


@dataclass
class User:
    oid: str
    upn: str
    name: str


@dataclass
class App:
    client_id: str
    secret: str
    public_client_flows: bool = False


@dataclass
class RefreshToken:
    client_id: str
    user: User
    permissions: frozenset[str]
    dead: str | None = None  # a key of REFRESH_TOKEN_DEATHS
    #: 0 from a consent, then one more for every refresh in its line
    generation: int = 0


@dataclass
class AccessToken:
    client_id: str
    user: User | None  # None: an app-only token (client credentials)
    permissions: frozenset[str]
    expires_at: float
    #: the generation of the refresh token issued with it (see RefreshToken)
    generation: int = 0


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    permissions: frozenset[str]
    scopes: list[str]
    challenge: str
    nonce: str


@dataclass
class DeviceCode:
    client_id: str
    user_code: str
    scopes: list[str]
    expires_at: float
    state: str = "pending"  # pending | approved | declined


@dataclass
class Tenant:
    """State of the sandbox tenant, shared by the identity and Graph servers."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user: User = field(
        default_factory=lambda: User(str(uuid.uuid4()), "bot@contoso.onmicrosoft.com", "Bot User")
    )
    apps: dict[str, App] = field(default_factory=dict)
    access_token_lifetime: int = 3600
    #: "approve": the authorize endpoint consents at once; "deny": the user refuses.
    consent: str = "approve"
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    device_codes: dict[str, DeviceCode] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def register_app(self, *, public_client_flows: bool = False) -> App:
        app = App(str(uuid.uuid4()), "sbx~" + secrets.token_urlsafe(30), public_client_flows)
        with self.lock:
            self.apps[app.client_id] = app
        return app

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (Graph answers 401)."""
        with self.lock:
            for token in self.access_tokens.values():
                token.expires_at = 0

    def kill_refresh_tokens(self, how: str = "revoked") -> None:
        """Every refresh token issued so far dies as ``how`` says (see REFRESH_TOKEN_DEATHS)."""
        if how not in REFRESH_TOKEN_DEATHS:
            raise ValueError(f"how must be one of {sorted(REFRESH_TOKEN_DEATHS)}")
        with self.lock:
            for token in self.refresh_tokens.values():
                token.dead = how

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


def aad_error(error: str, code: str, description: str, status: int = 400) -> Reply:
    number = int(code.removeprefix("AADSTS"))
    return Reply.json(
        {
            "error": error,
            "error_description": f"{code}: {description} Trace ID: {uuid.uuid4()}",
            "error_codes": [number],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status,
    )


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
            ("POST", rf"/{t}/oauth2/v2\.0/token", self._token),
            ("POST", rf"/{t}/oauth2/v2\.0/devicecode", self._devicecode),
            ("GET", r"/common/oauth2/nativeclient", self._nativeclient),
            ("GET", r"/devicelogin", self._nativeclient),
        ]

    @property
    def issuer(self) -> str:
        return f"{self.url}/{self.tenant.tenant_id}/v2.0"

    # -- endpoints ------------------------------------------------------------------------
    def _discovery(self, request: Request, tenant: str) -> Reply:
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
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
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
            return Reply.text(
                "AADSTS700016: Application with identifier was not found in the directory.", 400
            )
        redirect_uri = q.get("redirect_uri", "")
        scopes = q.get("scope", "").split()
        permissions = frozenset(permission_name(s) for s in scopes) - RESERVED
        back = {"state": q.get("state", "")}
        unknown = sorted(p for p in permissions if p not in GRAPH_PERMISSIONS)
        if unknown:
            back |= {"error": "invalid_scope",
                     "error_description": "AADSTS70011: The provided value for the input "
                     f"parameter 'scope' is not valid. The scope {' '.join(unknown)} "
                     "is not valid."}
        elif self.tenant.consent != "approve":
            back |= {"error": "access_denied",
                     "error_description": "AADSTS65004: User declined to consent to access "
                     "the app."}
        else:
            code = secrets.token_urlsafe(48)
            with self.tenant.lock:
                self.tenant._codes[code] = _Code(
                    app.client_id, redirect_uri, permissions, scopes,
                    q.get("code_challenge", ""), q.get("nonce", ""),
                )
            back = {"code": code, **back, "session_state": str(uuid.uuid4())}
        return Reply.redirect(f"{redirect_uri}?{urlencode(back)}")

    def _devicecode(self, request: Request, tenant: str) -> Reply:
        form = request.form()
        app = self.tenant.apps.get(form.get("client_id", ""))
        if app is None:
            return aad_error("unauthorized_client", "AADSTS700016",
                             "Application with identifier was not found in the directory.")
        device_code = secrets.token_urlsafe(48)
        user_code = secrets.token_hex(4).upper()
        with self.tenant.lock:
            self.tenant.device_codes[device_code] = DeviceCode(
                app.client_id, user_code, form.get("scope", "").split(), time.time() + 900
            )
        uri = f"{self.url}/devicelogin"
        return Reply.json(
            {
                "user_code": user_code, "device_code": device_code,
                "verification_uri": uri, "expires_in": 900, "interval": 1,
                "message": f"To sign in, use a web browser to open the page {uri} and enter "
                f"the code {user_code} to authenticate.",
            }
        )

    def _token(self, request: Request, tenant: str) -> Reply:
        form = request.form()
        grant = form.get("grant_type", "")
        app = self.tenant.apps.get(form.get("client_id", ""))
        if app is None:
            return aad_error("unauthorized_client", "AADSTS700016",
                             "Application with identifier was not found in the directory.")
        secret = form.get("client_secret")
        if secret is None:
            if grant == "client_credentials" or not app.public_client_flows:
                return aad_error("invalid_client", "AADSTS7000218", "The request body must "
                                 "contain the following parameter: 'client_assertion' or "
                                 "'client_secret'.", 401)
        elif not secrets.compare_digest(secret, app.secret):
            return aad_error("invalid_client", "AADSTS7000215",
                             "Invalid client secret provided. Ensure the secret being sent in "
                             "the request is the client secret value, not the client secret "
                             "ID, for a secret added to app.", 401)
        handler = {
            "authorization_code": self._grant_code,
            "refresh_token": self._grant_refresh,
            "client_credentials": self._grant_client,
            "urn:ietf:params:oauth:grant-type:device_code": self._grant_device,
        }.get(grant)
        if handler is None:
            return aad_error("unsupported_grant_type", "AADSTS70003",
                             "The app requested an unsupported grant type.")
        return handler(app, form)

    # -- grants ---------------------------------------------------------------------------
    def _grant_code(self, app: App, form: dict[str, str]) -> Reply:
        with self.tenant.lock:
            code = self.tenant._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != app.client_id:
            return aad_error("invalid_grant", "AADSTS70008", "The provided authorization code "
                             "or refresh token has expired due to inactivity.")
        if code.redirect_uri != form.get("redirect_uri"):
            return aad_error("invalid_grant", "AADSTS50148", "The redirect_uri does not match "
                             "the one used in the authorization request.")
        verifier = form.get("code_verifier", "")
        if code.challenge and _b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            return aad_error("invalid_grant", "AADSTS501481", "The Code_Verifier does not match "
                             "the code_challenge supplied in the authorization request.")
        return self._issue(app, self.tenant.user, code.permissions, code.scopes, code.nonce)

    def _grant_refresh(self, app: App, form: dict[str, str]) -> Reply:
        with self.tenant.lock:
            old = self.tenant.refresh_tokens.get(form.get("refresh_token", ""))
        if old is None or old.client_id != app.client_id:
            code, text = REFRESH_TOKEN_DEATHS["revoked"]
            return aad_error("invalid_grant", code, text)
        if old.dead:
            code, text = REFRESH_TOKEN_DEATHS[old.dead]
            return aad_error("invalid_grant", code, text)
        scopes = form.get("scope", "").split()
        asked = frozenset(permission_name(s) for s in scopes) - RESERVED
        if asked == {".default"}:  # everything consented so far
            asked = old.permissions
            scopes = [s for s in scopes if s in RESERVED] + sorted(asked)
        if not asked <= old.permissions:
            return aad_error("invalid_grant", "AADSTS65001", "The user or administrator has "
                             "not consented to use the application with ID "
                             f"'{app.client_id}'. Send an interactive authorization request "
                             "for this user and resource.")
        return self._issue(app, old.user, old.permissions, scopes, None, old.generation + 1)

    def _grant_client(self, app: App, form: dict[str, str]) -> Reply:
        scopes = form.get("scope", "").split()
        if [permission_name(s) for s in scopes] != [".default"]:
            return aad_error("invalid_scope", "AADSTS1002012", "The provided value for scope "
                             f"{' '.join(scopes)} is not valid. Client credential flows must "
                             "have a scope value with /.default suffixed to the resource "
                             "identifier (application ID URI).")
        token = secrets.token_urlsafe(600)
        lifetime = self.tenant.access_token_lifetime
        with self.tenant.lock:
            self.tenant.access_tokens[token] = AccessToken(
                app.client_id, None, frozenset({".default"}), time.time() + lifetime
            )
        return Reply.json({"token_type": "Bearer", "expires_in": lifetime,
                           "ext_expires_in": lifetime, "access_token": token})

    def _grant_device(self, app: App, form: dict[str, str]) -> Reply:
        with self.tenant.lock:
            device = self.tenant.device_codes.get(form.get("device_code", ""))
        if device is None or device.client_id != app.client_id:
            return aad_error("invalid_grant", "AADSTS70000", "The provided value for the input "
                             "parameter 'device_code' is not valid.")
        if time.time() > device.expires_at:
            return aad_error("expired_token", "AADSTS70020", "The provided value for the input "
                             "parameter 'device_code' is not valid. This device code has expired.")
        if device.state == "pending":
            return aad_error("authorization_pending", "AADSTS70016", "OAuth 2.0 device flow "
                             "error. Authorization is pending. Continue polling.")
        if device.state == "declined":
            return aad_error("authorization_declined", "AADSTS70019", "The user declined to "
                             "authorize the request.")
        with self.tenant.lock:
            del self.tenant.device_codes[form["device_code"]]
        permissions = frozenset(permission_name(s) for s in device.scopes) - RESERVED
        return self._issue(app, self.tenant.user, permissions, device.scopes, None)

    def _issue(
        self, app: App, user: User, permissions: frozenset[str], scopes: list[str],
        nonce: str | None, generation: int = 0,
    ) -> Reply:
        now = int(time.time())
        lifetime = self.tenant.access_token_lifetime
        access = secrets.token_urlsafe(900)  # about the size of a real Graph access token
        tid = self.tenant.tenant_id
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(permissions | (set(scopes) & RESERVED))),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access,
            "client_info": _b64url(json.dumps({"uid": user.oid, "utid": tid}).encode()),
        }
        with self.tenant.lock:
            self.tenant.access_tokens[access] = AccessToken(
                app.client_id, user, permissions, now + lifetime, generation
            )
            if "offline_access" in scopes:
                refresh = "sbxrt." + secrets.token_urlsafe(400)
                self.tenant.refresh_tokens[refresh] = RefreshToken(
                    app.client_id, user, permissions, generation=generation)
                answer["refresh_token"] = refresh
        if "openid" in scopes:
            claims: dict[str, Any] = {
                "aud": app.client_id, "iss": self.issuer, "iat": now, "nbf": now,
                "exp": now + lifetime, "name": user.name, "oid": user.oid,
                "preferred_username": user.upn, "sub": _b64url(user.oid.encode()),
                "tid": tid, "ver": "2.0",
            }
            if nonce:
                claims["nonce"] = nonce
            header = _b64url(json.dumps({"typ": "JWT", "alg": "none"}).encode())
            answer["id_token"] = f"{header}.{_b64url(json.dumps(claims).encode())}."
        return Reply.json(answer)
