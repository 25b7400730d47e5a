"""The three sandbox servers together (a Microsoft identity platform, Microsoft Graph and
BotCity Maestro on 127.0.0.1 ephemeral ports), and what a client needs to reach them.
Driven by the real O365, msal and botcity-maestro-sdk over HTTP::

    with Sandbox() as sbx:
        env = sbx.process_env()               # a bot process: trust its CA, use its clouds
        maestro = sbx.maestro_sdk()           # a logged-in BotMaestroSDK
        sbx.authorize("ms365", ["basic"])     # the first consent, stored in its Maestro
        ...
        sbx.requests("identity")              # every request each server answered

At a distance: ``Sandbox(round_trip={"maestro": 0.040, "microsoft": 0.020})`` puts a
delaying proxy (:mod:`.distance`) in front of Maestro and of the identity platform and
Graph, and every address the sandbox gives out (and the servers hand out: the OpenID
configuration, the device-code page, ...) goes through it; ``maestro_latency``,
``maestro_write_latency``, ``maestro_visibility_delay`` and ``maestro_token_lifetime``
make its Maestro slow, eventually consistent and its login tokens expire
(:class:`~.maestro.MaestroService`).

Nothing here changes this process's environment: what a bot needs is handed over
(:meth:`Sandbox.client_env`, :meth:`Sandbox.bot_env`, :meth:`Sandbox.process_env`).
Only :meth:`Sandbox.authorize` uses the plugin (its errors, imported when it is called,
and a process of its own that signs in); the servers import nothing of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._http import Request, RequestLog, Service
from ._tls import make_tls_files
from .client_assertions import MadeCertificate, make_certificate
from .distance import DelayProxy
from .graph import GraphService
from .identity import IdentityService, Tenant
from .maestro import MaestroService

__all__ = ["ROUND_TRIP_KEYS", "Request", "Sandbox", "accept_sign_in", "expire_token_text"]

#: what ``round_trip=`` may name: Maestro, Microsoft (the identity platform and Graph), or
#: one of those two services
ROUND_TRIP_KEYS = ("maestro", "microsoft", "identity", "graph")


def accept_sign_in(authorize_url: str, ca_file: str) -> str:
    """A person at the sandbox's sign-in page: open ``authorize_url``, press *Accept* when
    the page asks (``consent="ask"``), and return the address the browser lands on.
    ``requests`` errors pass through; a page that does not redirect is a RuntimeError."""
    import requests

    page = requests.get(authorize_url, allow_redirects=False, verify=ca_file, timeout=10)
    if page.status_code == 200 and "decision" in page.text:  # the Accept page
        page = requests.post(authorize_url, data={"decision": "accept"},
                             allow_redirects=False, verify=ca_file, timeout=10)
    location = page.headers.get("Location")
    if page.status_code != 302 or not location:
        raise RuntimeError(f"the sign-in failed: {page.status_code} {page.text[:300]}")
    return location


def expire_token_text(text: str) -> str:
    """Return a stored token (the plugin's JSON) with every access token marked expired,
    as if its hour had passed: what a bot finds after a long pause."""
    data = json.loads(text)
    for entry in data.get("AccessToken", {}).values():
        shift = int(entry["expires_on"]) - int(time.time()) + 60  # its life ended a minute ago
        for field in ("expires_on", "cached_at", "extended_expires_on"):
            if field in entry:
                entry[field] = str(int(entry[field]) - shift)
        entry.pop("refresh_on", None)
    return json.dumps(data, separators=(",", ":"))


class Sandbox:
    """Start with :meth:`start` (or ``with``); stop with :meth:`stop`.

    Args:
        maestro_version: what Maestro's version call answers.
        round_trip: seconds of network round trip between a client and ``"maestro"``,
            ``"microsoft"`` (the identity platform and Graph) or ``"identity"`` or
            ``"graph"`` alone; each named gets a :class:`~.distance.DelayProxy`.
        maestro_latency, maestro_write_latency: ``(low, high)`` seconds Maestro waits
            before handling each read (GET) and each other request (default: as reads).
        maestro_visibility_delay: seconds a credential write stays unseen by reads.
        maestro_token_lifetime: seconds a login's or a Runner's token is accepted.
        maestro_tls: Maestro over HTTPS (the sandbox CA), as the real one is; default
            plain HTTP on loopback.
        cae: the tenant has continuous access evaluation (day-long tokens for clients that
            declare it, refused by Graph after a critical event); False: ordinary tokens
            for every client (:attr:`~.identity.Tenant.cae_enabled`).
    """

    def __init__(self, *, maestro_version: str = "3.5.0",
                 round_trip: Mapping[str, float] | None = None,
                 maestro_latency: tuple[float, float] | None = None,
                 maestro_write_latency: tuple[float, float] | None = None,
                 maestro_visibility_delay: float = 0.0,
                 maestro_token_lifetime: float | None = None,
                 maestro_tls: bool = False, cae: bool = True) -> None:
        unknown = set(round_trip or {}) - set(ROUND_TRIP_KEYS)
        if unknown:
            raise ValueError(f"round_trip names {sorted(unknown)}; it knows "
                             f"{', '.join(ROUND_TRIP_KEYS)}")
        self._folder = Path(tempfile.mkdtemp(prefix="botcity-ms365-sandbox-"))
        try:
            self._make(maestro_version, round_trip, maestro_latency, maestro_write_latency,
                       maestro_visibility_delay, maestro_token_lifetime, maestro_tls, cae)
        except BaseException:  # an option refused: nothing is left behind
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def _make(self, maestro_version: str, round_trip: Mapping[str, float] | None,
              maestro_latency: tuple[float, float] | None,
              maestro_write_latency: tuple[float, float] | None,
              maestro_visibility_delay: float, maestro_token_lifetime: float | None,
              maestro_tls: bool, cae: bool) -> None:
        self.tls = make_tls_files(self._folder)
        self.requests = RequestLog()
        self.tenant = Tenant(cae_enabled=bool(cae))
        #: The Azure app registration the demo and tests use.
        self.app = self.tenant.register_app()
        context = self.tls.server_context()
        self.identity = IdentityService(self.requests, context, self.tenant)
        self.graph = GraphService(self.requests, context, self.tenant)
        self.maestro = MaestroService(self.requests, version=maestro_version,
                                      tls=context if maestro_tls else None)
        self.maestro.set_latency(maestro_latency, maestro_write_latency)
        self.maestro.visibility_delay = float(maestro_visibility_delay)
        self.maestro.token_lifetime = maestro_token_lifetime
        trips = dict(round_trip or {})
        #: seconds of round trip in front of each service (0: none, loopback)
        self.round_trip = {
            "identity": float(trips.get("identity", trips.get("microsoft", 0.0))),
            "graph": float(trips.get("graph", trips.get("microsoft", 0.0))),
            "maestro": float(trips.get("maestro", 0.0)),
        }
        #: the proxy in front of each service at a distance (made at :meth:`start`)
        self.proxies: dict[str, DelayProxy] = {}

    # -- lifecycle --------------------------------------------------------------------
    def _services(self) -> dict[str, Service]:
        return {"identity": self.identity, "graph": self.graph, "maestro": self.maestro}

    def start(self) -> Sandbox:
        try:
            for name, service in self._services().items():
                service.start()
                if self.round_trip[name] > 0:
                    proxy = DelayProxy(("127.0.0.1", service.port), self.round_trip[name],
                                       name=name).start()
                    self.proxies[name] = proxy
                    service.advertised_url = proxy.url(service.scheme)
        except BaseException:  # what started stops, and the folder goes
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
        self.proxies.clear()
        for service in self._services().values():
            service.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what clients need ------------------------------------------------------------
    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_cert)

    @property
    def authority_host(self) -> str:
        return self.identity.url

    @property
    def graph_url(self) -> str:
        return self.graph.url

    @property
    def maestro_url(self) -> str:
        return self.maestro.url

    def client_env(self) -> dict[str, str]:
        """Environment for a bot process: trust the sandbox CA (``requests``, and httpx:
        Microsoft's Graph SDK), use its clouds, and sign in to its tenant (the sandbox app
        is single-tenant, as the portal makes new apps)."""
        return {
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "SSL_CERT_FILE": self.ca_file,
            "MS365_AUTHORITY_HOST": self.authority_host,
            "MS365_GRAPH_URL": self.graph_url,
            "MS365_TENANT_ID": self.tenant.tenant_id,
        }

    def ca_bundle(self) -> str:
        """A CA file with the public CAs (certifi's, which requests uses) and then the
        sandbox's: a bot or a terminal that trusts it still reaches other HTTPS servers."""
        import certifi

        bundle = self._folder / "ca-bundle.pem"
        if not bundle.exists():
            public = Path(certifi.where()).read_text(encoding="utf-8")
            bundle.write_text(public + "\n" + self.tls.ca_cert.read_text(), encoding="utf-8")
        return str(bundle)

    def bot_env(self) -> dict[str, str]:
        """Everything a developer's bot process needs to use the sandbox: :meth:`client_env`
        with :meth:`ca_bundle`, the app's keys for the local-file path
        (``MS365_CLIENT_ID``/``MS365_CLIENT_SECRET``), the Maestro connection
        (``BOTCITY_SERVER``/``BOTCITY_LOGIN``/``BOTCITY_KEY``) and a fallback folder of the
        sandbox's own (removed with it)."""
        return {
            **self.client_env(),
            "REQUESTS_CA_BUNDLE": self.ca_bundle(),
            "SSL_CERT_FILE": self.ca_bundle(),
            "MS365_CLIENT_ID": self.app.client_id,
            "MS365_CLIENT_SECRET": self.app.secret,
            "BOTCITY_SERVER": self.maestro_url,
            "BOTCITY_LOGIN": self.maestro.login,
            "BOTCITY_KEY": self.maestro.key,
            "MS365_FALLBACK_DIR": str(self._folder / "fallback"),
        }

    def process_env(self, **extra: str) -> dict[str, str]:
        """Environment for a bot process started here: this process's, less any plugin or
        Maestro settings (``MS365_*``, ``BOTCITY_*``), plus :meth:`client_env` and ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MS365_", "BOTCITY_"))}
        return {**env, **self.client_env(), **extra}

    def maestro_sdk(self) -> Any:
        """A ``BotMaestroSDK`` logged in to the sandbox Maestro, as a developer's bot is."""
        from botcity.maestro import BotMaestroSDK

        sdk = BotMaestroSDK(self.maestro_url, self.maestro.login, self.maestro.key)
        sdk.login()
        return sdk

    def put_app_credentials(self, label: str, *, tenant_id: str | bool = True) -> None:
        """Store the sandbox app's client id and secret under ``label`` in Maestro, and its
        tenant as ``tenant_id`` (True: the sandbox tenant's id; False: no key; a string:
        that value), as the README tells an operator to."""
        self.maestro.put_secret(label, "client_id", self.app.client_id)
        self.maestro.put_secret(label, "client_secret", self.app.secret)
        if tenant_id:
            value = self.tenant.tenant_id if tenant_id is True else str(tenant_id)
            self.maestro.put_secret(label, "tenant_id", value)

    def add_certificate(self, **options: Any) -> MadeCertificate:
        """A new certificate (see :func:`.client_assertions.make_certificate` for ``options``)
        with its public part uploaded to the sandbox app."""
        made = make_certificate(**options)
        self.tenant.upload_certificate(self.app, made.certificate_pem)
        return made

    def put_app_certificate(self, label: str, pem: str, *, thumbprint: str | None = None,
                            password: str | None = None, tenant_id: bool = True) -> None:
        """Store the app's client id and a certificate (PEM text) under ``label`` in
        Maestro, with its thumbprint and password when given: no client secret."""
        self.maestro.put_secret(label, "client_id", self.app.client_id)
        self.maestro.put_secret(label, "client_certificate", pem)
        if thumbprint:
            self.maestro.put_secret(label, "client_certificate_thumbprint", thumbprint)
        if password:
            self.maestro.put_secret(label, "client_certificate_password", password)
        if tenant_id:
            self.maestro.put_secret(label, "tenant_id", self.tenant.tenant_id)

    def consent_redirect(self, authorize_url: str) -> str:
        """Do what a person does in the browser: open the consent URL, sign in as the
        sandbox user, accept, and return the address the browser lands on."""
        return accept_sign_in(authorize_url, self.ca_file)

    def authorize(self, label: str, scopes: list[Any], *, timeout: float = 60.0) -> None:
        """The first consent into Maestro credential ``label`` (made with the app's keys
        when it does not exist), as a person does it with ``botcity-ms365 login``: the
        plugin signs in, in a process of its own (:mod:`.first_consent`) pointed at the
        sandbox (and its Maestro) by its environment (:meth:`bot_env`), so this process's
        environment is left as it is. The plugin's error, if it fails, is raised here."""
        from botcity.plugins.ms365.credentials import errors

        if label not in self.maestro.credentials:
            self.put_app_credentials(label)
        request = {"label": label, "scopes": [str(getattr(s, "value", s)) for s in scopes]}
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", f"{__package__}.first_consent", json.dumps(request)],
            env=self.process_env(**self.bot_env()), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode == 0:
            return
        lines = done.stdout.strip().splitlines()
        try:
            failure = json.loads(lines[-1])
            kind = getattr(errors, failure["error"])
        except (IndexError, ValueError, KeyError, TypeError, AttributeError):
            raise RuntimeError(f"the sandbox's sign-in failed (exit {done.returncode}): "
                               f"{(done.stdout + done.stderr)[-2000:]}") from None
        raise kind(failure["message"])

    def fail_maestro(self, times: int = 1, status: int = 500) -> None:
        """The next ``times`` requests to Maestro get ``status`` (0: the connection
        drops)."""
        self.maestro.fail_next(status, times=times, drop=not status)

    def skew_clock(self, seconds: float) -> None:
        """The identity platform's and Graph's clocks run ``seconds`` ahead of this
        machine's (behind when negative): their answers' ``Date`` headers say so."""
        self.identity.clock_offset = self.graph.clock_offset = float(seconds)

    def expire_client_secret(self) -> None:
        """The app's client secret has expired (Azure AD answers AADSTS7000222)."""
        self.tenant.expire_client_secret(self.app)

    def force_expiry(self, *, token_key: str = "token") -> None:
        """Expire every access token on the server and in every token stored in Maestro
        (in every workspace): the key ``token_key``, and the renewed tokens the plugin adds
        beside it (``<token_key>.next.<generation>.<bot>``)."""
        self.tenant.expire_access_tokens()
        for space in self.maestro.workspaces.values():
            for items in space.credentials.values():
                for item in items:
                    if (item["key"] == token_key or item["key"].startswith(
                            f"{token_key}.next.")) and item.get("value"):
                        item["value"] = expire_token_text(item["value"])

    def stored_token(self, label: str, key: str = "token",
                     organization: str | None = None) -> str | None:
        """The newest token the plugin keeps in Maestro credential ``label``: key ``key``,
        or the newest renewal the plugin added beside it (a key
        ``<key>.next.<generation renewed>.<bot>``; of several renewals of one generation,
        bots take the first). None: no token."""
        items = self.maestro.workspaces[organization or self.maestro.login].credentials
        values = [(i["key"], i.get("value") or "") for i in items.get(label, [])]
        text = dict(values).get(key)
        while text:
            try:
                at = json.loads(text)["botcity"]["generation"]
            except (ValueError, KeyError, TypeError):
                return text
            renewal = next((v for k, v in values if k.startswith(f"{key}.next.{at}.")), None)
            if renewal is None:
                return text
            text = renewal
        return text or None

    def token_requests(self, grant_type: str | None = None) -> list[Request]:
        """Requests to the identity platform's token endpoint, optionally of one grant."""
        found = self.requests("identity", path_contains="/oauth2/v2.0/token")
        if grant_type:
            found = [r for r in found if r.form().get("grant_type") == grant_type]
        return found
