"""Everything that depends on O365 2.1 / msal internals lives here, and only here.

What it changes, and why:

- the authority: O365 hard-codes ``https://login.microsoftonline.com`` in the private
  ``Connection._msal_authority``; sovereign clouds and the sandbox need another host,
  and msal needs ``instance_discovery=False`` for a host Microsoft does not know;
- the Graph URL: ``MSGraphProtocol._protocol_url`` (a documented override point);
- the request: before each Graph request, the access token is renewed when this
  process's moment has come (``coordination.py``); O365 alone renews only after Graph
  answered 401;
- the refresh: O365 turns every refusal into ``RuntimeError("...: invalid_grant")``,
  dropping Microsoft's AADSTS code, and its client-credentials renewal breaks once msal
  has dropped the expired token it reads the scopes from. The override keeps the code
  (raising :class:`AuthorizationRequired`) and counts refreshes;
- logging: ``O365.connection`` logs ``Authorization: Bearer <token>`` at DEBUG; a filter
  redacts it.

``tests/test_o365_seam.py`` fails loudly if a new O365 release moves any of these.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from msal import ConfidentialClientApplication, PublicClientApplication
from msal.exceptions import MsalServiceError
from O365 import Account
from O365.connection import Connection, MSGraphProtocol

from ._transport import DEFAULT_BUDGET, RetryingSession
from .errors import (
    AADSTS_MEANINGS,
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    ServiceUnavailable,
    StoreUnavailable,
    aadsts_code,
)
from .scopes import RESERVED, permission_name

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
ENV_RETRY_SECONDS = "MS365_RETRY_SECONDS"

# -- log redaction ---------------------------------------------------------------------
_SECRET_FIELDS = ("access_token", "refresh_token", "id_token", "client_secret", "code",
                  "code_verifier", "device_code", "assertion", "password", "secret")
_SECRETS_IN_TEXT = re.compile(
    r"(?i)(bearer\s+)[^\s'\",}]+"
    r"|(\b(?:" + "|".join(_SECRET_FIELDS) + r")['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens and token/secret values replaced by ``<redacted>``."""
    return _SECRETS_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + "<redacted>", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message without tokens. Installed on O365's and msal's loggers
    (a filter on a logger applies to the records that logger creates)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecrets()
for _name in ("O365.connection", "O365.utils.token", "msal.application", "msal.token_cache",
              "msal.oauth2cli.oauth2", "msal.oauth2cli.oidc", "msal.authority", "msal.telemetry"):
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)


# -- Microsoft errors -> the plugin's errors -------------------------------------------
def authorization_error(result: dict[str, Any], doing: str) -> AuthorizationError:
    """An msal error answer as the plugin's exception, with the AADSTS code in plain words."""
    error = str(result.get("error") or "unknown_error")
    code = aadsts_code(result.get("error_description"))
    meaning = AADSTS_MEANINGS.get(code or "", "")
    told = f" ({code}: {meaning})" if meaning else (f" ({code})" if code else "")
    if code == "AADSTS7000218":
        return AuthorizationError(
            f"Microsoft refused {doing}: {error}{told}. Device code sign-in is a public "
            "client flow: in the Azure portal, App registrations > your app > "
            "Authentication, set 'Allow public client flows' to Yes.",
            error=error, code=code,
        )
    if error == "invalid_client":
        return AuthorizationError(
            f"Microsoft refused the app's credentials while {doing}: {error}{told}. Check the "
            "client id and client secret; secrets expire, create a new one in the Azure "
            "portal (App registrations > Certificates & secrets) and store its Value.",
            error=error, code=code,
        )
    if error in ("authorization_declined", "access_denied"):
        return AuthorizationError(f"The person declined the sign-in while {doing}{told}.",
                                  error=error, code=code)
    if error == "expired_token":
        return AuthorizationError(f"The device code expired while {doing}; start again.",
                                  error=error, code=code)
    if error in ("invalid_grant", "interaction_required", "consent_required"):
        return AuthorizationRequired(
            f"Microsoft refused the stored token while {doing}: {error}{told}. A person must "
            "sign in again to authorize the app.",
            error=error, code=code,
        )
    return AuthorizationError(f"Microsoft refused {doing}: {error}{told}.", error=error, code=code)


# -- the seams -------------------------------------------------------------------------
def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def graph_protocol(graph_url: str) -> MSGraphProtocol:
    """O365's Graph protocol for ``graph_url``. Permissions are prefixed with the Graph
    resource; a local emulator stands in for the public cloud, so it keeps
    ``https://graph.microsoft.com/``."""
    resource = DEFAULT_GRAPH_URL if _is_loopback(graph_url) else graph_url.rstrip("/")

    class GraphProtocol(MSGraphProtocol):
        _protocol_url = graph_url.rstrip("/") + "/"
        _oauth_scope_prefix = resource + "/"

    return GraphProtocol()


class PluginConnection(Connection):
    """O365's Connection with a configurable authority and the plugin's refresh.

    A token obtained with the device code flow belongs to a *public* client: the store
    says so (``client == "public"``) and its refreshes are made without the secret."""

    _msal_client: Any  # set by O365's Connection.__init__
    session: Any

    def __init__(self, credentials: Any, *, authority_host: str = DEFAULT_AUTHORITY_HOST,
                 graph_resource: str = DEFAULT_GRAPH_URL + "/", **kwargs: Any) -> None:
        super().__init__(credentials, **kwargs)
        self.authority_host = authority_host.rstrip("/")
        self.graph_resource = graph_resource
        self._msal_authority = f"{self.authority_host}/{self.tenant_id}"
        self.oauth_redirect_url = f"{self.authority_host}/common/oauth2/nativeclient"
        #: How many refreshes this connection made (the benchmarks and tests count them).
        self.refresh_count = 0
        #: Set when Microsoft rejected the refresh token: it is dead until a new consent.
        self.rejected: AuthorizationRequired | None = None
        self._built_for: str | None = None
        #: Seconds a call to the identity platform may spend retrying 429/5xx answers.
        self.retry_budget = retry_budget()
        self._transports: dict[int, RetryingSession] = {}
        self._renewing = threading.Lock()
        #: Called when Microsoft rejects the refresh token (a person must sign in again).
        self.on_rejected: Callable[[AuthorizationRequired], None] | None = None

    def _client_type(self) -> str:
        return str(getattr(self.token_backend, "client_type", "confidential"))

    def build_msal_client(self, client_type: str) -> Any:
        transport = RetryingSession(self.retry_budget)
        transport.verify = self.verify_ssl
        transport.proxies = self.proxy
        options: dict[str, Any] = {
            "http_client": transport,
            "client_id": self.auth[0],
            "authority": self._msal_authority,
            "token_cache": self.token_backend,
            # msal validates only Microsoft's own hosts; any other is taken as given
            "instance_discovery": None if self.authority_host == DEFAULT_AUTHORITY_HOST
            else False,
        }
        if client_type == "public":
            client = PublicClientApplication(**options)
        else:
            client = ConfidentialClientApplication(client_credential=self.auth[1], **options)
        self._transports[id(client)] = transport
        return client

    @property
    def msal_client(self) -> Any:
        client_type = self._client_type()
        if self._msal_client is None or self._built_for != client_type:
            self._msal_client = self.build_msal_client(client_type)
            self._built_for = client_type
        return self._msal_client

    def oauth_request(self, url: str, method: str, **kwargs: Any) -> Any:
        """O365's request, after renewing the access token when this process's moment to
        do so has come (before it expires: see ``coordination.py``)."""
        if self.session is None:
            self.session = self.get_session(load_token=True)
        if self.token_backend.refresh_due(self.username):
            self._renew_early()
        return super().oauth_request(url, method, **kwargs)

    def _renew_early(self) -> None:
        """Renew (one thread at a time); while the access token still works, a failure
        only postpones the next try to its expiry (the bot goes on; the error comes
        then, if it lasts)."""
        with self._renewing:
            if self.token_backend.refresh_due(self.username):  # not done by another thread
                self._renew_or_postpone()

    def _renew_or_postpone(self) -> None:
        token = self.token_backend.get_access_token(username=self.username)
        try:
            self.renew()
        except MS365CredentialsError as exc:
            if token is None or float(token.get("expires_on", 0)) <= time.time() + 1:
                raise
            self.token_backend.schedule.not_before_expiry(token)
            log.warning("Could not renew the access token before it expires (%s); going "
                        "on with it, and trying again when it expires in %.0f s", exc,
                        float(token["expires_on"]) - time.time())

    def renew(self) -> None:
        """Get a usable access token: from another process through the store when one
        already refreshed it, else by refreshing (see ``coordination.py``)."""
        if self.token_backend.should_refresh_token(self, username=self.username):
            self.refresh_token()
            return
        self.rejected = None  # the token another process stored works
        if self.session is not None:
            self.update_session_auth_header()

    def refresh_token(self) -> bool:
        """Get a new access token (and rotated refresh token) and save it to the store.
        App-only connections ask for a new token with the client credentials."""
        log.debug("Refreshing the access token")
        try:
            return self._refresh()
        except Exception:
            self.token_backend.forget_look()
            raise

    def _refresh(self) -> bool:
        if self.session is None:
            self.session = self.get_session(load_token=True)
        confidential = self._client_type() != "public"
        if confidential and not self.auth[1]:
            raise StoreUnavailable(
                "The access token expired, and the client secret is kept in Maestro, which "
                "was unreachable when the bot started. Run the bot again once Maestro is "
                "back.")
        if self.auth_flow_type == "credentials":
            doing = "getting an app-only token"
            result = self._call(doing, lambda client: client.acquire_token_for_client(
                scopes=[f"{self.graph_resource}.default"]))
        else:
            doing = "refreshing the access token"
            scopes = self.token_backend.get_token_scopes(username=self.username,
                                                         remove_reserved=True)
            accounts = self.msal_client.get_accounts(username=self.username)
            if not accounts or not scopes:
                raise AuthorizationRequired(
                    "The stored token has no refresh token for the signed-in account. "
                    "A person must sign in again to authorize the app."
                )
            result = self._call(doing, lambda client: client.acquire_token_silent_with_error(
                scopes=scopes, account=accounts[0], force_refresh=True))
        if not result or "access_token" not in result:
            error = authorization_error(result or {}, doing)
            if isinstance(error, AuthorizationRequired):
                self.rejected = error
                if self.on_rejected is not None:
                    self.on_rejected(error)
            raise error
        self.refresh_count += 1
        self.token_backend.schedule.leading = True  # it goes first next time
        self.update_session_auth_header(access_token=result["access_token"])
        if self.store_token_after_refresh:
            self.token_backend.save_token()
        return True


    def _call(self, doing: str, call: Callable[[Any], Any]) -> Any:
        """Run an msal call; when the identity platform kept failing past the retry
        budget, raise ServiceUnavailable (and start over with a new msal client, which
        would otherwise answer from its memory of the failure)."""
        client = self.msal_client
        transport = self._transports.get(id(client))
        try:
            result = call(client)
        except (requests.RequestException, MsalServiceError) as exc:
            self._msal_client = None
            what = (transport.gave_up if transport is not None and transport.gave_up
                    else type(exc).__name__)
            raise ServiceUnavailable(
                f"Microsoft's identity platform answered {what} for "
                f"{self.retry_budget:.0f} s while {doing} (throttling or an outage). "
                "Try again later.") from None
        gave_up = transport.gave_up if transport is not None else None
        if gave_up and (not result or "access_token" not in result):
            self._msal_client = None
            raise ServiceUnavailable(
                f"Microsoft's identity platform answered {gave_up} for "
                f"{self.retry_budget:.0f} s while {doing} (throttling or an outage). "
                "Try again later.")
        return result


def retry_budget() -> float:
    raw = os.environ.get(ENV_RETRY_SECONDS, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_BUDGET
    except ValueError:
        value = -1
    if not 0 <= value <= 3600:
        raise ConfigurationError(f"{ENV_RETRY_SECONDS} must be seconds from 0 to 3600, "
                                 f"not {raw!r}.")
    return value


class PluginAccount(Account):
    connection_constructor = PluginConnection


def build_account(
    client_id: str, client_secret: str, *, tenant_id: str, token_backend: Any,
    authority_host: str, graph_url: str, app_only: bool = False,
) -> PluginAccount:
    protocol = graph_protocol(graph_url)
    return PluginAccount(
        (client_id, client_secret),
        protocol=protocol,
        tenant_id=tenant_id,
        token_backend=token_backend,
        authority_host=authority_host,
        graph_resource=protocol.prefix_scope(""),
        auth_flow_type="credentials" if app_only else "authorization",
    )


def graph_scopes(account: Account, permissions: frozenset[str]) -> list[str]:
    """Graph permission names prefixed with the account's Graph resource, sorted."""
    return sorted(account.protocol.prefix_scope(p) for p in permissions)


def authorization_url(account: Account, permissions: frozenset[str],
                      redirect_uri: str | None = None) -> tuple[str, dict[str, Any], str]:
    """Start the authorization-code flow: the URL a person opens, msal's flow state,
    and the redirect URI Microsoft will send the browser back to."""
    con = account.con
    client = con.build_msal_client("confidential")
    redirect = redirect_uri or con.oauth_redirect_url
    with warnings.catch_warnings():
        # msal recommends response_mode=form_post, which a pasted address cannot carry
        warnings.filterwarnings("ignore", message="response_mode='form_post'")
        flow = client.initiate_auth_code_flow(
            scopes=graph_scopes(account, permissions), redirect_uri=redirect
        )
    flow["_client"] = client
    return flow["auth_uri"], flow, redirect


def _signed_in(account: Account, result: dict[str, Any], client_type: str) -> str:
    """After Microsoft issued tokens: select the account, update the session, save."""
    con = account.con
    con.token_backend.client_type = client_type
    claims = result.get("id_token_claims") or {}
    if claims.get("oid") and claims.get("tid"):
        con._set_username_from_token_backend(home_account_id=f"{claims['oid']}.{claims['tid']}")
    if con.session is not None:
        con.update_session_auth_header(access_token=result["access_token"])
    con.rejected = None
    con.token_backend.save_token(force=True)
    return str(con.username or claims.get("preferred_username") or "")


def redeem_code(account: Account, flow: dict[str, Any], auth_response: dict[str, str]) -> str:
    """Exchange the code Microsoft sent back for tokens, save them, return the username."""
    client = flow.pop("_client")
    try:
        result = client.acquire_token_by_auth_code_flow(flow, auth_response)
    except ValueError as exc:  # msal: state mismatch or missing
        raise AuthorizationError(
            f"The authorization answer does not belong to this sign-in ({exc}). "
            "Start the authorization again."
        ) from None
    if "access_token" not in result:
        raise authorization_error(result, "redeeming the authorization code")
    return _signed_in(account, result, "confidential")


def redeem_refresh_token(account: Account, refresh_token: str, permissions: frozenset[str]
                         ) -> str:
    """Turn a bare refresh token (an O365 1.x token file) into a full token, saved to the
    account's store; return the username."""
    client = account.con.build_msal_client("confidential")
    scopes = graph_scopes(account, permissions) if permissions else [
        account.protocol.prefix_scope(".default")]
    result = client.acquire_token_by_refresh_token(refresh_token, scopes=scopes)
    if "access_token" not in result:
        raise authorization_error(result, "redeeming the old refresh token")
    return _signed_in(account, result, "confidential")


def start_device_flow(account: Account, permissions: frozenset[str]) -> dict[str, Any]:
    """Ask Microsoft for a device code (a public-client flow: no secret is sent)."""
    client = account.con.build_msal_client("public")
    flow = client.initiate_device_flow(scopes=graph_scopes(account, permissions))
    if "user_code" not in flow:
        raise authorization_error(flow, "starting the device code sign-in")
    flow["_client"] = client
    return dict(flow)


def finish_device_flow(account: Account, flow: dict[str, Any], timeout: float,
                       tick: Callable[[float], None] | None = None) -> str:
    """Poll (at Microsoft's interval) until the person signs in, refuses, or ``timeout``
    seconds pass; save the token; return the username. ``tick(seconds_left)`` is called
    about once a second while waiting."""
    client = flow.pop("_client")
    flow["expires_at"] = min(float(flow.get("expires_at", 0)), time.time() + timeout)

    def stop_polling(state: dict[str, Any]) -> bool:
        left = float(state.get("expires_at", 0)) - time.time()
        if tick is not None and left > 0:
            tick(left)
        return left <= 0

    result = client.acquire_token_by_device_flow(flow, exit_condition=stop_polling)
    if "access_token" not in result:
        if result.get("error") == "authorization_pending":  # our deadline came first
            raise AuthorizationError(
                f"Nobody completed the device code sign-in within {timeout:.0f} s.",
                error="authorization_pending")
        raise authorization_error(result, "waiting for the device code sign-in")
    return _signed_in(account, result, "public")


# -- facts about the loaded token ------------------------------------------------------
def granted_permissions(account: Account) -> frozenset[str]:
    scopes = account.con.token_backend.get_token_scopes(username=account.con.username) or []
    return frozenset(permission_name(s) for s in scopes) - RESERVED


def access_token_valid(account: Account) -> bool:
    """Whether the current access token is good for a while yet (see ``stores.margin``)."""
    from .stores import margin

    token = account.con.token_backend.get_access_token(username=account.con.username)
    if not token:
        return False
    try:
        return int(token.get("expires_on", 0)) > time.time() + margin(token)
    except (TypeError, ValueError):
        return False


def has_refresh_token(account: Account) -> bool:
    return bool(account.con.token_backend.get_refresh_token(username=account.con.username))
