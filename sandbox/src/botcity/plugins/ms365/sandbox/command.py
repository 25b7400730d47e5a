"""``botcity-ms365 sandbox``: the sandbox for a person at a terminal.

``serve`` runs the three servers until Ctrl+C, SIGTERM (or ``--minutes``), and then
removes its folder (its TLS key among the files) and exits as shells count a signal
(130, 143); it prints what a bot needs
(URLs, the app's keys, the exports for bash and PowerShell, how to sign in), and writes a
state file (readable by its user only) that the other subcommands, run from a second
terminal, read to reach it: ``consent URL`` (the person's sign-in, done for a terminal),
``task ID``, the faults ``expire-tokens``, ``revoke-tokens``, ``expire-secret`` and
``fail-maestro``, and the critical events of continuous access evaluation
(``revoke-sessions``, ``change-password``, ``disable-account``, ``enable-account``,
``fail-ip-policy``, ``pass-ip-policy``). Faults go through a small admin endpoint on
127.0.0.1 that answers only requests carrying the state file's admin key.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from botcity.plugins.ms365.credentials.platform import user_data_dir

from ._http import Reply, Request, Route, Service
from .sandbox import Sandbox, accept_sign_in

#: Where the running sandbox says how to reach it (default: the plugin's data folder).
ENV_STATE = "MS365_SANDBOX_STATE"
LABEL = "ms365"
#: the scopes ``--authorize`` consents to: what bot_example/bot.py and most report bots use
AUTHORIZE_SCOPES = ["basic", "mail_send", "mail_read_write", "files_read_write_all"]


class SandboxCommandError(Exception):
    """A subcommand cannot reach a running sandbox (the CLI prints it)."""


def state_path() -> Path:
    return Path(os.environ.get(ENV_STATE) or user_data_dir() / "sandbox.json")


class AdminService(Service):
    """Faults and task states for the subcommands of a second terminal."""

    name = "admin"

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.key = "sbxadmin_" + secrets.token_urlsafe(24)
        super().__init__(sandbox.requests)

    def routes(self) -> list[tuple[str, str, Route]]:
        tenant = self.sandbox.tenant
        return [
            ("POST", r"/expire-tokens", self._do(self.sandbox.force_expiry)),
            ("POST", r"/revoke-tokens", self._do(lambda: tenant.kill_refresh_tokens())),
            ("POST", r"/expire-secret", self._do(self.sandbox.expire_client_secret)),
            ("POST", r"/revoke-sessions", self._do(tenant.revoke_sessions)),
            ("POST", r"/change-password", self._do(tenant.change_password)),
            ("POST", r"/disable-account", self._do(tenant.disable_account)),
            ("POST", r"/enable-account", self._do(tenant.enable_account)),
            ("POST", r"/fail-ip-policy", self._do(tenant.fail_ip_policy)),
            ("POST", r"/pass-ip-policy", self._do(tenant.pass_ip_policy)),
            ("POST", r"/fail-maestro", self._guard(self._fail_maestro)),
            ("GET", r"/task/(?P<task_id>\d+)", self._guard(self._task)),
        ]

    def _guard(self, function: Route) -> Route:
        def wrapper(request: Request, **kwargs: str) -> Reply:
            if not secrets.compare_digest(request.headers.get("x-sandbox-admin", ""),
                                          self.key):
                return Reply.json({"message": "wrong admin key"}, 403)
            return function(request, **kwargs)
        return wrapper

    def _do(self, action: Callable[[], Any]) -> Route:
        def run(request: Request) -> Reply:
            action()
            return Reply.json({"done": True})
        return self._guard(run)

    def _fail_maestro(self, request: Request) -> Reply:
        body = request.json() or {}
        self.sandbox.fail_maestro(int(body.get("times", 1)), int(body.get("status", 500)))
        return Reply.json({"done": True})

    def _task(self, request: Request, task_id: str) -> Reply:
        task = self.sandbox.maestro.tasks.get(int(task_id))
        if task is None:
            return Reply.json({"message": f"no task {task_id}"}, 404)
        return Reply.json(task.to_json())


# -- the server ------------------------------------------------------------------------------
#: The signals that stop ``serve`` cleanly (a terminal closed sends SIGHUP).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Stopped(Exception):
    """A signal asked the sandbox to stop: ``code`` is the exit code shells give it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.code = 128 + signum


def serve(*, minutes: float, task: bool, authorize: bool,
          out: Callable[[str], None], stop: threading.Event | None = None,
          options: Mapping[str, Any] | None = None) -> int:
    """Run the sandbox (``Sandbox(**options)``) until ``stop`` is set, ``minutes`` pass
    (exit code 0), Ctrl+C (130) or SIGTERM (143); whichever it is, the servers stop and
    the sandbox's folder and state file are removed first. Returns the exit code."""
    fired: list[int] = []

    def stopped(signum: int, frame: object) -> None:
        if not fired:  # the first one stops it; the others wait for the clean-up
            fired.append(signum)
            raise Stopped(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {number: signal.signal(number, stopped) for number in STOP_SIGNALS}
    try:
        _serve(minutes=minutes, task=task, authorize=authorize, out=out, stop=stop,
               options=dict(options or {}))
    except Stopped as exc:  # how a person stops it, at any moment: a clean stop
        return exc.code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def _serve(*, minutes: float, task: bool, authorize: bool,
           out: Callable[[str], None], stop: threading.Event | None,
           options: dict[str, Any]) -> None:
    path = state_path()
    with Sandbox(**options) as sandbox:
        sandbox.tenant.consent = "ask"  # a person sees an Accept button
        sandbox.put_app_credentials(LABEL)
        admin = AdminService(sandbox)
        admin.start()
        try:
            _write_state(path, sandbox, admin)
            if authorize:
                sandbox.authorize(LABEL, AUTHORIZE_SCOPES)
            for line in _instructions(sandbox, authorize):
                out(line)
            for line in _realism(sandbox):
                out(line)
            if task:
                task_id, token = sandbox.maestro.start_task(
                    "ms365-bot", {"ms365_credential_label": LABEL})
                argv = sandbox.maestro.runner_argv(task_id, token)
                out("")
                out(f"A Runner task {task_id} was created. In your bot's folder, with the "
                    "exports above, run:")
                out(f"  python bot.py {' '.join(argv)}")
            out("")
            out(f"Serving until Ctrl+C (at most {minutes:g} minutes).")
            _wait(minutes * 60, stop or threading.Event())
        finally:
            admin.stop()
            path.unlink(missing_ok=True)


def _wait(seconds: float, stop: threading.Event) -> None:
    """Until ``stop``, Ctrl+C or ``seconds``. In one-second waits: on Windows a long
    ``Event.wait`` does not see Ctrl+C until it returns."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        stop.wait(min(1.0, left))


def _write_state(path: Path, sandbox: Sandbox, admin: AdminService) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "identity": sandbox.authority_host,
             "graph": sandbox.graph_url, "maestro": sandbox.maestro_url,
             "ca_file": sandbox.ca_file, "admin": admin.url, "admin_key": admin.key}
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(state, file)


def _instructions(sandbox: Sandbox, authorized: bool) -> list[str]:
    env = sandbox.bot_env()
    authorize_page = f"{sandbox.authority_host}/{sandbox.tenant.tenant_id}/oauth2/v2.0/authorize"
    token = ("holds a token already (--authorize: " + ", ".join(AUTHORIZE_SCOPES) + ")"
             if authorized else "has no token yet: the first sign-in stores it")
    lines = [
        "BotCity Microsoft 365 sandbox (throwaway values, nothing leaves this machine)",
        "",
        f"  Microsoft identity platform  {sandbox.authority_host}",
        f"  Microsoft Graph              {sandbox.graph_url}",
        f"  BotCity Maestro              {sandbox.maestro_url}",
        f"  account                      {sandbox.tenant.user.upn}",
        f"  app client id                {sandbox.app.client_id}",
        f"  app client secret            {sandbox.app.secret}",
        f"  Maestro login / key          {sandbox.maestro.login} / {sandbox.maestro.key}",
        f"  Maestro credential '{LABEL}'    client_id, client_secret, tenant_id; {token}",
        "",
        "Point a bot, or botcity-ms365, at it. bash:",
        *(f"  export {name}={value}" for name, value in env.items()),
        "PowerShell:",
        *(f"  $env:{name} = \"{value}\"" for name, value in env.items()),
        "",
        "Signing in: the plugin prints an address on the sandbox's identity platform "
        f"({authorize_page}?...).",
        "  In a browser: open it, click Accept, and paste the address you land on. The "
        "browser warns",
        f"  about the certificate: the sandbox's CA is {sandbox.ca_file} (trust it, or "
        "proceed for 127.0.0.1).",
        "  In a terminal: botcity-ms365 sandbox consent 'ADDRESS' prints the address to "
        "paste.",
        "",
        "From another terminal: botcity-ms365 sandbox expire-tokens | revoke-tokens | "
        "expire-secret |",
        "  fail-maestro [--times N] [--status 500] | task ID",
        "  and the critical events: revoke-sessions | change-password | disable-account | "
        "enable-account |",
        "  fail-ip-policy | pass-ip-policy",
    ]
    return lines


def _realism(sandbox: Sandbox) -> list[str]:
    """What makes this sandbox less instant than loopback (nothing when nothing does)."""
    maestro, said = sandbox.maestro, []
    for name, seconds in sandbox.round_trip.items():
        if seconds:
            said.append(f"  {name}: {seconds * 1000:g} ms round trip (through a proxy)")
    for label, span in (("reads", maestro.read_latency),
                        ("writes", maestro.write_latency or maestro.read_latency)):
        if span:
            said.append(f"  Maestro {label}: {span[0]:g}-{span[1]:g} s each")
    if maestro.visibility_delay:
        said.append(f"  Maestro credential writes: seen by reads {maestro.visibility_delay:g} s "
                    "later")
    if maestro.token_lifetime is not None:
        said.append(f"  Maestro tokens: refused {maestro.token_lifetime:g} s after issue")
    if not sandbox.tenant.cae_enabled:
        said.append("  continuous access evaluation: off (hour-long tokens for every client)")
    return ["", "At a distance:", *said] if said else []


# -- the subcommands of a second terminal -----------------------------------------------------
def _state() -> dict[str, Any]:
    path = state_path()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SandboxCommandError(
            f"no sandbox is running ({path} does not exist): start one with "
            "`botcity-ms365 sandbox` in another terminal.") from None
    except (OSError, ValueError) as exc:
        raise SandboxCommandError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict) or "admin" not in state:
        raise SandboxCommandError(f"{path} is not a sandbox's state file; remove it.")
    return state


def _admin(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    state = _state()
    try:
        response = requests.request(method, state["admin"] + path, json=body, timeout=10,
                                    headers={"x-sandbox-admin": state["admin_key"]})
    except requests.RequestException:
        raise SandboxCommandError(
            "the sandbox does not answer (it was stopped?): start one with "
            "`botcity-ms365 sandbox`.") from None
    if not response.ok:
        raise SandboxCommandError(response.json().get("message", f"HTTP {response.status_code}"))
    return response.json()


def fault(name: str, **body: Any) -> None:
    _admin("POST", f"/{name}", body)


def task_state(task_id: int) -> dict[str, Any]:
    result: dict[str, Any] = _admin("GET", f"/task/{task_id}")
    return result


def consent(url: str) -> str:
    """The person's part for a terminal: sign in at ``url`` and accept; return the address
    the browser would land on."""
    state = _state()
    if not url.startswith(state["identity"] + "/"):
        raise SandboxCommandError(
            f"that is not an address of this sandbox's identity platform ({state['identity']}"
            "): paste the whole address the bot printed, in quotes.")
    try:
        return accept_sign_in(url, state["ca_file"])
    except requests.RequestException:
        raise SandboxCommandError("the sandbox does not answer (it was stopped?).") from None
    except RuntimeError as exc:
        raise SandboxCommandError(str(exc)) from None

