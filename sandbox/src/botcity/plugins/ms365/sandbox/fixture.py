"""Test your own Microsoft 365 bot offline: what the ``ms365_sandbox`` pytest fixture yields.

A Microsoft identity platform, Microsoft Graph (mail, OneDrive, Excel) and BotCity Maestro
run on 127.0.0.1 for one test. The test authorizes the account once (no person), runs the
bot as a Runner runs it, and asserts on what the bot left in the mailbox, the drive and
Maestro::

    import subprocess, sys

    def test_bot_sends_its_report(ms365_sandbox):
        ms365_sandbox.authorize("ms365", scopes=["basic", "mail_send"])
        argv = ms365_sandbox.runner_argv(parameters={"ms365_credential_label": "ms365"})
        subprocess.run([sys.executable, "bot.py", *argv], env=ms365_sandbox.env,
                       check=True, timeout=120)
        assert ms365_sandbox.task(argv[1])["finish_status"] == "SUCCESS"
        assert ms365_sandbox.messages("sentitems")[0]["subject"].startswith("Report")

This class is public API (semantic versioning). Everything it builds on
(:class:`~botcity.plugins.ms365.sandbox.Sandbox`) is reachable as
:attr:`MS365Sandbox.sandbox` for what it does not cover, without that promise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .sandbox import Sandbox, expire_token_text

__all__ = ["MS365Sandbox"]


class MS365Sandbox:
    """The three sandbox servers of one test, and what a test does with them.

    Attributes:
        env: environment variables that point a bot process (this plugin, O365,
            botcity-maestro-sdk) at the sandbox: ``REQUESTS_CA_BUNDLE`` and
            ``SSL_CERT_FILE`` (the sandbox CA plus the usual public ones, for requests and
            for httpx, Microsoft's Graph SDK's), ``MS365_AUTHORITY_HOST``, ``MS365_GRAPH_URL``,
            ``MS365_TENANT_ID``, ``MS365_CLIENT_ID``/``MS365_CLIENT_SECRET`` (the
            local-file path), ``BOTCITY_SERVER``/``BOTCITY_LOGIN``/``BOTCITY_KEY``, and
            ``MS365_FALLBACK_DIR`` (a folder of the test's own). Pass
            ``{**os.environ, **env}`` to a subprocess; the test's own process already has
            them set by the fixture.
        client_id, client_secret, tenant_id: the sandbox Azure app's keys and tenant.
        user: the address of the account that signs in.
        maestro_server, maestro_login, maestro_key: the sandbox Maestro's connection.
    """

    def __init__(self, sandbox: Sandbox, folder: Path) -> None:
        self.sandbox = sandbox
        self._files: list[Path] = []
        self.client_id: str = sandbox.app.client_id
        self.client_secret: str = sandbox.app.secret
        self.tenant_id: str = sandbox.tenant.tenant_id
        self.user: str = sandbox.tenant.user.upn
        self.maestro_server: str = sandbox.maestro_url
        self.maestro_login: str = sandbox.maestro.login
        self.maestro_key: str = sandbox.maestro.key
        self.env: dict[str, str] = {**sandbox.bot_env(),
                                     "MS365_FALLBACK_DIR": str(folder / "fallback")}

    def __repr__(self) -> str:
        return (f"MS365Sandbox(user={self.user!r}, maestro_server={self.maestro_server!r}, "
                f"client_id={self.client_id!r})")

    # -- the first authorization, done for the test ------------------------------------
    def consent(self, authorize_url: str) -> str:
        """What a person does in the browser: open ``authorize_url``, sign in, accept;
        returns the address the browser lands on. Usable as ``consent=`` of the plugin."""
        return self.sandbox.consent_redirect(authorize_url)

    def authorize(self, label: str = "ms365", scopes: Iterable[Any] | None = None) -> None:
        """The first consent, as a person does it with ``botcity-ms365 login``: the token is
        stored in the sandbox Maestro credential ``label``, which is created with the app's
        ``client_id``, ``client_secret`` and ``tenant_id`` when it does not exist.
        ``scopes`` are what your bot asks for (default: ``basic``); a bot that asks for
        more than was consented fails on a Runner, in the sandbox as in production."""
        self.sandbox.authorize(label, list(scopes or ["basic"]))

    def authorize_file(self, path: str | os.PathLike[str],
                       scopes: Iterable[Any] | None = None) -> Path:
        """The same for a bot that runs without Maestro: the token is written to ``path``
        (a file, or a folder that gets ``o365_token.txt``); returns the file's path."""
        from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

        plugin = MS365CredentialsPlugin(self.client_id, self.client_secret, token_path=path,
                                        tenant_id=self.tenant_id)
        plugin.sign_in(list(scopes or ["basic"]), consent=self.consent)
        written = Path(plugin.token_store.path)
        self._files.append(written)
        return written

    # -- running the bot as a Runner does ------------------------------------------------
    def runner_argv(self, task_id: int | str | None = None,
                    parameters: Mapping[str, Any] | None = None) -> list[str]:
        """``[server, task_id, token, organization]``, what a Runner passes to ``bot.py``.
        Without ``task_id`` a task (activity ``ms365-bot``) is created with ``parameters``;
        with one, that task (created by your test or a bot) is run."""
        maestro = self.sandbox.maestro
        if task_id is None:
            number, token = maestro.start_task("ms365-bot", dict(parameters or {}))
        else:
            number = int(task_id)
            task = maestro.tasks.get(number)
            if task is None:
                raise KeyError(f"the sandbox Maestro has no task {task_id}")
            task.parameters.update(parameters or {})
            task.state = "RUNNING"
            token = maestro.runner_token()
        return maestro.runner_argv(number, token)

    def task(self, task_id: int | str) -> dict[str, Any]:
        """A task's ``state`` ("START", "RUNNING", "FINISHED"), ``finish_status``
        ("SUCCESS", "FAILED", "PARTIALLY_COMPLETED" or None), ``finish_message``,
        ``parameters`` and item counts."""
        task = self.sandbox.maestro.tasks.get(int(task_id))
        if task is None:
            raise KeyError(f"the sandbox Maestro has no task {task_id}")
        return {"id": task.id, "state": task.state, "finish_status": task.finish_status,
                "finish_message": task.finish_message, "parameters": dict(task.parameters),
                "total_items": task.items.get("totalItems"),
                "processed_items": task.items.get("processedItems"),
                "failed_items": task.items.get("failedItems")}

    # -- what the bot finds, and what it left behind ---------------------------------------
    def deliver_mail(self, subject: str, body: str = "", *, folder: str = "inbox",
                     sender: str = "someone@fabrikam.com", sender_name: str = "",
                     to: Iterable[str] | None = None, html: bool = False,
                     attachments: Mapping[str, bytes] | None = None,
                     is_read: bool = False) -> str:
        """Put a message in the account's mailbox before the bot runs, as if ``sender``
        had sent it, and return its id. ``folder``: a well-known folder (``"inbox"``,
        ``"junkemail"``, ``"archive"``, ``"deleteditems"``, ``"drafts"``,
        ``"sentitems"``) or a folder of your own by its path (``"Invoices"``,
        ``"Inbox/Invoices"``), made when missing; ``body``: text, or HTML with
        ``html=True``; ``attachments``: file name -> content; ``is_read``: the read
        flag. The bot reads it through Graph (O365's mailbox, the Outlook plugin)."""
        return self.sandbox.graph.deliver_mail(
            subject, body, folder=folder, sender=sender, sender_name=sender_name, to=to,
            html=html, attachments=attachments, is_read=is_read)

    def messages(self, folder: str = "inbox") -> list[dict[str, Any]]:
        """The messages in a folder of the account's mailbox (as :meth:`deliver_mail`
        names them: ``"inbox"``, ``"sentitems"``, ``"Inbox/Invoices"``, ...), oldest
        first, as Graph returns them (``subject``, ``body``, ``from``, ``isRead``,
        ``hasAttachments``, ``toRecipients``, ...). A folder that does not exist is a
        ValueError naming the folders there are."""
        return self.sandbox.graph.mail(folder)

    def attachments(self, message_id: str) -> dict[str, bytes]:
        """The files attached to a message: name -> content."""
        import base64

        return {str(a["name"]): base64.b64decode(a["contentBytes"])
                for a in self.sandbox.graph.attachments.get(message_id, [])}

    def drive_file(self, path: str) -> bytes | None:
        """The content of ``path`` in the account's OneDrive ("/Reports/july.xlsx"), None
        when there is no such file."""
        return self.sandbox.graph.drive_file(path)

    def put_drive_file(self, path: str, data: bytes) -> None:
        """Put a file in the account's OneDrive before the bot runs (folders are made)."""
        self.sandbox.graph.put_drive_file(path, data)

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts sent to Maestro: ``title``, ``message``, ``type``, ``taskId``."""
        return [dict(alert) for alert in self.sandbox.maestro.alerts]

    def credential(self, label: str) -> dict[str, str]:
        """The keys of the sandbox Maestro credential ``label`` (empty: no such label)."""
        items = self.sandbox.maestro.credentials.get(label, [])
        return {str(item["key"]): str(item["value"]) for item in items}

    # -- faults -------------------------------------------------------------------------
    def expire_access_tokens(self) -> None:
        """Every access token has expired, on the server and in every stored token (Maestro
        and the files of :meth:`authorize_file`): the bot's next start renews."""
        self.sandbox.force_expiry()
        for path in self._files:
            if path.is_file():
                path.write_text(expire_token_text(path.read_text()))

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token is revoked (by an administrator, a password reset): renewing
        fails with ``invalid_grant`` until a person signs in again."""
        self.sandbox.tenant.kill_refresh_tokens("revoked")

    def expire_client_secret(self) -> None:
        """The app's client secret has expired (AADSTS7000222)."""
        self.sandbox.expire_client_secret()

    # -- critical events (continuous access evaluation) ----------------------------------
    def revoke_sessions(self) -> None:
        """An administrator revokes the account's sessions: renewing fails (AADSTS50173)
        until a person signs in again, and Graph refuses the day-long tokens of clients
        that declare continuous access evaluation at once (a claims challenge); other
        access tokens work until they expire."""
        self.sandbox.tenant.revoke_sessions()

    def change_password(self) -> None:
        """The account's password is changed: as :meth:`revoke_sessions` (Microsoft answers
        both with AADSTS50173)."""
        self.sandbox.tenant.change_password()

    def disable_account(self) -> None:
        """An administrator disables the account: renewing and signing in fail
        (AADSTS50057), and Graph refuses the continuous access evaluation tokens at once."""
        self.sandbox.tenant.disable_account()

    def enable_account(self) -> None:
        """The account is enabled again (after :meth:`disable_account`)."""
        self.sandbox.tenant.enable_account()

    def fail_ip_policy(self) -> None:
        """The Runner's address leaves the range a location policy requires: renewing fails
        (AADSTS53003), and Graph refuses the continuous access evaluation tokens, until
        :meth:`pass_ip_policy`."""
        self.sandbox.tenant.fail_ip_policy()

    def pass_ip_policy(self) -> None:
        """The Runner's address is in range again: a renewal (with Graph's challenge)
        works."""
        self.sandbox.tenant.pass_ip_policy()

    def fail_maestro(self, times: int = 1, status: int = 500) -> None:
        """The next ``times`` requests to Maestro get ``status`` (0: the connection
        drops)."""
        self.sandbox.fail_maestro(times, status)

    # -- a less instant Maestro (for a network's distance: the ms365_sandbox marker) ------
    def set_maestro_latency(self, read: tuple[float, float] | None,
                            write: tuple[float, float] | None = None) -> None:
        """Each Maestro request waits a time drawn in ``read`` (GET) or ``write`` (the
        others; default ``read``), in seconds, before it is handled: a write takes effect
        that much later. ``None``: at once."""
        self.sandbox.maestro.set_latency(read, write)

    def delay_maestro_visibility(self, seconds: float) -> None:
        """A credential write to Maestro is answered at once, but reads return the old
        value for ``seconds`` more (0: at once)."""
        self.sandbox.maestro.visibility_delay = float(seconds)

    def expire_maestro_tokens(self, after: float | None = None) -> None:
        """Maestro's login and Runner tokens are refused (401): ``after`` seconds after
        they were issued, or, without ``after``, every one issued so far from now on."""
        if after is None:
            self.sandbox.maestro.expire_tokens()
        else:
            self.sandbox.maestro.token_lifetime = float(after)
