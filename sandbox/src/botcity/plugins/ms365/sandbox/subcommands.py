"""``botcity-ms365 demo`` and ``botcity-ms365 sandbox``: the subcommands this distribution
adds to the plugin's command. Each is an entry point of the group ``botcity_ms365.commands``
(see ``pyproject.toml``): a function that adds its parser to the command's subcommands,
with the function that runs it as ``func`` (it returns the exit code). The plugin finds
them with ``importlib.metadata``; it imports nothing of this package.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1

#: the sandbox's fault subcommands: what each one does (--help), and what it did (printed)
SANDBOX_FAULTS = {
    "expire-tokens": ("expire every access token (on the server and in Maestro)",
                      "Every access token has expired (on the server and in Maestro)."),
    "revoke-tokens": ("revoke every refresh token (renewing fails until someone signs in)",
                      "Every refresh token is revoked: renewing fails until someone signs in."),
    "expire-secret": ("expire the app's client secret (AADSTS7000222)",
                      "The app's client secret has expired (AADSTS7000222)."),
    "revoke-sessions": ("revoke the account's sessions (AADSTS50173; Graph challenges "
                        "day-long tokens)",
                        "The account's sessions are revoked: renewing fails (AADSTS50173) "
                        "until someone signs in, and Graph refuses day-long (CAE) tokens "
                        "with a claims challenge."),
    "change-password": ("change the account's password (as revoke-sessions)",
                        "The account's password changed: renewing fails (AADSTS50173) until "
                        "someone signs in, and Graph refuses day-long (CAE) tokens with a "
                        "claims challenge."),
    "disable-account": ("disable the account (AADSTS50057; Graph challenges day-long "
                        "tokens)",
                        "The account is disabled: renewing and signing in fail (AADSTS50057), "
                        "and Graph refuses day-long (CAE) tokens with a claims challenge."),
    "enable-account": ("enable the account again",
                       "The account is enabled again."),
    "fail-ip-policy": ("the Runner's address leaves a location policy's range "
                       "(AADSTS53003; Graph challenges day-long tokens)",
                       "The Runner's address is out of the location policy's range: "
                       "renewing fails (AADSTS53003), and Graph refuses day-long (CAE) "
                       "tokens with a claims challenge, until pass-ip-policy."),
    "pass-ip-policy": ("the Runner's address is in the location policy's range again",
                       "The Runner's address is in range again: a renewal with Graph's "
                       "challenge works."),
}


def seconds_range(text: str) -> tuple[float, float]:
    """``LOW-HIGH`` (``0.05-0.3``) or one number (``0.1``: always that), in seconds."""
    low, _, high = text.partition("-")
    try:
        span = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds as LOW-HIGH (such as 0.05-0.3) or one number, not {text!r}"
        ) from None
    if not 0 <= span[0] <= span[1] <= 60:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH <= 60, not {text!r}")
    return span


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


def sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Sandbox(...)`` keyword arguments of ``botcity-ms365 sandbox``'s options."""
    options: dict[str, Any] = {}
    trips = {"maestro": args.maestro_rtt, "microsoft": args.microsoft_rtt}
    if any(trips.values()):
        options["round_trip"] = {k: v for k, v in trips.items() if v}
    if getattr(args, "no_cae", False):
        options["cae"] = False
    for option, name in (("latency", "maestro_latency"),
                         ("write_latency", "maestro_write_latency"),
                         ("visible_after", "maestro_visibility_delay"),
                         ("token_lifetime", "maestro_token_lifetime")):
        if getattr(args, option) is not None:
            options[name] = getattr(args, option)
    return options


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# -- botcity-ms365 demo ---------------------------------------------------------------------
def add_demo(commands: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to ``commands`` (the ``add_subparsers()`` of ``botcity-ms365``)."""
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo", help="walk through first authorization, a Runner run and a refresh, "
        "against a local sandbox",
        description="Start a local Microsoft identity platform, Graph and Maestro; "
        "authorize once; run the example bot as a Runner does; expire the token and "
        "run it again.")
    demo.add_argument("--bot", default="bot_example/bot.py",
                      help="the bot to run (default: %(default)s)")
    demo.add_argument("--timeout", type=float, default=120.0,
                      help="seconds a bot run may take (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)
    return demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.bot, args.timeout)


# -- botcity-ms365 sandbox ------------------------------------------------------------------
def add_sandbox(commands: Any) -> argparse.ArgumentParser:
    """Add ``sandbox`` and its actions to ``commands``."""
    box: argparse.ArgumentParser = commands.add_parser(
        "sandbox", help="run the local Microsoft and Maestro sandbox, or act on a running one",
        description="Without a subcommand: run the sandbox servers until Ctrl+C and print "
        "how to point a bot at them. The subcommands act on that running sandbox from "
        "another terminal.")
    box.add_argument("--minutes", type=float, default=480.0,
                     help="stop after this many minutes (default: %(default)s)")
    box.add_argument("--task", action="store_true",
                     help="create a Runner task and print the `python bot.py ...` line")
    box.add_argument("--authorize", action="store_true",
                     help="store a consented token in the Maestro credential at start, as "
                     "if a person had signed in")
    far = box.add_argument_group("a Maestro and a Microsoft as far and slow as real ones")
    far.add_argument("--maestro-rtt", type=_seconds, default=0.0, metavar="SECONDS",
                     help="network round trip to Maestro, through a delaying proxy")
    far.add_argument("--microsoft-rtt", type=_seconds, default=0.0, metavar="SECONDS",
                     help="the same to the identity platform and Graph")
    far.add_argument("--latency", type=seconds_range, metavar="LOW-HIGH",
                     help="seconds Maestro takes for each request, drawn in this range "
                     "(such as 0.05-0.3)")
    far.add_argument("--write-latency", type=seconds_range, metavar="LOW-HIGH",
                     help="the same for writes, waited before they take effect "
                     "(default: --latency)")
    far.add_argument("--visible-after", type=_seconds, metavar="SECONDS",
                     help="a credential write is seen by reads only this much later")
    far.add_argument("--token-lifetime", type=_seconds, metavar="SECONDS",
                     help="Maestro refuses login and Runner tokens this much after they "
                     "were issued (401)")
    box.add_argument("--no-cae", action="store_true",
                     help="the tenant without continuous access evaluation: 60-90 minute "
                     "tokens for every client, and no claims challenge from Graph")
    actions = box.add_subparsers(dest="action", metavar="ACTION")
    consent = actions.add_parser(
        "consent", help="sign in and accept at a sign-in address; print the address to paste")
    consent.add_argument("url", help="the sign-in address the bot printed (quote it)")
    task = actions.add_parser("task", help="show a task's state and finish status")
    task.add_argument("task_id", type=int, help="the task's id (printed by --task)")
    for name, (does, _) in SANDBOX_FAULTS.items():
        actions.add_parser(name, help=does)
    fail = actions.add_parser("fail-maestro", help="the next Maestro requests fail")
    fail.add_argument("--times", type=int, default=1, help="how many (default: 1)")
    fail.add_argument("--status", type=int, default=500,
                      help="the HTTP status they get; 0 drops the connection (default: 500)")
    box.set_defaults(func=cmd_sandbox)
    return box


def cmd_sandbox(args: argparse.Namespace) -> int:
    from . import command

    try:
        if args.action is None:
            return command.serve(minutes=args.minutes, task=args.task,
                                 authorize=args.authorize, out=_out,
                                 options=sandbox_options(args))
        elif args.action == "consent":
            _out(command.consent(args.url))
        elif args.action == "task":
            task = command.task_state(args.task_id)
            _out(f"task {args.task_id}: {task['state']} {task.get('finishStatus') or ''}"
                 f"{': ' + task['finishMessage'] if task.get('finishMessage') else ''}")
        elif args.action == "fail-maestro":
            command.fault("fail-maestro", times=args.times, status=args.status)
            answer = args.status or "a dropped connection"
            _out(f"The next {args.times} Maestro request(s) get {answer}.")
        else:
            command.fault(args.action)
            _out(SANDBOX_FAULTS[args.action][1])
    except command.SandboxCommandError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK
