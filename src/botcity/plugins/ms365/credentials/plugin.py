"""``MS365CredentialsPlugin``: an authenticated ``O365.Account`` for a BotCity bot.

The composition root, wiring only: settings (:mod:`.settings`) -> Maestro (:mod:`._maestro`)
-> where the token lives (:mod:`.stores`) -> the token's lifecycle (:mod:`.lifecycle`) ->
where the app credentials come from (:mod:`.app_credentials`) -> the O365 account built on
them (:mod:`._o365`); and how a person consents (:mod:`.consent`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from O365 import Account

from . import _o365
from ._maestro import MaestroVault, is_online, runner_sdk, started_by_runner
from .app_credentials import (
    AppCredentials,
    credential_keys,
    from_credential,
    resolve_app_credentials,
)
from .azure_credential import MS365TokenCredential
from .consent import Ask, ConsentHandler, choose_mode, consent_way
from .errors import (
    COMMAND,
    SIGN_IN_AGAIN,
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    StoreError,
    StoreUnavailable,
    login_command,
)
from .lifecycle import TokenLifecycle
from .scopes import Scopes, missing_permissions, resolve_permissions, scope_names
from .settings import Settings, https_url
from .stores import FileTokenStore, MaestroTokenStore, MemoryTokenStore, TokenStore

log = logging.getLogger(__name__)


class MS365CredentialsPlugin:
    """Microsoft 365 credentials for a bot, kept in BotCity Maestro or a local file.

    Args:
        client_id: the Azure app's Application (client) ID. When omitted it is read from
            the Maestro credential ``credential_label``, then from the environment
            (``MS365_CLIENT_ID``).
        client_secret: the Value of one of the app's client secrets; when omitted, as for
            ``client_id`` (``MS365_CLIENT_SECRET``).
        client_certificate: instead of ``client_secret``, a certificate: the PEM of its
            private key (the certificate may follow it), as text or the path of a file.
            ``client_certificate_thumbprint`` is needed when the PEM holds only the key;
            ``client_certificate_password`` when the key is encrypted. In Maestro: the keys
            of the same names; in the environment: ``MS365_CLIENT_CERTIFICATE`` (a path),
            ``MS365_CLIENT_CERTIFICATE_THUMBPRINT``, ``MS365_CLIENT_CERTIFICATE_PASSWORD``.
        token_path: folder or file of the local token (default ``./o365_token.txt``),
            used when Maestro is not connected.
        maestro: a connected ``BotMaestroSDK``. With it, the token lives in Maestro.
        credential_label: the Maestro credential that holds ``client_id``,
            ``client_secret`` and optionally ``tenant_id``.
        token_label: the Maestro credential that holds the token (default:
            ``credential_label``).
        token_key: the key of the token in ``token_label`` (default ``token``).
        tenant_id: the Azure tenant (default ``common``, or ``MS365_TENANT_ID``).
        authority_host: the identity platform of another cloud (or a local emulator);
            also from ``MS365_AUTHORITY_HOST``.
        graph_url: Microsoft Graph of another cloud (or a local emulator); also from
            ``MS365_GRAPH_URL``.
        consent: how a person consents when one must: ``"console"``, ``"browser"``,
            ``"device_code"``, ``"none"`` or a function (see :mod:`.consent`). Default:
            ``MS365_CONSENT``, else console, or none when the run is unattended.
        auth_flow: ``"delegated"`` (a user's token, the default) or ``"app"`` (app-only:
            client credentials with the app's application permissions; needs
            ``tenant_id``; no person, no stored token).
    """

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_path: str | os.PathLike[str] = "",
        *,
        maestro: Any = None,
        credential_label: str | None = None,
        token_label: str | None = None,
        token_key: str = "token",  # noqa: S107 - a key name, not a secret
        tenant_id: str | None = None,
        authority_host: str | None = None,
        graph_url: str | None = None,
        consent: str | ConsentHandler | None = None,
        auth_flow: str = "delegated",
        client_certificate: str | os.PathLike[str] | None = None,
        client_certificate_thumbprint: str | None = None,
        client_certificate_password: str | None = None,
    ) -> None:
        settings = Settings.from_environ()
        if maestro is not None and not hasattr(maestro, "is_online"):
            raise ConfigurationError(
                f"maestro must be a BotMaestroSDK, not {type(maestro).__name__}."
            )
        if auth_flow not in ("delegated", "app"):
            raise ConfigurationError(
                f"auth_flow must be 'delegated' (a user's token) or 'app' (app-only), not "
                f"{auth_flow!r}.")
        self._maestro = maestro
        self._vault = MaestroVault(maestro) if maestro is not None and is_online(maestro) else None
        if maestro is not None and self._vault is None:
            log.info("BotCity Maestro is not connected (offline mode): using the local file")
        self._app_only = auth_flow == "app"
        token_label = token_label or credential_label
        self._store: TokenStore
        if self._app_only:
            self._store = MemoryTokenStore()
        elif self._vault is not None and token_label:
            self._store = MaestroTokenStore(self._vault, token_label, token_key)
        else:
            self._store = FileTokenStore(token_path)
        self._lifecycle = TokenLifecycle(
            self._store, coordinate=settings.coordinate, retry_budget=settings.retry_seconds,
            fallback=self._store.fallback(settings.fallback_dir)
            if isinstance(self._store, MaestroTokenStore) else None, alert=self._refused)

        try:
            self._app: AppCredentials = resolve_app_credentials(
                client_id, client_secret, tenant_id,
                vault=self._vault, label=credential_label, env=settings.app,
                client_certificate=os.fspath(client_certificate) if client_certificate
                else None, client_certificate_thumbprint=client_certificate_thumbprint,
                client_certificate_password=client_certificate_password,
            )
        except StoreUnavailable:
            # Maestro holds the app's secret and is unreachable: a still-valid token kept
            # on this machine lets the bot work (its access token needs no secret) until
            # it expires
            kept = self._lifecycle.kept_client_id()
            if not kept:
                raise
            self._app = AppCredentials(kept, "", tenant_id or "common", "the token kept on "
                                       "this machine (Maestro is unreachable)")
            self._lifecycle.secret_unknown = True
        if self._app_only and self._app.tenant_id in ("common", "organizations", "consumers"):
            raise ConfigurationError(
                "auth_flow='app' needs the tenant: pass tenant_id (or set MS365_TENANT_ID, "
                "or the key tenant_id of the Maestro credential) to your tenant's id or "
                "domain, such as contoso.onmicrosoft.com.")
        self._credential_label = credential_label
        self._graph_url = https_url(graph_url or settings.graph_url or
                                    _o365.DEFAULT_GRAPH_URL, "graph_url", allow_local_http=True)
        self._token_credential: MS365TokenCredential | None = None
        self._consent = consent or settings.consent or None
        self._timeout = settings.consent_timeout
        self._account = _o365.build_account(
            self._app.client_id, self._app.credential,
            tenant_id=self._app.tenant_id,
            lifecycle=self._lifecycle,
            app_only=self._app_only,
            authority_host=https_url(
                authority_host or settings.authority_host or _o365.DEFAULT_AUTHORITY_HOST,
                "authority_host", allow_local_http=False),
            graph_url=self._graph_url,
            timeout=settings.http_timeout,
            retry_budget=settings.retry_seconds,
            cae=settings.cae,
        )
        # an error a Graph call raises names the whole sign-in command too
        self._account.con.login_command = lambda: self._login_command(
            _o365.granted_permissions(self._account))
        if self._vault is not None and credential_label and self._app.source.startswith(
                "Maestro"):
            #: the credential's keys as the app's credential was made from (a read that
            #: finds them unchanged loads nothing: a certificate's key is not decrypted again)
            self._app_keys = credential_keys(self._vault.read(credential_label))
            self._vault.watch(credential_label, self._app_credentials_read)
            self._account.con.new_secret = self._new_secret
        log.info("Microsoft 365 app credentials (%s) from %s; token in %s",
                 self._app.describe(), self._app.source, self._store.location)

    def __repr__(self) -> str:
        return (f"MS365CredentialsPlugin(client_id={self._app.client_id!r}, "
                f"token={self._store.location!r})")

    # -- the 0.2.0 surface ------------------------------------------------------------
    @property
    def credentials(self) -> tuple[str, str]:
        """``(client_id, client_secret)`` of the Azure app."""
        return self._app.client_id, self._app.client_secret

    @property
    def ms365_account(self) -> Account:
        """The ``O365.Account`` the OneDrive, Outlook and Excel plugins use."""
        return self._account

    @property
    def is_authenticated(self) -> bool:
        """True when the stored token can be used now: its access token is valid, or its
        refresh token still works (checked with one refresh when the access token has
        expired). A refresh token Microsoft rejected is never reported as valid."""
        try:
            self._ensure_usable()
        except AuthorizationRequired:
            return False
        return True

    @property
    def credential(self) -> MS365TokenCredential:
        """The same token for Microsoft's Graph SDK and azure-core clients: an azure-core
        ``TokenCredential`` (and ``SupportsTokenInfo``), renewed and stored as
        :attr:`ms365_account`'s is (see :mod:`.azure_credential`)::

            graph = GraphServiceClient(credentials=service.credential,
                                       scopes=["https://graph.microsoft.com/.default"])

        Needs azure-core (``pip install "botcity-ms365-credentials-plugin[graph]"`` brings
        it with msgraph-sdk); without it, :class:`ConfigurationError` says so."""
        if self._token_credential is None:
            self._token_credential = MS365TokenCredential(
                self._lifecycle, granted=lambda: _o365.granted_permissions(self._account),
                refuse=self._credential_refused, graph_url=self._graph_url,
                tenant_id=self._app.tenant_id, app_only=self._app_only)
        return self._token_credential

    @property
    def token_store(self) -> TokenStore:
        """The store the token lives in (an O365 token backend); its ``location`` says
        where, without secrets."""
        return self._store

    def authenticate(
        self,
        scopes: Iterable[Scopes | str] | Scopes | str | None = None,
        consent: str | ConsentHandler | None = None,
        *,
        force: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """Make sure a token with ``scopes`` (default: ``Scopes.BASIC``) is stored.

        With a usable token that covers ``scopes`` nothing is asked. Otherwise a person
        consents (to the stored permissions plus the new ones), or, when nobody can,
        :class:`AuthorizationRequired` says what is missing and how to fix it (and, with
        Maestro connected, one Maestro alert tells the operator). ``force=True`` has the
        person sign in again whatever is stored, choosing the account (Microsoft's
        ``prompt=select_account``): to sign in another account, which then replaces the
        stored one. ``progress`` is called about once a second with the seconds left
        while a browser or device-code sign-in is awaited.

        App-only (``auth_flow="app"``): gets an app token; ``scopes`` do not apply, the
        app's application permissions are set in its Azure registration.
        """
        if self._app_only:
            self._ensure_usable()
            return
        wanted = resolve_permissions(scopes)
        mode = choose_mode(consent or self._consent, self._maestro, sys.stdin, sys.argv,
                           command=lambda: self._login_command(self._with_granted(wanted)))
        cause: AuthorizationRequired | None = None
        if force:
            problem, missing = "token-replaced", frozenset(wanted)
        else:
            try:
                self._ensure_usable()
                missing = missing_permissions(wanted, _o365.granted_permissions(
                    self._account))
                if not missing:
                    return
                problem = "token-lacks-permissions"
            except AuthorizationRequired as exc:
                cause, missing, problem = exc, wanted, ""
        permissions = self._with_granted(wanted)
        if mode == "none":
            error = self._unattended(cause, problem, missing)
            error.complete(self._login_command(permissions))
            self._notify("Microsoft 365 authorization required", str(error), error=True,
                         once=self._stopped)
            raise error
        self._sign_in(mode, permissions, select_account=force,
                      claims=cause.claims if cause else None, progress=progress)

    def sign_in(
        self,
        scopes: Iterable[Scopes | str] | Scopes | str | None = None,
        consent: str | ConsentHandler | None = None,
        *,
        select_account: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> str:
        """Have a person sign in and consent now, whatever is stored, and store the new
        token; return the signed-in account. This is what ``botcity-ms365 login`` does, so
        it also repairs a token Microsoft revoked while its access token still works.

        The person consents to ``scopes`` plus the permissions the stored token already
        has. When the stored token's refresh was refused by conditional access, its
        challenge (``claims``) goes with the sign-in. ``select_account`` lets the person
        choose (or add) the account; a token holds one account, so signing in another
        replaces the stored one.
        """
        wanted = resolve_permissions(scopes)  # a mistyped scope is told before anything
        mode = choose_mode(consent or self._consent, self._maestro, sys.stdin, sys.argv,
                           command=lambda: self._login_command(self._with_granted(wanted)))
        if mode == "none":
            raise AuthorizationRequired.told("sign-in-unattended").complete(
                self._login_command(self._with_granted(wanted)))
        claims = None
        try:
            self._lifecycle.check(app_only=self._app_only, ask_anyway=True)
        except AuthorizationRequired as exc:  # a refusal's challenge goes with the sign-in
            claims = exc.claims
        return self._sign_in(mode, self._with_granted(wanted), select_account=select_account,
                             claims=claims, progress=progress)

    # -- internals --------------------------------------------------------------------
    def _new_secret(self) -> bool:
        """Microsoft refused the client secret: read the credential again; True when it
        holds another secret (now in use)."""
        assert self._vault is not None and self._credential_label
        before = self._account.con.client_secret
        try:
            self._vault.read(self._credential_label, max_age=0)  # watchers take a new one
        except StoreError:
            return False
        return self._account.con.client_secret != before

    def _app_credentials_read(self, values: dict[str, str]) -> None:
        """Maestro's credential was read again: an operator may have put a new client
        secret (or certificate) in it since the bot started; the bot uses it from then
        on. One that cannot be used is logged and the one in use kept."""
        keys = credential_keys(values)
        if keys == self._app_keys:
            return
        self._app_keys = keys
        try:
            app = from_credential({**values, "client_id": self._app.client_id},
                                  f"Maestro credential '{self._credential_label}'",
                                  tenant=self._app.tenant_id, source=self._app.source)
        except ConfigurationError as exc:
            log.warning("Maestro credential '%s' changed but cannot be used (%s); keeping "
                        "the app credential in use", self._credential_label, exc)
            return
        if app is not None and self._account.con.use_secret(app.credential):
            log.info("The app credential in Maestro credential '%s' changed; using the new "
                     "one (%s)", self._credential_label, app.describe())
            self._app = AppCredentials(app.client_id, app.client_secret, self._app.tenant_id,
                                       self._app.source, app.certificate)

    @property
    def _stopped(self) -> str:
        """The subject of the one alert a process raises when it cannot go on."""
        return f"stopped:{self._store.location}"

    def _with_granted(self, wanted: frozenset[str]) -> frozenset[str]:
        """``wanted`` plus what the stored token already holds (a new consent must not
        take permissions away from other bots of the credential)."""
        granted = _o365.granted_permissions(self._account) if self._store.has_data else set()
        return wanted | missing_permissions(granted, wanted)

    def _sign_in(self, mode: str | ConsentHandler, permissions: frozenset[str], *,
                 select_account: bool, claims: str | None,
                 progress: Callable[[float], None] | None) -> str:
        log.info("Asking for consent to %s", ", ".join(sorted(permissions)))
        ask = Ask(self._account, permissions, notify=self._notify, timeout=self._timeout,
                  prompt="select_account" if select_account else None, claims=claims,
                  tick=progress)
        try:
            username = consent_way(mode).obtain(ask)
        except AuthorizationRequired as exc:  # nobody answered: the command to sign in
            raise exc.complete(self._login_command(permissions)) from None
        log.info("Authorized %s; token saved to %s", username or "the user",
                 self._store.location)
        return username

    def _unattended(self, cause: AuthorizationRequired | None, problem: str,
                    missing: frozenset[str]) -> AuthorizationRequired:
        """Why nobody here can make the token usable: Microsoft's or the store's reason
        (``cause``), or ``problem`` (a message's name) with the ``missing`` permissions;
        its next step names the sign-in (:meth:`_login_command` completes it)."""
        found = tuple(sorted(missing))
        if cause is None:
            return AuthorizationRequired.told(
                problem, location=self._store.location, missing=", ".join(found),
                missing_permissions=found)
        return AuthorizationRequired(
            cause.cause, step=cause.step or SIGN_IN_AGAIN.format(command=COMMAND),
            missing_permissions=found, error=cause.error, code=cause.code,
            claims=cause.claims)

    def _login_command(self, permissions: Iterable[str]) -> str:
        """The ``botcity-ms365 login`` command that stores a token with ``permissions``
        where this bot reads it, with what must be set for it."""
        scopes = scope_names(permissions)
        if isinstance(self._store, MaestroTokenStore):
            label = self._credential_label or self._store.label
            return login_command(label=label, token_label=self._store.label,
                                 token_key=self._store.key, scopes=scopes)
        if self._vault is None and started_by_runner(sys.argv):
            # a Runner's bot that keeps the token in a file on the Runner: nobody signs in
            # there; the token belongs in Maestro, where every Runner finds it
            return (login_command(label="ms365", scopes=scopes) + ", and hand the plugin "
                    "the Runner's Maestro connection: MS365CredentialsPlugin(maestro="
                    "BotMaestroSDK.from_sys_args(), credential_label='ms365')")
        return login_command(token_path=str(getattr(self._store, "path", ".")),
                             scopes=scopes)

    def _notify(self, title: str, message: str, *, error: bool = False, once: str = "") -> None:
        """Tell the operator (a Maestro alert on the running task). A bot a Runner started
        without handing the plugin its Maestro connection (code written for 0.2.0) still
        reaches Maestro, through the connection the Runner's arguments describe."""
        vault = self._vault
        if vault is None and started_by_runner(sys.argv):
            vault = MaestroVault(runner_sdk(sys.argv))
        if vault is not None:
            vault.alert(title, message, error=error, once=once)

    def _refused(self, error: AuthorizationError) -> None:
        """Microsoft refused a refresh (a dead refresh token, an expired or wrong secret,
        conditional access): the bot gets the error; the operator gets one Maestro alert
        per process saying what to do. Inside the plugin's own checks a token a person
        must renew is reported by :meth:`authenticate`, with more to say (the lifecycle
        does not call this inside its checks)."""
        if isinstance(error, AuthorizationRequired):
            # the error the bot gets says the whole command too (it is raised after this)
            error.complete(self._login_command(_o365.granted_permissions(self._account)))
            self._notify("Microsoft 365 authorization required", str(error), error=True,
                         once=self._stopped)
            return
        self._notify("Microsoft 365 sign-in refused",
                     f"The bot cannot renew the Microsoft 365 token in "
                     f"{self._store.location}: {error}", error=True, once=self._stopped)

    def _credential_refused(self, problem: str,
                            missing: frozenset[str]) -> AuthorizationRequired:
        """The error :attr:`credential` raises for a token that cannot be used (``problem``:
        what is wrong with it; ``missing``: the permissions it lacks), naming the command
        that fixes it; the operator gets one Maestro alert."""
        permissions = self._with_granted(missing | frozenset(Scopes.BASIC.permissions))
        error = AuthorizationRequired(
            f"No usable Microsoft 365 token for Microsoft's Graph SDK: the token in "
            f"{self._store.location} {problem}. A person must authorize once, on a machine "
            f"with a browser: {self._login_command(permissions)}",
            missing_permissions=tuple(sorted(missing)))
        self._notify("Microsoft 365 authorization required", str(error), error=True,
                     once=self._stopped)
        return error

    def _ensure_usable(self) -> None:
        self._lifecycle.check(app_only=self._app_only)
