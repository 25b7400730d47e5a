"""``botcity-ms365``: authorize, inspect and move a bot's Microsoft 365 token.

    botcity-ms365 login   --label ms365 --scopes mail_read_write   # a person signs in once
    botcity-ms365 status  --label ms365 [--check] [--json]         # is the token still good?
    botcity-ms365 logout  --label ms365                            # remove the token
    botcity-ms365 copy    --from file:o365_token.txt --to maestro:ms365
    botcity-ms365 migrate o365_token.txt                           # O365 1.x -> current
    botcity-ms365 doctor  --label ms365 [--json]    # on a Runner: what the plugin assumes
    botcity-ms365 demo | sandbox [ACTION]       # the local sandbox (botcity-ms365-sandbox)

The Maestro connection comes from ``--server/--login`` or ``BOTCITY_SERVER``,
``BOTCITY_LOGIN``, and the key from ``BOTCITY_KEY`` or, at a terminal, a prompt that does
not echo (``--key`` is still accepted, but puts the key in the process list); without one
the token file is used (``--token-path``).
Exit codes: 0 success, 1 a failure the message says how to fix, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import AuthorizationRequired, MS365CredentialsError, StoreError
from .settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: as shells report a command stopped by Ctrl+C
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Arguments that do not fit together (exit 2)."""


def _out(text: str = "") -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- where things are ---------------------------------------------------------------------
#: ``--key``'s warning: other users of the machine see a command's arguments (``ps``).
KEY_VISIBLE = ("--key puts the Maestro key in the process list, where other users of "
               "this machine can read it: set BOTCITY_KEY instead, or leave the key out "
               "at a terminal to type it without echo")


def _ask_key(login: str) -> str | None:
    """The Maestro key typed at a terminal without echo; None when nobody is at one."""
    from . import platform

    if platform.stdin_kind(sys.stdin) != "console":
        return None
    import getpass

    return getpass.getpass(f"Maestro key of {login} (not shown): ").strip() or None


def _maestro(args: argparse.Namespace) -> Any:
    """A logged-in BotMaestroSDK, or None when no Maestro connection was given."""
    from .settings import MaestroConnection

    env = MaestroConnection.from_environ()
    server = args.server or env.server
    login = args.login or env.login
    if args.key:
        _err(f"warning: {KEY_VISIBLE}.")
    key = args.key or env.key
    if not (server or login or key):
        return None
    if server and login and not key:
        key = _ask_key(login)
    if not (server and login and key):
        raise UsageError("give the Maestro server, login and key together: --server and "
                         "--login (or BOTCITY_SERVER, BOTCITY_LOGIN), and the key in "
                         "BOTCITY_KEY (at a terminal, leave it out to be asked for it)")
    from ._maestro import connect

    return connect(server, login, key)


def _store_spec(spec: str, maestro: Any, key: str, *, read_only: bool = False) -> Any:
    """``file:PATH`` or ``maestro:LABEL`` as a token store (``read_only``: one that never
    writes, not even a token kept on this machine)."""
    from ._maestro import MaestroVault
    from .stores import FileTokenStore, MaestroTokenStore

    kind, _, where = spec.partition(":")
    if kind == "file" and where:
        return FileTokenStore(where, read_only=read_only)
    if kind == "maestro" and where:
        if maestro is None:
            raise UsageError(f"{spec} needs a Maestro connection (--server, --login, --key)")
        return MaestroTokenStore(MaestroVault(maestro), where, key, read_only=read_only)
    raise UsageError(f"{spec!r} is not file:PATH or maestro:LABEL")


#: What a command without --label is told when a Maestro connection is given.
LABEL_REQUIRED = ("the argument --label is required with a Maestro connection (--server or "
                  "BOTCITY_SERVER): it names the credential, such as --label ms365")


def _token_store(args: argparse.Namespace, maestro: Any, *, read_only: bool = False) -> Any:
    """The store the options name: the Maestro credential (with a connection) or the file."""
    if maestro is not None and not (args.label or args.token_label):
        raise UsageError(LABEL_REQUIRED)
    spec = (f"maestro:{args.token_label or args.label}" if maestro is not None
            else f"file:{args.token_path or '.'}")
    return _store_spec(spec, maestro, args.token_key, read_only=read_only)


def _plugin(args: argparse.Namespace, maestro: Any, **extra: Any) -> Any:
    from .plugin import MS365CredentialsPlugin

    if maestro is not None and not (args.label or args.token_label):
        raise UsageError(LABEL_REQUIRED)
    return MS365CredentialsPlugin(
        client_id=getattr(args, "client_id", None),
        client_secret=Settings.from_environ().app.client_secret if getattr(
            args, "client_id", None) else None,
        token_path=args.token_path, maestro=maestro, credential_label=args.label,
        token_label=args.token_label, token_key=args.token_key, tenant_id=args.tenant_id,
        **extra)


def _countdown(quiet: bool) -> Callable[[float], None] | None:
    """Show how long the sign-in is still awaited: in place on a terminal, else a line
    every 30 s."""
    if quiet:
        return None
    terminal = sys.stderr.isatty()
    last = [0.0]

    def tick(left: float) -> None:
        now = time.monotonic()
        text = f"waiting for the sign-in: {int(left) // 60}:{int(left) % 60:02d} left"
        if terminal:
            sys.stderr.write(f"\r{text} ")
            sys.stderr.flush()
        elif now - last[0] >= 30:
            last[0] = now
            _err(text)

    return tick


def _human_time(iso: str | None, *, future: bool) -> str:
    if not iso:
        return "unknown"
    seconds = time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
        time.gmtime())
    span = abs(seconds)
    amount = (f"{span / 86400:.0f} days" if span >= 2 * 86400 else
              f"{span / 3600:.0f} h" if span >= 2 * 3600 else f"{span / 60:.0f} min")
    when = ("in " + amount) if seconds > 0 else (amount + " ago")
    if future and seconds <= 0:
        when = f"expired {amount} ago"
    return f"{iso.replace('T', ' ').replace('Z', ' UTC')} ({when})"


# -- commands -----------------------------------------------------------------------------
def _command(args: argparse.Namespace, *extra: str) -> str:
    """This ``login`` command, as a message repeats it (the key never in it)."""
    from .errors import login_command
    from .scopes import resolve_permissions, scope_names

    return login_command(label=args.label, token_label=args.token_label,
                         token_key=args.token_key, token_path=args.token_path or None,
                         scopes=scope_names(resolve_permissions(args.scopes)), extra=extra)


def _app_keys_in_label(args: argparse.Namespace, maestro: Any) -> None:
    """Before a sign-in into Maestro credential ``--label``: it must hold the app's keys, or
    a Runner could not use the token. When it does not (or does not exist), the keys of
    the arguments or this machine's environment are written into it, if the person says
    yes (or passed ``--write-app-keys``); otherwise nothing is written and the command
    stops, saying why."""
    from ._maestro import MaestroVault
    from .app_credentials import AppCredentials, find_app_credentials, from_credential, held_keys
    from .errors import ConfigurationError, told

    vault = MaestroVault(maestro)
    values = vault.read(args.label)
    where = {"label": args.label, "server": vault.server}
    if values is not None:
        if from_credential(values, f"Maestro credential '{args.label}' at {vault.server}",
                           tenant="common", source="Maestro") is not None:
            return
        state = f"has no app keys (it holds {held_keys(values)})"
    else:
        state = "does not exist"
    env = Settings.from_environ().app
    app = find_app_credentials(args.client_id, env.client_secret if args.client_id else None,
                               args.tenant_id, vault=None, label=None, env=env)
    if not isinstance(app, AppCredentials):
        raise ConfigurationError(told("login-needs-app-keys", **where, state=state,
                                      command=_command(args)))
    keys = _app_keys(app, args, env)
    source = ("the arguments and the environment" if app.source == "arguments" else
              "this machine's environment") + " (" + _and([origin for _, _, origin in keys]) + ")"
    if not args.write_app_keys and not _yes(
            f"Maestro credential '{args.label}' at {vault.server} {state}. Write "
            f"{_and([key for key, _, _ in keys])} into it, from {source}, so that Runners can "
            "use it? [y/N]"):
        raise ConfigurationError(told("login-declined-app-keys", **where, state=state,
                                      source=source,
                                      command=_command(args, "--write-app-keys")))
    for key, value, _ in keys:
        vault.write(args.label, key, value)
    _out(f"Wrote {_and([key for key, _, _ in keys])} to Maestro credential '{args.label}', "
         f"from {source}.")


def _app_keys(app: Any, args: argparse.Namespace, env: Any) -> list[tuple[str, str, str]]:
    """(key, value, where it came from) of the app's keys, as a Maestro credential holds
    them: a certificate's PEM text, not its path."""
    from .settings import (
        ENV_CLIENT_CERTIFICATE,
        ENV_CLIENT_CERTIFICATE_PASSWORD,
        ENV_CLIENT_CERTIFICATE_THUMBPRINT,
        ENV_CLIENT_ID,
        ENV_CLIENT_SECRET,
        ENV_TENANT_ID,
    )

    keys = [("client_id", app.client_id, "--client-id" if args.client_id else ENV_CLIENT_ID)]
    if app.certificate is None:
        keys.append(("client_secret", app.client_secret, ENV_CLIENT_SECRET))
    else:
        pem = Path(env.certificate)
        keys.append(("client_certificate", pem.read_text(encoding="utf-8")
                     if pem.is_file() else str(env.certificate), ENV_CLIENT_CERTIFICATE))
        if env.thumbprint:
            keys.append(("client_certificate_thumbprint", env.thumbprint,
                         ENV_CLIENT_CERTIFICATE_THUMBPRINT))
        if env.password:
            keys.append(("client_certificate_password", env.password,
                         ENV_CLIENT_CERTIFICATE_PASSWORD))
    if app.tenant_id not in ("common", "organizations", "consumers"):
        keys.append(("tenant_id", app.tenant_id,
                     "--tenant-id" if args.tenant_id else ENV_TENANT_ID))
    return keys


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _yes(question: str) -> bool:
    """A person's yes to ``question`` (False when nobody can answer: no terminal, or no
    answer within ``MS365_CONSENT_TIMEOUT``)."""
    from . import consent

    if not consent.stdin_is_usable(sys.stdin):
        return False
    _out(question)
    line = consent.read_answer(sys.stdin, Settings.from_environ().consent_timeout)
    return (line or "").strip().lower() in ("y", "yes")


def cmd_login(args: argparse.Namespace) -> int:
    maestro = _maestro(args)
    if maestro is not None and args.label:
        _app_keys_in_label(args, maestro)
    plugin = _plugin(args, maestro)
    plugin.sign_in(args.scopes, consent=args.consent, select_account=args.force,
                   progress=_countdown(args.quiet))
    summary = plugin.token_store.summary()
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    _out(f"Signed in as {summary['account']}.")
    if not args.quiet:
        _out(f"Permissions granted: {', '.join(summary['permissions'])}.")
    _out(f"Token stored in {plugin.token_store.location}.")
    return EXIT_OK


#: What ``status --check`` says for each outcome of the renewed token's save.
_CHECKED = {
    "saved": "the refresh token works; the rotated token was saved",
    "newer kept": "the refresh token works; a newer token was already stored, and kept",
    "kept on this machine": "the refresh token works, but the store failed: the rotated "
                            "token waits on this machine for the next start",
    "in memory only": "the refresh token works, but the rotated token could not be saved "
                      "anywhere",
}


def cmd_status(args: argparse.Namespace) -> int:
    from .scopes import missing_permissions, resolve_permissions

    maestro = _maestro(args)
    store = _token_store(args, maestro, read_only=not args.check)
    vault = getattr(store.persistence, "vault", None)
    if vault is not None and args.label and vault.read(args.label) is None:
        from .app_credentials import no_such_label

        raise no_such_label(args.label, vault.server)
    report: dict[str, Any] = {"store": store.location, "found": store.load_token()}
    problems: list[str] = []
    if not report["found"]:
        from .errors import told

        problems.append(told("no-token", location=store.location, command=_command(args)))
    else:
        if args.check:
            plugin = _plugin(args, maestro)
            try:
                plugin.ms365_account.con.refresh_token()
                report["check"] = _CHECKED.get(
                    plugin.ms365_account.con.lifecycle.outcome,
                    f"the refresh token works; {plugin.ms365_account.con.lifecycle.outcome}")
            except AuthorizationRequired as exc:
                report["check"] = f"rejected by Microsoft ({exc.code or exc.error})"
                problems.append(str(exc))
            store = plugin.token_store
        report.update(store.summary())
        for internal in ("format", "saved_at", "generation"):
            report.pop(internal, None)
        if args.scopes:
            wanted = resolve_permissions(args.scopes)
            report["requested"] = sorted(wanted)
            report["missing"] = sorted(missing_permissions(wanted, report["permissions"]))
            if report["missing"]:
                problems.append("the token lacks " + ", ".join(report["missing"]))
    warnings = _app_credential(args, store, report, problems)
    report["ok"] = not problems
    if args.json:
        _out(json.dumps(report, indent=2))
    else:
        _print_status(report)
    for warning in warnings:
        _err(f"warning: {warning}")
    for problem in problems:
        _err(f"problem: {problem}")
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _app_credential(args: argparse.Namespace, store: Any, report: dict[str, Any],
                    problems: list[str]) -> list[str]:
    """What the app signs in with (from the credential the token store read: no other
    Maestro request), into ``report``; a certificate within 30 days of its expiry is a
    warning, an expired one or a credential that cannot be used a problem."""
    from .app_credentials import find_app_credentials, held_keys
    from .certificates import WARN_DAYS
    from .errors import told

    vault = getattr(getattr(store, "persistence", None), "vault", None)
    warnings = []
    values = vault.read(args.label) if vault is not None and args.label else None
    if values is not None and vault is not None and not any(values.get(key) for key in (
            "client_id", "client_secret", "client_certificate")):
        # a token alone: it works here with the environment's keys, not on a Runner
        warnings.append(told("label-without-app-keys", label=args.label, server=vault.server,
                             keys=held_keys(values)))
        vault = None
    try:
        app = find_app_credentials(getattr(args, "client_id", None), None, args.tenant_id,
                                   vault=vault, label=args.label if vault else None,
                                   env=Settings.from_environ().app)
    except MS365CredentialsError as exc:
        problems.append(f"the app's credential cannot be used: {exc}")
        return warnings
    if isinstance(app, list):
        return warnings  # none anywhere (only the places searched): the token alone is shown
    report["app_credential"] = app.describe()
    days = app.certificate.days_left() if app.certificate else None
    if days is not None and days <= 0:
        problems.append(f"the app's {app.describe()}: it has expired; make a new one, upload "
                        "it to the app and put it in the credential")
    elif days is not None and days <= WARN_DAYS:
        warnings.append(f"the app's {app.describe()} (in {days:.0f} days): make a new one, "
                        "upload it to the app and put it in the credential before then")
    return warnings


def _print_status(report: dict[str, Any]) -> None:
    _out(f"Token:          {report['store']}")
    if not report["found"]:
        _out("                (none)")
        return
    expires = report.get("access_token_expires_on")
    expires_iso = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)) if expires
                   else None)
    _out(f"Account:        {report['account']}")
    _out(f"Permissions:    {', '.join(report['permissions']) or '(none)'}")
    _out(f"Access token:   expires {_human_time(expires_iso, future=True)}")
    if report["has_refresh_token"]:
        _out(f"Refresh token:  last rotated {_human_time(report['refresh_token_rotated_at'], future=False)}")  # noqa: E501
        _out(f"                dies if unused after "
             f"{_human_time(report['refresh_token_unused_until'], future=True)}")
    else:
        _out("Refresh token:  none (a person must sign in again when the access token expires)")
    _out(f"Client:         {report['client']}")
    if "app_credential" in report:
        _out(f"App credential: {report['app_credential']}")
    if "requested" in report:
        covered = "all covered" if not report["missing"] else (
            "missing " + ", ".join(report["missing"]))
        _out(f"Requested:      {', '.join(report['requested'])}: {covered}")
    if "check" in report:
        _out(f"Check:          {report['check']}")


def cmd_logout(args: argparse.Namespace) -> int:
    maestro = _maestro(args)
    store = _token_store(args, maestro)
    if not store.check_token():
        _out(f"No token was stored in {store.location}.")
        return EXIT_OK
    store.delete_token()
    from .stores import MaestroTokenStore

    if isinstance(store, MaestroTokenStore):
        # nothing waits on this machine to be written back
        store.fallback(Settings.from_environ().fallback_dir).discard()
    kept = "; the credential's other keys stay" if maestro is not None else ""
    _out(f"Removed the token from {store.location}{kept}.")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    needs_maestro = "maestro:" in args.source + args.target
    maestro = _maestro(args) if needs_maestro else None
    source = _store_spec(args.source, maestro, args.token_key)
    target = _store_spec(args.target, maestro, args.token_key)
    summary = source.copy_to(target)
    _out(f"Copied the token of {summary['account']} ({', '.join(summary['permissions'])}) "
         f"from {source.location} to {target.location}.")
    vault = getattr(target.persistence, "vault", None)
    values = vault.read(target.label) if vault is not None else None
    if vault is not None and values is not None and not any(
            values.get(key) for key in ("client_id", "client_secret", "client_certificate")):
        from .app_credentials import held_keys
        from .errors import told

        # fine as a token_label of its own; as a bot's credential_label, a Runner fails
        _err("warning: " + told("label-without-app-keys", label=target.label,
                                server=vault.server, keys=held_keys(values)))
    return EXIT_OK


def _file_plugin(args: argparse.Namespace, path: Path) -> Any:
    """The plugin on the token file ``path``, with the app's credentials from ``--label``
    (Maestro), ``--client-id`` or the environment."""
    from .app_credentials import resolve_app_credentials
    from .plugin import MS365CredentialsPlugin

    vault = None
    if args.label:
        from ._maestro import MaestroVault

        vault = MaestroVault(_maestro(args))
    env = Settings.from_environ().app
    app = resolve_app_credentials(
        args.client_id, env.client_secret if args.client_id else None,
        args.tenant_id, vault=vault, label=args.label, env=env)
    return MS365CredentialsPlugin(app.client_id, app.client_secret, token_path=path,
                                  tenant_id=app.tenant_id)


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import _o365
    from .persistence import FileText
    from .scopes import RESERVED, permission_name

    if args.token_label or args.token_path:
        raise UsageError("migrate converts the file it is given, in place: --token-label and "
                         "--token-path do not apply (then: botcity-ms365 copy --from "
                         "file:PATH --to maestro:LABEL)")
    path = Path(args.path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path} does not exist.") from None
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"{path} is not an O365 token file (not JSON).") from None
    if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
        if isinstance(data, dict) and ("RefreshToken" in data or "AccessToken" in data):
            _out(f"{path} is already in the current format; nothing to do.")
            return EXIT_OK
        raise StoreError(f"{path} is not an O365 1.x token file (it has no refresh_token).")
    scope = data.get("scope") or []
    scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
    permissions = frozenset(permission_name(s) for s in scopes) - RESERVED

    backup = path.with_name(path.name + ".1x-backup")
    if backup.exists():
        backup = path.with_name(f"{path.name}.1x-backup-{int(time.time())}")
    FileText(backup).save(path.read_text(encoding="utf-8"))
    plugin = _file_plugin(args, path)
    try:
        username = _o365.redeem_refresh_token(plugin.ms365_account, data["refresh_token"],
                                              permissions)
    except MS365CredentialsError as exc:
        raise type(exc)(f"{exc} {path} is unchanged (a copy is in {backup}).") from None
    store = plugin.token_store
    store.generation = 1
    store.persistence.save(store.serialize())  # over the 1.x file, which it replaces
    summary = store.summary()
    _out(f"Migrated {path} to the current format: {username}, "
         f"{', '.join(summary['permissions'])}. The old file is kept as {backup}.")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor
    from ._maestro import MaestroVault

    maestro = _maestro(args)
    if maestro is None:
        raise UsageError("doctor checks a Maestro credential: give the Maestro server, login "
                         "and key (BOTCITY_SERVER, BOTCITY_LOGIN, BOTCITY_KEY)")
    if not (args.label or args.token_label):
        raise UsageError(LABEL_REQUIRED)
    checks = doctor.run(MaestroVault(maestro), label=args.label,
                        token_label=args.token_label or args.label, token_key=args.token_key,
                        settings=Settings.from_environ())
    ok = not doctor.failed(checks)
    if args.json:
        _out(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        _print_checks(checks)
    return EXIT_OK if ok else EXIT_FAILED


def _print_checks(checks: list[Any]) -> None:
    """One line per check: name, value, verdict, and the advice of a warn or fail."""
    rows = [("CHECK", "VALUE", "VERDICT", "ADVICE")] + [
        (c.name, c.value, c.verdict, c.advice if c.verdict != "ok" else "") for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths,
                                                                  strict=True))
        _out(f"{line}  {row[3]}".rstrip())


#: Subcommands that other distributions add: entry points of this group, each a function
#: that adds its parser to the subcommands (botcity-ms365-sandbox adds demo and sandbox).
COMMANDS_GROUP = "botcity_ms365.commands"
#: What botcity-ms365-sandbox adds: shown, and explained, when it is not installed.
SANDBOX_COMMANDS = {
    "demo": "walk through first authorization, a Runner run and a refresh, against a local "
            "sandbox",
    "sandbox": "run the local Microsoft and Maestro sandbox, or act on a running one",
}
SANDBOX_MISSING = ("botcity-ms365: error: '{command}' comes with botcity-ms365-sandbox, "
                   "which is not installed: pip install botcity-ms365-sandbox (from a clone "
                   "of this repository: pip install -e ./sandbox)")


def _add_installed_commands(commands: Any) -> None:
    """The subcommands of the :data:`COMMANDS_GROUP` entry points, in name order; for each
    of :data:`SANDBOX_COMMANDS` none provides, one that says what to install."""
    from importlib.metadata import entry_points

    added: set[str] = set()
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if entry.name not in added and entry.name not in commands.choices:
            entry.load()(commands)
            added.add(entry.name)
    for name, does in SANDBOX_COMMANDS.items():
        if name not in added:
            # takes any arguments (no option prefix), so any use gets the one line
            missing = commands.add_parser(name, help=f"{does} (needs botcity-ms365-sandbox)",
                                          add_help=False, prefix_chars="\0")
            missing.add_argument("arguments", nargs=argparse.REMAINDER)
            missing.set_defaults(func=_sandbox_missing(name))


def _sandbox_missing(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        _err(SANDBOX_MISSING.format(command=name))
        return EXIT_USAGE
    return run


# -- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("where the token lives")
    group.add_argument("--server", help="Maestro server (or BOTCITY_SERVER)")
    group.add_argument("--login", help="Maestro login (or BOTCITY_LOGIN)")
    group.add_argument("--key", help="Maestro key: visible to other users in the process "
                       "list, so set BOTCITY_KEY instead (at a terminal, leave it out to "
                       "be asked for it without echo)")
    group.add_argument("--label", help="Maestro credential with client_id, client_secret "
                       "(and the token)")
    group.add_argument("--token-label", help="Maestro credential of the token (default: "
                       "--label)")
    group.add_argument("--token-key", default="token", help="key of the token (default: "
                       "%(default)s)")
    group.add_argument("--token-path", default="", help="token file or folder, without "
                       "Maestro (default: ./o365_token.txt)")
    app = argparse.ArgumentParser(add_help=False)
    app_group = app.add_argument_group("the Azure app (without Maestro)")
    app_group.add_argument("--client-id", help="client id (the secret comes from "
                           "MS365_CLIENT_SECRET); default: MS365_CLIENT_ID")
    app_group.add_argument("--tenant-id", help="tenant (default: common or MS365_TENANT_ID)")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true",
                       help="print only the result (for scripts)")

    parser = argparse.ArgumentParser(
        prog="botcity-ms365",
        description="Authorize, inspect and move the Microsoft 365 token of BotCity bots.",
        epilog="Exit codes: 0 success, 1 a failure the message explains, 2 usage error.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser(
        "login", parents=[connection, app, quiet], help="sign in once and store the token",
        description="A person signs in to Microsoft 365 and consents; the token is stored "
        "in Maestro (or the token file) for every Runner. It always signs in, even when a "
        "token is stored (so it repairs one Microsoft revoked), asking for --scopes plus "
        "the permissions the stored token has. A --label credential without the app's keys "
        "(or one that does not exist) gets them from this machine's, if you say yes: a "
        "token alone there would be of no use to a Runner.")
    login.add_argument("--scopes", nargs="+", default=["basic"], metavar="SCOPE",
                       help="Scopes names (mail_read_write, files_read_write_all, ...) or "
                       "Graph permissions (Calendars.ReadWrite); default: basic")
    login.add_argument("--consent", choices=["console", "browser", "device_code"],
                       default="console", help="how to sign in (default: %(default)s)")
    login.add_argument("--force", action="store_true",
                       help="let the person choose the account (Microsoft's account picker): "
                       "to sign in another account, which replaces the stored one")
    login.add_argument("--write-app-keys", action="store_true",
                       help="when the --label credential lacks the app's keys (or does not "
                       "exist), write them from --client-id or MS365_CLIENT_ID, "
                       "MS365_CLIENT_SECRET (or MS365_CLIENT_CERTIFICATE) and MS365_TENANT_ID "
                       "without asking")
    login.set_defaults(func=cmd_login)

    status = commands.add_parser(
        "status", parents=[connection, app], help="is the stored token still good, and for what",
        description="Show the stored token (account, permissions, expiry, rotation) without "
        "contacting Microsoft; --check refreshes once to prove it still works. Exit 1 when "
        "the token is missing, dead or lacks --scopes.")
    status.add_argument("--scopes", nargs="+", metavar="SCOPE",
                        help="permissions the bot needs: are they covered?")
    status.add_argument("--check", action="store_true",
                        help="refresh once (writes the rotated token back)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    logout = commands.add_parser(
        "logout", parents=[connection], help="remove the stored token",
        description="Remove the token (only its key: client_id and client_secret stay).")
    logout.set_defaults(func=cmd_logout)

    copy = commands.add_parser(
        "copy", parents=[connection], help="copy a token between stores",
        description="Copy a token, checked and unchanged, for example a token authorized "
        "on your machine to the Maestro credential the Runners read.")
    copy.add_argument("--from", dest="source", required=True, metavar="file:PATH|maestro:LABEL",
                      help="where the token is now")
    copy.add_argument("--to", dest="target", required=True, metavar="file:PATH|maestro:LABEL",
                      help="where it goes (a Maestro credential's other keys stay)")
    copy.set_defaults(func=cmd_copy)

    migrate = commands.add_parser(
        "migrate", parents=[connection, app], help="convert an O365 1.x token file",
        description="Convert an O365 1.x token file ({access_token, refresh_token, ...}), "
        "which O365 2.1 cannot load, to the current format by redeeming its refresh token, "
        "in place; a backup is written first. Only that file changes: with --label, the "
        "app's client_id and client_secret come from that Maestro credential, and its "
        "token is left alone (copy the converted file there with 'botcity-ms365 copy').")
    migrate.add_argument("path", help="the O365 1.x token file")
    migrate.set_defaults(func=cmd_migrate)

    doctor = commands.add_parser(
        "doctor", parents=[connection], help="check what the plugin assumes about Maestro "
        "and Microsoft, on a Runner",
        description="Check, from this machine, what the plugin's shared token assumes: "
        "Maestro's version (3.0.0 or newer), its round trip, that this login may write the "
        "credential and that a write is visible to the next read, the clock against "
        "Microsoft's, the identity platform's discovery and token endpoint (no token is "
        "issued), the app's certificate expiry, and the stored token (not refreshed). It "
        "writes one key of the credential, 'doctor-probe', and removes it again; the other "
        "keys stay as they were. Exit 1 when a check failed.")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=cmd_doctor)

    _add_installed_commands(commands)
    return parser


def _printable_everywhere() -> None:
    """A Windows console redirected to a file or an IDE's pipe writes in the ANSI code page
    (cp1252, ...): an account name it cannot encode must not crash the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


def main(argv: list[str] | None = None) -> int:
    _printable_everywhere()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import subprocess

    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        _err(f"botcity-ms365: error: {exc}")
        return EXIT_USAGE
    except MS365CredentialsError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except OSError as exc:  # a file or folder the command cannot read or write
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _err(f"error: {exc.strerror or exc}{where}. Check the path and its permissions.")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except subprocess.TimeoutExpired as exc:
        _err(f"error: the bot did not finish within {exc.timeout} s")
        return EXIT_FAILED
