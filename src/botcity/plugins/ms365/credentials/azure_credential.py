"""``service.credential``: the plugin's one token, for Microsoft's own Graph SDK.

:class:`MS365TokenCredential` is an azure-core ``TokenCredential`` (``get_token``) and
``SupportsTokenInfo`` (``get_token_info``), the protocols Microsoft's Graph SDK
(``msgraph-sdk``: ``GraphServiceClient(credentials=..., scopes=...)``) and every azure-core
client take. It hands out the access token that :attr:`ms365_account
<.plugin.MS365CredentialsPlugin.ms365_account>` uses: the same token, from the same store,
renewed by the same :class:`~.lifecycle.TokenLifecycle` (its moment of its own in the
refresh window, the look at the store, the claim on an expired token, one write per
renewal). The credential only asks the lifecycle; it has no renewal of its own.

How the Graph SDK calls it (``kiota_authentication_azure``'s
``AzureIdentityAccessTokenProvider.get_authorization_token``): once before every request,
``credential.get_token(*scopes, claims=<decoded claims or None>, enable_cae=True)``, and it
awaits the result only when it is awaitable, so a synchronous credential serves the
asynchronous SDK. ``scopes`` are those given to ``GraphServiceClient`` or, when none were,
``https://<the request's host>/.default``. After a 401 whose ``WWW-Authenticate`` carries
``claims="<base64>"`` (continuous access evaluation's challenge), the SDK (kiota-http's
``retry_cae_response_if_required``) calls ``get_token`` once more with the decoded claims,
and repeats the request once with the token it gets.

What each argument does here:

- ``scopes``: ``https://graph.microsoft.com/.default`` (or the ``.default`` of the Graph
  the plugin is configured for: another cloud, the sandbox) stands for the permissions the
  stored token holds. A named permission (``https://graph.microsoft.com/Mail.Read`` or
  ``Mail.Read``) must be one of them: one a person never consented to raises the plugin's
  :class:`~.errors.AuthorizationRequired` naming the ``botcity-ms365 login`` command that
  adds it (nothing is asked of Microsoft; no person is prompted). Another resource
  (Azure Key Vault, ...) is a :class:`~.errors.ConfigurationError`: the token is Graph's.
- ``claims``: Microsoft's claims challenge (JSON). The token is renewed with it (msal's
  ``claims_challenge``), by the lifecycle, as after Graph's refusal through
  ``ms365_account``, and written to the store as the next generation, unless the token held
  already answers it: one issued after the challenge's ``nbf`` (the time of the critical
  event; in a later second), or the one renewed for these very claims (so that requests
  refused together renew once).
- ``tenant_id``: None, or the plugin's tenant (the token holds one tenant's account);
  another is a :class:`~.errors.ConfigurationError`.
- ``enable_cae``: whether the token is a CAE one is the plugin's (its client capability
  ``CP1`` unless ``MS365_CAE=0``), decided once for the one token every bot shares.

``refresh_on`` of :meth:`MS365TokenCredential.get_token_info` is this bot's moment to renew
the token held (the lifecycle's schedule). The token is never in ``repr()`` or a log.

azure-core is imported when the credential is made: without it (the plugin's ``[graph]``
extra brings it, with msgraph-sdk), :class:`~.errors.ConfigurationError` says what to
install.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import AuthorizationRequired, ConfigurationError
from .lifecycle import TokenLifecycle
from .scopes import RESERVED, missing_permissions, permission_name

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

log = logging.getLogger(__name__)

#: Microsoft Graph's resource in the public cloud; its ``.default`` is what the Graph SDK
#: asks for by default.
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_DEFAULT = GRAPH_RESOURCE + "/.default"
#: What to install when azure-core is missing.
INSTALL = 'pip install "botcity-ms365-credentials-plugin[graph]"'
#: How many claims challenges the credential remembers having answered.
_REMEMBERED = 16


def _azure_core() -> Any:
    """azure-core's credentials module, or the plugin's error saying what to install."""
    try:
        from azure.core import credentials
    except ImportError:
        raise ConfigurationError(
            "service.credential (a token for Microsoft's Graph SDK and azure-core clients) "
            f"needs azure-core, which msgraph-sdk brings: {INSTALL}") from None
    return credentials


def _origin(url: str) -> str:
    """``https://host`` of ``url``, lower-case, without port or path (the Graph SDK drops
    the port from the ``.default`` it derives from a request's address)."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _not_before(claims: str) -> int | None:
    """The ``access_token.nbf`` a claims challenge asks for (epoch seconds: the token must
    be issued at or after it), None when it asks for none. Graph's continuous access
    evaluation challenge after a critical event is
    ``{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}`` (Microsoft: "How to
    use Continuous Access Evaluation enabled APIs in your applications")."""
    try:
        value = json.loads(claims)["access_token"]["nbf"]["value"]
        return int(str(value))
    except (ValueError, TypeError, KeyError):
        return None


class MS365TokenCredential:
    """The plugin's token as an azure-core ``TokenCredential`` and ``SupportsTokenInfo``
    (see the module's docstring). Made by :attr:`.MS365CredentialsPlugin.credential`.

    Args:
        lifecycle: the owner of the token (the one ``ms365_account`` uses).
        granted: the permissions of the token held (Microsoft's names).
        refuse: the plugin's :class:`AuthorizationRequired` for a token that cannot be
            used: ``refuse(problem, missing permissions)``.
        graph_url: the Microsoft Graph the plugin is configured for (``graph_url``,
            ``MS365_GRAPH_URL``); :attr:`graph_url` gives it to the Graph SDK.
        tenant_id: the plugin's tenant (id or domain).
        app_only: the plugin's ``auth_flow="app"``: an app token, whose permissions are the
            app's (only ``.default`` can be asked for).
    """

    def __init__(self, lifecycle: TokenLifecycle, *, granted: Callable[[], Iterable[str]],
                 refuse: Callable[[str, frozenset[str]], AuthorizationRequired],
                 graph_url: str = GRAPH_RESOURCE, tenant_id: str = "common",
                 app_only: bool = False) -> None:
        self._credentials = _azure_core()
        self._lifecycle = lifecycle
        self._granted = granted
        self._refuse = refuse
        #: The Microsoft Graph the plugin is configured for, without a trailing slash: the
        #: Graph SDK's base address is ``graph_url + "/v1.0"``.
        self.graph_url = graph_url.rstrip("/")
        self._tenant = tenant_id
        self._app_only = app_only
        self._resources = {_origin(GRAPH_RESOURCE), _origin(self.graph_url)}
        self._lock = threading.RLock()
        #: claims challenge -> digest of the access token that answered it (never the token)
        self._answered: dict[str, str] = {}

    def __repr__(self) -> str:
        return (f"MS365TokenCredential(graph_url={self.graph_url!r}, "
                f"token={self._lifecycle.store.location!r})")

    # -- azure-core's protocols --------------------------------------------------------
    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        """The access token held, renewed first when this bot's moment has come (or with
        ``claims``, a claims challenge); see the module's docstring for each argument.
        Raises the plugin's errors (:class:`AuthorizationRequired` when a person must
        sign in or consent, naming the command)."""
        secret, expires_on, _ = self._token(scopes, claims, tenant_id)
        return self._credentials.AccessToken(secret, expires_on)

    def get_token_info(self, *scopes: str,
                       options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """As :meth:`get_token`, with ``refresh_on``: when this bot renews the token."""
        options = options or {}
        secret, expires_on, refresh_on = self._token(scopes, options.get("claims"),
                                                     options.get("tenant_id"))
        return self._credentials.AccessTokenInfo(secret, expires_on, refresh_on=refresh_on)

    def close(self) -> None:
        """Nothing to release: the token belongs to the plugin (``ms365_account`` goes on
        using it)."""

    def __enter__(self) -> MS365TokenCredential:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _token(self, scopes: tuple[str, ...], claims: str | None,
               tenant_id: str | None) -> tuple[str, int, int | None]:
        wanted = self._permissions(scopes)
        lifecycle, store = self._lifecycle, self._lifecycle.store
        with self._lock:
            if self._app_only:
                lifecycle.check(app_only=True)
            elif not store.has_data and not lifecycle.load():
                raise self._refuse(f"holds no token ({store.location})", frozenset())
            self._check_tenant(tenant_id)
            missing = missing_permissions(wanted, self._granted())
            if missing:
                raise self._refuse("lacks the permissions " + ", ".join(sorted(missing))
                                   + ", which the credential was asked for", missing)
            if claims:
                self._answer(claims)
            else:
                lifecycle.before_request()
            entry = store.get_access_token()
            if entry is None:
                raise self._refuse(f"has no valid access token ({store.location})",
                                   frozenset())
            expires_on = int(entry["expires_on"])
            refresh_on = int(lifecycle.schedule.due_at(entry))
            return str(entry["secret"]), expires_on, min(refresh_on, expires_on)

    def _permissions(self, scopes: tuple[str, ...]) -> frozenset[str]:
        """The named Graph permissions of ``scopes`` (``.default`` and the reserved scopes
        name none); a scope of another resource is a :class:`ConfigurationError`."""
        if not scopes:
            raise ConfigurationError(
                f"get_token needs a scope: {GRAPH_DEFAULT} (the permissions the token "
                "holds) or a Microsoft Graph permission such as "
                f"{GRAPH_RESOURCE}/Mail.Read.")
        named = set()
        for scope in scopes:
            text = str(scope).strip()
            if "://" in text:
                resource = text.rsplit("/", 1)[0]
                if _origin(resource) not in self._resources:
                    raise ConfigurationError(
                        f"This credential holds a Microsoft Graph token ({self.graph_url}); "
                        f"it cannot give one for {resource!r}. Use azure-identity's "
                        "credentials for other Azure services.")
            name = permission_name(text)
            if name == ".default" or name.lower() in RESERVED:
                continue
            if self._app_only:
                raise ConfigurationError(
                    f"An app-only token (auth_flow='app') carries the app's application "
                    f"permissions, set in its Azure registration: ask for {GRAPH_DEFAULT}, "
                    f"not {text!r}.")
            named.add(name)
        return frozenset(named)

    def _check_tenant(self, tenant_id: str | None) -> None:
        if tenant_id is None:
            return
        entry = self._lifecycle.store.get_access_token() or {}
        known = {self._tenant.lower(), str(entry.get("realm", "")).lower()}
        if tenant_id.lower() not in known:
            raise ConfigurationError(
                f"The token is for the tenant {self._tenant!r}; a token for tenant "
                f"{tenant_id!r} cannot be had from it (a token holds one tenant's account).")

    def _answer(self, claims: str) -> None:
        """Renew the token with ``claims`` through the lifecycle, unless the token held
        answers them already."""
        lifecycle, store = self._lifecycle, self._lifecycle.store
        if lifecycle.rejected is not None:
            lifecycle.before_request()  # the refusal's error, unless a person signed in since
        held = store.get_access_token()
        if held is None:  # expired: renewed (with the claims) as any expired token is
            lifecycle.renew(claims=claims)
        elif not self._answers(held, claims):
            lifecycle.refused_by_graph("HTTP 401 to Microsoft's Graph SDK", claims)
        held = store.get_access_token()
        if held is not None:
            if len(self._answered) >= _REMEMBERED:
                self._answered.pop(next(iter(self._answered)))
            self._answered[claims] = _digest(str(held["secret"]))

    def _answers(self, held: dict[str, Any], claims: str) -> bool:
        """Whether the access token ``held`` satisfies ``claims`` as far as can be known
        here: it was renewed for them, or issued after the ``nbf`` they ask for."""
        if self._answered.get(claims) == _digest(str(held["secret"])):
            return True
        not_before = _not_before(claims)
        try:
            issued = int(held.get("cached_at", 0))
        except (TypeError, ValueError):
            return False
        # whole seconds on both sides: a token of the event's own second may predate it
        return not_before is not None and issued > not_before
