"""Everything that depends on O365 2.1 / msal internals lives here, but for the token
backend's own state (``_cache``, ``_lock``, ``_has_state_changed``) and msal's ``now`` of
``TokenCache.add``/``search``, which ``stores.py`` uses as O365's own backends do.

What it changes, and why:

- the authority: O365 hard-codes ``https://login.microsoftonline.com`` in the private
  ``Connection._msal_authority``; sovereign clouds and the sandbox need another host,
  and msal needs ``instance_discovery=False`` for a host Microsoft does not know;
- the Graph URL: ``MSGraphProtocol._protocol_url`` (a documented override point);
- the request: one hook, the token's lifecycle (``lifecycle.py``), runs before each Graph
  request and renews the access token when this process's moment has come; loading the
  token and O365's own 401 path go to it too (O365 alone renews only after Graph answered
  401); a request that gets no answer times out (``MS365_HTTP_TIMEOUT``);
- the refresh: O365 turns every refusal into ``RuntimeError("...: invalid_grant")``,
  dropping Microsoft's AADSTS code, and its client-credentials renewal breaks once msal
  has dropped the expired token it reads the scopes from. :meth:`PluginConnection.new_token`
  turns Microsoft's answer into the plugin's exception (:func:`.errors.explain`);
- msal's client: built lazily (its constructor fetches the OpenID configuration); a
  discovery that fails becomes :class:`ConfigurationError` (no such tenant) or
  :class:`ServiceUnavailable` (an outage, a proxy's page), never msal's ``ValueError`` or
  ``MsalServiceError``;
- msal's discovery: its HTTP client (:class:`MsalTransport`, given as msal's documented
  ``http_client``) answers msal's discovery requests (:func:`discovery_url`) from the
  answers saved with the token (``discovery.py``), and keeps those it fetches, so that a
  renewal in a new process costs only its token request. Answers that do not do (msal
  cannot build on them, or a token request fails and Microsoft's current ones differ)
  are fetched again, as msal would have;
- signing in: :class:`CodeSignIn` and :class:`DeviceCodeSignIn` keep msal's flow and
  client together; a sign-in replaces the stored account (a token holds one account);
- logging: ``O365.connection`` logs ``Authorization: Bearer <token>`` at DEBUG; a filter
  redacts it.

``tests/test_o365_seam.py`` fails loudly if a new O365 release moves any of these.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from msal import ConfidentialClientApplication, PublicClientApplication
from msal.exceptions import MsalServiceError
from O365 import Account
from O365.connection import Connection, MSGraphProtocol

from ._clock import Clock
from ._transport import DEFAULT_BUDGET, RetryingSession, graph_adapter
from .discovery import Discovery
from .errors import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    ServiceUnavailable,
    explain,
)
from .lifecycle import TokenLifecycle
from .scopes import RESERVED, permission_name
from .settings import is_loopback

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"

# -- log redaction ---------------------------------------------------------------------
_SECRET_FIELDS = ("access_token", "refresh_token", "id_token", "client_secret", "code",
                  "code_verifier", "device_code", "client_assertion", "assertion",
                  "private_key", "passphrase", "password", "secret")
_SECRETS_IN_TEXT = re.compile(
    r"(?i)(bearer\s+)[^\s'\",}]+"
    r"|(\b(?:" + "|".join(_SECRET_FIELDS) + r")['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
)
#: a PEM private key, and a JWT (an access token, an id token, a client assertion)
_KEYS_AND_JWTS = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE "
                            r"KEY-----|\beyJ[\w-]+\.[\w-]+\.[\w-]*", re.S)


def redact(text: str) -> str:
    """``text`` with bearer tokens, token/secret values, private keys and JWTs replaced by
    ``<redacted>``."""
    text = _KEYS_AND_JWTS.sub("<redacted>", text)
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


# -- the seams -------------------------------------------------------------------------
def graph_protocol(graph_url: str) -> MSGraphProtocol:
    """O365's Graph protocol for ``graph_url``. Permissions are prefixed with the Graph
    resource; a local emulator stands in for the public cloud, so it keeps
    ``https://graph.microsoft.com/``."""
    resource = DEFAULT_GRAPH_URL if is_loopback(graph_url) else graph_url.rstrip("/")

    class GraphProtocol(MSGraphProtocol):
        _protocol_url = graph_url.rstrip("/") + "/"
        _oauth_scope_prefix = resource + "/"

    return GraphProtocol()


# -- msal's discovery requests -----------------------------------------------------------
#: What msal asks before its first token request (msal/authority.py: ``Authority`` fetches
#: ``<authority>/v2.0/.well-known/openid-configuration``; on Microsoft's clouds,
#: ``_get_instance_discovery_endpoint`` and ``ClientApplication._get_instance_metadata``
#: fetch ``https://<host>/common/discovery/instance`` with query parameters).
_OPENID_CONFIGURATION = "/v2.0/.well-known/openid-configuration"
_INSTANCE_METADATA = "/common/discovery/instance"


def discovery_url(url: str, params: object = None) -> str | None:
    """The URL (query included) of a GET that is one of msal's discovery requests, whose
    answer may be saved with the token; None for any other request."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.query:
        return None
    if parts.path.endswith(_OPENID_CONFIGURATION) and not params:
        return url
    if parts.path == _INSTANCE_METADATA and isinstance(params, dict) and params:
        return f"{url}?{urlencode(sorted((str(k), str(v)) for k, v in params.items()))}"
    return None


def _saved_answer(url: str, text: str) -> requests.Response:
    """A discovery answer saved with the token, as msal reads an HTTP answer
    (``status_code``, ``text``, ``headers``)."""
    response = requests.Response()
    response.status_code = 200
    response.url = url
    response.encoding = "utf-8"
    response.headers["Content-Type"] = "application/json"
    response._content = text.encode("utf-8")
    return response


class MsalTransport(RetryingSession):
    """msal's HTTP client (msal's ``http_client`` parameter). msal's discovery requests
    are answered from ``discovery`` when ``serve`` and it holds a usable answer (what was
    answered so is in ``served``); an answer fetched is kept there. Any other request is
    the :class:`RetryingSession`'s."""

    def __init__(self, discovery: Discovery | None, *, serve: bool, clock: Clock,
                 budget: float, timeout: float) -> None:
        super().__init__(budget, timeout=timeout, clock=clock)
        self.discovery = discovery
        self.serve = serve
        #: URL -> the saved answer msal was given instead of fetching it.
        self.served: dict[str, str] = {}

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        discovery = self.discovery
        is_get = str(method).upper() == "GET" and not args  # msal passes params by name
        key = discovery_url(str(url), kwargs.get("params")) if is_get else None
        if discovery is None or key is None:
            return super().request(method, url, *args, **kwargs)
        now = self.clock.now()
        saved = discovery.answer(key, now) if self.serve else None
        if saved is not None:
            log.debug("msal's discovery answered from the token's store (%s)",
                      urlsplit(key).path)
            self.served[key] = saved
            return _saved_answer(str(url), saved)
        response = super().request(method, url, *args, **kwargs)
        if response.status_code == 200:
            discovery.learn(key, response.text, now)
        return response


#: msal's failures that mean "the identity platform did not answer as it should".
_OUTAGES = (requests.RequestException, MsalServiceError)
#: msal's failures on an answer it cannot read (a proxy's page, a malformed id token).
_ODD_ANSWERS = (ValueError, KeyError, IndexError, TypeError)


class PluginConnection(Connection):
    """O365's Connection with a configurable authority, the plugin's token request
    (:meth:`new_token`) and one hook into the token's lifecycle: loading, before each
    request, and O365's own refresh paths all go to ``lifecycle``.

    A token obtained with the device code flow belongs to a *public* client: the store
    says so (``client == "public"``) and its refreshes are made without the secret."""

    _msal_client: Any  # set by O365's Connection.__init__
    session: Any
    timeout: Any  # seconds a Graph request may wait for an answer (MS365_HTTP_TIMEOUT)
    #: (client id, client secret or certificate), set by O365's Connection.__init__; msal
    #: takes the second as its ``client_credential``
    auth: tuple[str, str | dict[str, str]]

    def __init__(self, credentials: Any, *, lifecycle: TokenLifecycle,
                 authority_host: str = DEFAULT_AUTHORITY_HOST,
                 graph_resource: str = DEFAULT_GRAPH_URL + "/",
                 retry_budget: float = DEFAULT_BUDGET, cae: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(credentials, token_backend=lifecycle.store, **kwargs)
        #: The token's lifecycle: it decides when to renew, and asks :meth:`new_token`.
        self.lifecycle = lifecycle
        lifecycle.refresh = self.new_token
        #: Declare continuous access evaluation to Microsoft (msal's client capability
        #: "CP1"): day-long access tokens, which Graph may then refuse with a claims
        #: challenge the moment a session is revoked (``MS365_CAE=0`` turns it off).
        self.client_capabilities = ["CP1"] if cae else None
        self.authority_host = authority_host.rstrip("/")
        self.graph_resource = graph_resource
        self._msal_authority = f"{self.authority_host}/{self.tenant_id}"
        self.oauth_redirect_url = f"{self.authority_host}/common/oauth2/nativeclient"
        self._built_for: str | None = None
        #: Seconds a call to the identity platform may spend retrying 429/5xx answers.
        self.retry_budget = retry_budget
        self._transports: dict[int, MsalTransport] = {}
        #: msal's discovery answers, saved with the token (see ``discovery.py``).
        self.discovery: Discovery | None = getattr(self.token_backend, "discovery", None)
        #: Called when Microsoft refuses the client secret: True when a new one was found
        #: (an operator rotated it in Maestro while the bot ran), and the refresh is tried
        #: once more with it.
        self.new_secret: Callable[[], bool] | None = None
        #: the plugin's ``botcity-ms365 login`` command for this token (for the errors
        #: that say a person must sign in: :meth:`.errors.AuthorizationRequired.complete`)
        self.login_command: Callable[[], str] | None = None

    @property
    def refresh_count(self) -> int:
        """How many tokens this process got from Microsoft (benchmarks and tests count)."""
        return self.lifecycle.refresh_count

    @property
    def rejected(self) -> AuthorizationRequired | None:
        """The refusal of the stored refresh token, until a person signs in (None: none)."""
        return self.lifecycle.rejected

    @property
    def client_secret(self) -> str | dict[str, str]:
        """The app's credential in use: its secret, or its certificate (msal's form)."""
        return self.auth[1]

    def use_secret(self, secret: str | dict[str, str]) -> bool:
        """Sign in with ``secret`` (a secret, or a certificate in msal's form) from now on
        (an operator rotated it); True when it is another one than the one in use."""
        if not secret or secret == self.auth[1]:
            return False
        self.auth = (self.auth[0], secret)
        self._msal_client = None
        return True

    def _client_type(self) -> str:
        return str(getattr(self.token_backend, "client_type", "confidential"))

    def build_msal_client(self, client_type: str, saved_discovery: bool = True) -> Any:
        """A new msal app. msal's constructor gets the authority's OpenID configuration:
        saved with the token (``saved_discovery``), or fetched. When msal cannot build on
        the saved answers, they are fetched."""
        transport = MsalTransport(self.discovery, serve=saved_discovery,
                                  clock=self.token_backend.clock, budget=self.retry_budget,
                                  timeout=self.timeout)
        try:
            client = self._msal_app(client_type, transport)
        except MS365CredentialsError:
            if not transport.served or self.discovery is None:
                raise
            log.info("msal could not use the discovery answers saved with the token; "
                     "fetching them")
            self.discovery.forget(transport.served)
            return self.build_msal_client(client_type, saved_discovery=False)
        self._transports[id(client)] = transport
        return client

    def _msal_app(self, client_type: str, transport: MsalTransport) -> Any:
        """msal's app on ``transport``. When its discovery fails, the plugin's exception
        says whether it is the tenant (a setting) or the service (try later)."""
        transport.verify = self.verify_ssl
        transport.proxies = self.proxy
        options: dict[str, Any] = {
            "http_client": transport,
            "client_id": self.auth[0],
            "authority": self._msal_authority,
            "token_cache": self.token_backend,
            "client_capabilities": self.client_capabilities,
            # msal validates only Microsoft's own hosts; any other is taken as given
            "instance_discovery": None if self.authority_host == DEFAULT_AUTHORITY_HOST
            else False,
        }
        try:
            if client_type == "public":
                return PublicClientApplication(**options)
            return ConfidentialClientApplication(client_credential=self.auth[1], **options)
        except ValueError:  # msal: discovery answered 4xx, or not JSON
            raise self._discovery_failed(transport) from None
        except (*_OUTAGES, KeyError) as exc:  # 5xx, unreachable, a document without endpoints
            raise ServiceUnavailable(
                f"Microsoft's identity platform at {self.authority_host} did not answer its "
                f"OpenID configuration for tenant '{self.tenant_id}' "
                f"({transport.gave_up or type(exc).__name__}): an outage or a network "
                "problem. Try again later.") from None

    def _discovery_changed(self, transport: MsalTransport | None) -> bool:
        """After a failed call of an msal client built on saved discovery answers: fetch
        them anew, as msal would have (and build the next client on them). True when
        Microsoft's answers differ from the saved ones: the call deserves another try.
        Not after an outage (the transport gave up): its answers are Microsoft's."""
        if (transport is None or not transport.served or transport.gave_up
                or self.discovery is None):
            return False
        served = dict(transport.served)
        self.discovery.forget(served)
        client_type = self._client_type()
        try:
            self._msal_client = self.build_msal_client(client_type, saved_discovery=False)
        except MS365CredentialsError:
            return False
        self._built_for = client_type
        if all(self.discovery.document(url) == json.loads(text)
               for url, text in served.items()):
            return False
        log.info("The discovery answers saved with the token were out of date; trying "
                 "again with Microsoft's current ones")
        return True

    def _discovery_failed(self, transport: RetryingSession) -> MS365CredentialsError:
        status, code = transport.last_get or (0, None)
        if 400 <= status < 500:
            return ConfigurationError(
                f"The tenant '{self.tenant_id}' is not known to {self.authority_host} "
                f"(HTTP {status}{', ' + code if code else ''}: no such tenant in this "
                "cloud). Set tenant_id (or MS365_TENANT_ID, or the key tenant_id of the "
                "Maestro credential) to the Directory (tenant) ID or domain shown on the "
                "app's Overview page in the Azure portal.")
        return ServiceUnavailable(
            f"{self.authority_host} answered the OpenID configuration of tenant "
            f"'{self.tenant_id}' with HTTP {status} and a page that is not Microsoft's "
            "(a proxy or an outage). Try again later, or check the machine's proxy.")

    @property
    def msal_client(self) -> Any:
        client_type = self._client_type()
        if self._msal_client is None or self._built_for != client_type:
            self._msal_client = self.build_msal_client(client_type)
            self._built_for = client_type
        return self._msal_client

    def get_session(self, load_token: bool = False) -> Any:
        """O365's session on the plugin's Graph adapter (:func:`._transport.graph_adapter`):
        each request bounded as a whole (``MS365_HTTP_TIMEOUT``), 429/5xx answers and
        failed connections retried as O365 does with every wait out of the retry budget
        (``MS365_RETRY_SECONDS``), a request that timed out not retried."""
        session = super().get_session(load_token=load_token)
        adapter = graph_adapter(retries=self.request_retries, budget=self.retry_budget,
                                timeout=self.timeout)
        for prefix in ("http://", "https://"):
            session.mount(prefix, adapter)
        return session

    def oauth_request(self, url: str, method: str, **kwargs: Any) -> Any:
        """O365's request (:meth:`_request`); when a person must sign in, the error says
        the whole command (:attr:`login_command`)."""
        try:
            return self._request(url, method, **kwargs)
        except AuthorizationRequired as exc:
            if self.login_command is not None:
                exc.complete(self.login_command())
            raise

    def _request(self, url: str, method: str, **kwargs: Any) -> Any:
        """O365's request, after the lifecycle's hook (which renews the access token when
        this process's moment to do so has come: see ``lifecycle.py``). A request that
        gets no answer within the timeout raises :class:`ServiceUnavailable`."""
        if self.session is None:
            self.session = self.get_session(load_token=True)
        if self.lifecycle.before_request() or self._behind():
            self._apply()
        for repeated in (False, True):
            try:
                return self._graph(url, method, **kwargs)
            except requests.HTTPError as exc:
                if not _token_refused(exc):
                    raise
                if repeated:
                    raise self.lifecycle.refused_again(_graph_error(exc)) from None
                # Graph refused an access token valid by its expiry: a claims challenge
                # (continuous access evaluation: a session revoked, a password changed, a
                # location policy), or a plain 401 (a signing key rolled over): renew it
                # for all bots, with the challenge's claims, and ask once more
                self.lifecycle.refused_by_graph(_graph_error(exc), claims_challenge(exc),
                                                sent=_sent_token(exc))
                self._apply()
        raise AssertionError("unreachable")  # pragma: no cover

    def _behind(self) -> bool:
        """Whether the session carries another access token than the one held (the token
        was renewed by another of its users in this process: ``service.credential``)."""
        held = self.token_backend.get_access_token(username=self.username)
        return held is not None and self.session.headers.get("Authorization") != (
            f"Bearer {held['secret']}")

    def _no_token(self) -> AuthorizationRequired:
        return AuthorizationRequired(
            f"The account was used before authenticate(): no token is held for "
            f"{self.token_backend.location}.", step="Call service.authenticate(scopes=...) "
            "before using service.ms365_account.")

    def _apply(self) -> None:
        """Put the access token held on the session (O365's ``RuntimeError`` when there is
        none becomes the plugin's error)."""
        try:
            self.update_session_auth_header()
        except RuntimeError:
            raise self._no_token() from None

    def _graph(self, url: str, method: str, **kwargs: Any) -> Any:
        """One Graph request as O365 makes it (O365 renews after a 401 only when its own
        clock says the access token expired: :meth:`_try_refresh_token`)."""
        try:
            response = super().oauth_request(url, method, **kwargs)
        except RuntimeError as exc:
            if "auth token" not in str(exc):  # O365: "No auth token found..."
                raise
            raise self._no_token() from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ServiceUnavailable(
                f"Microsoft Graph did not answer {method.upper()} {urlsplit(url).path} "
                f"({type(exc).__name__}, timeout {self.timeout} s; set MS365_HTTP_TIMEOUT to "
                "wait longer). Try again later.") from None
        self.token_backend.clock.learn(response.headers.get("Date"))
        return response

    def load_token_from_backend(self) -> bool:
        """O365's load (at the first request, or ``is_authenticated``): the lifecycle's,
        which knows what to do when Maestro is down."""
        if not self.lifecycle.load():
            return False
        if self._username is None:
            account = self.token_backend.get_account()
            if account:
                self.username = account.get("username")
        return True

    def _try_refresh_token(self) -> bool:
        """O365's path after Graph answered 401 on an access token its clock says expired:
        the lifecycle renews (another bot's token, or a refresh), then the request is
        repeated."""
        self.lifecycle.renew()
        self.update_session_auth_header()
        return True

    def refresh_token(self) -> bool:
        """Get a new access token (and rotated refresh token) now, and write it to the
        store as after any renewal (its outcome is in ``lifecycle.outcome``). App-only
        connections ask for a new token with the client credentials."""
        self.lifecycle.refresh_now()
        if self.session is not None:
            self.update_session_auth_header()
        return True

    def new_token(self, claims: str | None = None, *, retried: bool = False) -> None:
        """Ask Microsoft for a new token (a refresh, or an app-only token); msal puts it
        in the store's memory. ``claims``: a claims challenge Graph sent (continuous
        access evaluation), which the request must satisfy. Microsoft's refusal is the
        plugin's exception, saying what it means and what to do (:func:`.errors.explain`)."""
        log.debug("Refreshing the access token")
        if self.session is None:
            self.session = self.get_session(load_token=True)
        if self.auth_flow_type == "credentials":
            doing = "getting an app-only token"
            result = self._call(doing, lambda client: client.acquire_token_for_client(
                scopes=[f"{self.graph_resource}.default"]))
        else:
            doing = "refreshing the access token"
            scopes = self.token_backend.get_token_scopes(username=self.username,
                                                         remove_reserved=True)
            if not scopes:
                raise AuthorizationRequired.told("no-refresh-token",
                                                 location=self.token_backend.location)

            def silent(client: Any) -> Any:
                accounts = client.get_accounts(username=self.username)
                if not accounts:
                    return None
                return client.acquire_token_silent_with_error(
                    scopes=scopes, account=accounts[0], force_refresh=True,
                    claims_challenge=claims)

            result = self._call(doing, silent)
            if result is None:
                raise AuthorizationRequired.told("no-refresh-token",
                                                 location=self.token_backend.location)
        if (result and result.get("error") == "invalid_client" and not retried
                and self.new_secret is not None and self.new_secret()):
            log.info("Refreshing again with the client secret now in the credential")
            return self.new_token(claims, retried=True)
        if not result or "access_token" not in result:
            raise explain(result or {}, doing)
        self.update_session_auth_header(access_token=result["access_token"])

    def _call(self, doing: str, call: Callable[[Any], Any]) -> Any:
        """Run an msal call; when the identity platform kept failing past the retry
        budget, raise ServiceUnavailable. After a failure the msal client is built anew:
        msal remembers failed requests (a 400 for a minute) and would answer from that;
        when it was built on saved discovery answers that turn out out of date, the call
        is made once more (see :meth:`_discovery_changed`)."""
        client = self.msal_client
        transport = self._transports.get(id(client))
        try:
            result = call(client)
        except _OUTAGES as exc:
            self._msal_client = None
            if self._discovery_changed(transport):
                return self._call(doing, call)
            what = (transport.gave_up if transport is not None and transport.gave_up
                    else type(exc).__name__)
            raise ServiceUnavailable(
                f"Microsoft's identity platform answered {what} for "
                f"{self.retry_budget:.0f} s while {doing} (throttling or an outage). "
                "Try again later.") from None
        except _ODD_ANSWERS as exc:
            self._msal_client = None
            if self._discovery_changed(transport):
                return self._call(doing, call)
            raise ServiceUnavailable(
                f"Microsoft's identity platform answered something msal cannot read while "
                f"{doing} ({type(exc).__name__}: a proxy's page?). Try again later, or check "
                "the machine's proxy.") from None
        if isinstance(result, dict) and "error" in result:
            self._msal_client = None
        if (isinstance(result, dict) and "access_token" not in result
                and self._discovery_changed(transport)):
            return self._call(doing, call)
        gave_up = transport.gave_up if transport is not None else None
        if gave_up and (not result or "access_token" not in result):
            raise ServiceUnavailable(
                f"Microsoft's identity platform answered {gave_up} for "
                f"{self.retry_budget:.0f} s while {doing} (throttling or an outage). "
                "Try again later.")
        return result


_CHALLENGE = re.compile(r'error="insufficient_claims"')
_CLAIMS = re.compile(r'claims="([A-Za-z0-9+/=_-]+)"')


def claims_challenge(exc: requests.HTTPError) -> str | None:
    """The claims of Graph's ``WWW-Authenticate: Bearer ... error="insufficient_claims",
    claims="<base64>"`` (continuous access evaluation), as the JSON text msal takes as its
    ``claims_challenge``; None for a 401 without one."""
    header = exc.response.headers.get("WWW-Authenticate", "") if exc.response is not None \
        else ""
    found = _CLAIMS.search(header) if _CHALLENGE.search(header) else None
    if found is None:
        return None
    text = found.group(1)
    try:
        decoded = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_")
                                           + "=" * (-len(text) % 4)).decode("utf-8")
        json.loads(decoded)
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded


def _status(exc: requests.HTTPError) -> int | None:
    return exc.response.status_code if exc.response is not None else None


def _token_refused(exc: requests.HTTPError) -> bool:
    """Whether Graph's 401 refuses the access token itself (``InvalidAuthenticationToken``,
    or a ``WWW-Authenticate`` challenge), not something else of the request."""
    if _status(exc) != 401:
        return False
    header = exc.response.headers.get("WWW-Authenticate", "") if exc.response is not None \
        else ""
    return ('error="insufficient_claims"' in header or 'error="invalid_token"' in header
            or _graph_error(exc).startswith("InvalidAuthenticationToken"))


def _sent_token(exc: requests.HTTPError) -> str | None:
    """The access token the refused request carried (never logged)."""
    request = exc.response.request if exc.response is not None else None
    header = str(request.headers.get("Authorization", "")) if request is not None else ""
    return header[len("Bearer "):] if header.startswith("Bearer ") else None


def _graph_error(exc: requests.HTTPError) -> str:
    """Graph's error code and message of a refused request (``code: message``), without
    anything of the request (its headers hold the token)."""
    try:
        error = exc.response.json().get("error", {}) if exc.response is not None else {}
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    code, message = str(error.get("code") or "no code"), str(error.get("message") or "")
    return f"{code}: {message}" if message else code


class PluginAccount(Account):
    connection_constructor = PluginConnection


def build_account(
    client_id: str, client_credential: str | dict[str, str], *, tenant_id: str,
    lifecycle: TokenLifecycle,
    authority_host: str, graph_url: str, timeout: float, retry_budget: float,
    app_only: bool = False, cae: bool = True,
) -> PluginAccount:
    """The O365 account on ``lifecycle``'s store; its connection becomes the lifecycle's
    way to ask Microsoft for a token."""
    protocol = graph_protocol(graph_url)
    return PluginAccount(
        (client_id, client_credential),
        protocol=protocol,
        tenant_id=tenant_id,
        lifecycle=lifecycle,
        authority_host=authority_host,
        graph_resource=protocol.prefix_scope(""),
        auth_flow_type="credentials" if app_only else "authorization",
        timeout=timeout,
        retry_budget=retry_budget,
        cae=cae,
    )


def graph_scopes(account: Account, permissions: frozenset[str]) -> list[str]:
    """Graph permission names prefixed with the account's Graph resource, sorted."""
    return sorted(account.protocol.prefix_scope(p) for p in permissions)


# -- a person signs in -------------------------------------------------------------------
def _signed_in(account: Account, result: dict[str, Any], client_type: str,
               save: bool = True) -> str:
    """After Microsoft issued tokens: keep only the account that signed in (a token holds
    one account), select it, update the session, save; return its username."""
    con = account.con
    store = con.token_backend
    store.client_type = client_type
    claims = result.get("id_token_claims") or {}
    if claims.get("oid") and claims.get("tid"):
        home = f"{claims['oid']}.{claims['tid']}"
        store.keep_only_account(home, frozenset(
            str(result[name]) for name in ("access_token", "refresh_token") if result.get(name)))
        con._username = None
        con._set_username_from_token_backend(home_account_id=home)
    if con.session is not None:
        con.update_session_auth_header(access_token=result["access_token"])
    con.lifecycle.signed_in()
    if save:
        store.save_token(force=True)
    return str(con.username or claims.get("preferred_username") or "")


def _redeem(account: Account, client: Any, call: Callable[[], Any], doing: str,
            client_type: str, save: bool = True) -> str:
    con = account.con
    transport = con._transports.get(id(client))
    try:
        result = call()
    except _OUTAGES as exc:
        raise ServiceUnavailable(
            f"Microsoft's identity platform answered "
            f"{(transport.gave_up if transport else None) or type(exc).__name__} while "
            f"{doing}. Try again later.") from None
    except _ODD_ANSWERS as exc:
        raise ServiceUnavailable(
            f"Microsoft's identity platform answered something msal cannot read while "
            f"{doing} ({type(exc).__name__}). Try again later, or check the machine's "
            "proxy.") from None
    if "access_token" not in result:
        raise explain(result, doing)
    return _signed_in(account, result, client_type, save)


class CodeSignIn:
    """One authorization-code sign-in: the URL a person opens, and the redemption of the
    code Microsoft sends the browser back with. ``prompt="select_account"`` lets the
    person pick (or add) an account; ``claims`` is a conditional-access challenge that
    the sign-in must satisfy."""

    def __init__(self, account: Account, permissions: frozenset[str],
                 redirect_uri: str | None = None, *, prompt: str | None = None,
                 claims: str | None = None) -> None:
        self._account = account
        con = account.con
        self._client = con.build_msal_client("confidential", saved_discovery=False)
        self.redirect_uri = redirect_uri or con.oauth_redirect_url
        with warnings.catch_warnings():
            # msal recommends response_mode=form_post, which a pasted address cannot carry
            warnings.filterwarnings("ignore", message="response_mode='form_post'")
            self._flow = self._client.initiate_auth_code_flow(
                scopes=graph_scopes(account, permissions), redirect_uri=self.redirect_uri,
                prompt=prompt, claims_challenge=claims)
        self.url: str = self._flow["auth_uri"]
        self.state: str = self._flow["state"]

    def redeem(self, answer: dict[str, str]) -> str:
        """Exchange the code for tokens, save them, return the username."""
        doing = "redeeming the authorization code"

        def call() -> Any:
            try:
                return self._client.acquire_token_by_auth_code_flow(self._flow, answer)
            except (ValueError, RuntimeError) as exc:  # msal: state or nonce mismatch
                raise AuthorizationError(
                    "The authorization answer does not belong to this sign-in "
                    f"({type(exc).__name__}: its state or nonce does not match). Start the "
                    "authorization again.") from None

        try:
            return _redeem(self._account, self._client, call, doing, "confidential")
        except AuthorizationError as exc:
            if exc.code in ("AADSTS70008", "AADSTS54005"):
                raise AuthorizationError(
                    "The sign-in took too long, or its address was used already: Microsoft "
                    "accepts the code in the address for 10 minutes, once "
                    f"({exc.code}). Start again, and paste the address right after you "
                    "accept.", error=exc.error, code=exc.code) from None
            raise


class DeviceCodeSignIn:
    """One device-code sign-in (a public-client flow: no secret is sent): the code a person
    enters at ``verification_uri``, and the wait until they do."""

    def __init__(self, account: Account, permissions: frozenset[str], *,
                 claims: str | None = None) -> None:
        self._account = account
        self._client = account.con.build_msal_client("public", saved_discovery=False)
        flow = self._client.initiate_device_flow(
            scopes=graph_scopes(account, permissions), claims_challenge=claims)
        if "user_code" not in flow:
            raise explain(flow, "starting the device code sign-in")
        self._flow = flow
        self.verification_uri: str = flow["verification_uri"]
        self.user_code: str = flow["user_code"]
        self.expires_in = float(flow.get("expires_in", 900))

    def finish(self, timeout: float, tick: Callable[[float], None] | None = None) -> str:
        """Poll (at Microsoft's interval) until the person signs in, refuses, or
        ``timeout`` seconds pass; save the token; return the username. ``tick(seconds
        left)`` is called about once a second while waiting."""
        flow = self._flow
        microsofts = float(flow.get("expires_at", 0))
        flow["expires_at"] = min(microsofts, time.time() + timeout)
        why = (f"within {timeout:.0f} s" if flow["expires_at"] < microsofts else
               f"before the code expired (Microsoft's codes last {self.expires_in:.0f} s); "
               "start again")

        def stop_polling(state: dict[str, Any]) -> bool:
            left = float(state.get("expires_at", 0)) - time.time()
            if tick is not None and left > 0:
                tick(left)
            return left <= 0

        def call() -> Any:
            result = self._client.acquire_token_by_device_flow(flow,
                                                               exit_condition=stop_polling)
            if result.get("error") == "authorization_pending":  # our deadline came first
                raise AuthorizationError(
                    f"Nobody completed the device code sign-in {why}.",
                    error="authorization_pending")
            return result

        return _redeem(self._account, self._client, call,
                       "waiting for the device code sign-in", "public")


def redeem_refresh_token(account: Account, refresh_token: str, permissions: frozenset[str]
                         ) -> str:
    """Turn a bare refresh token (an O365 1.x token file) into a full token in the
    account's store's memory (the caller writes it); return the username."""
    client = account.con.build_msal_client("confidential", saved_discovery=False)
    scopes = graph_scopes(account, permissions) if permissions else [
        account.protocol.prefix_scope(".default")]
    return _redeem(account, client,
                   lambda: client.acquire_token_by_refresh_token(refresh_token, scopes=scopes),
                   "redeeming the old refresh token", "confidential", save=False)


# -- facts about the loaded token ------------------------------------------------------
def granted_permissions(account: Account) -> frozenset[str]:
    """The Graph permissions of the loaded token, in Microsoft's casing."""
    scopes = account.con.token_backend.get_token_scopes(username=account.con.username) or []
    return frozenset(permission_name(s) for s in scopes) - RESERVED
