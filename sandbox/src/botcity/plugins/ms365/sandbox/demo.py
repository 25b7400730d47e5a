"""``botcity-ms365 demo``: the whole story against the local sandbox.

First authorization stored in Maestro, the example bot run as a Runner runs it, then an
expired access token refreshed and written back, narrated step by step.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEMO_LABEL = "ms365"


def _say(text: str = "", *, indent: int = 0) -> None:
    """The demo's narration, on stdout (it is the output the person asked for)."""
    sys.stdout.write((textwrap.indent(text, " " * indent) if indent else text) + "\n")
    sys.stdout.flush()


def _step(number: int, text: str) -> None:
    _say(f"\n[{number}] {text}")


def _run_bot(sandbox: Any, bot: Path, timeout: float) -> tuple[Any, str]:
    task_id, token = sandbox.maestro.start_task(
        "ms365-demo", {"ms365_credential_label": DEMO_LABEL})
    argv = sandbox.maestro.runner_argv(task_id, token)
    _say(f"$ python {bot.name} {argv[0]} {task_id} <runner token> {argv[3]}", indent=4)
    env = sandbox.process_env()
    done = subprocess.run(  # noqa: S603 - our own interpreter and the example bot
        [sys.executable, str(bot), *argv], env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, cwd=bot.parent,
    )
    output = (done.stdout + done.stderr).strip()
    return sandbox.maestro.tasks[task_id], output


def _refresh_secret(text: str | None) -> set[str]:
    if not text:
        return set()
    return {e["secret"] for e in json.loads(text).get("RefreshToken", {}).values()}


def run_demo(bot_path: str, timeout: float) -> int:
    bot = Path(bot_path).resolve()
    if not bot.is_file():
        _say(f"error: the example bot {bot} does not exist. Run the demo from the project "
             "folder (where bot_example/ is), or pass --bot PATH.", )
        return EXIT_USAGE

    if importlib.util.find_spec("botcity.plugins.ms365.outlook") is None:
        _say("error: the example bot needs botcity-ms365-outlook-plugin. Install the demo's "
             "extras: pip install -e '.[demo]' -e ./sandbox (from the project folder).")
        return EXIT_USAGE

    from .sandbox import Sandbox

    _say("botcity-ms365 demo: a bot on a BotCity Runner uses Microsoft 365 with no person "
         "at the machine.\nEverything runs on this machine against a local sandbox; nothing "
         "reaches Microsoft or BotCity.")
    with Sandbox() as sandbox:
        _step(1, "Started the sandbox:")
        _say(f"Microsoft identity platform  {sandbox.authority_host}\n"
             f"Microsoft Graph              {sandbox.graph_url}\n"
             f"BotCity Maestro              {sandbox.maestro_url}", indent=4)

        _step(2, f"An operator creates the Maestro credential '{DEMO_LABEL}' with the Azure "
                 "app's client_id, client_secret and tenant_id.")
        sandbox.put_app_credentials(DEMO_LABEL)

        _step(3, "First authorization, once, on the developer's machine: a person opens the "
                 "consent page and accepts\n    (here the sandbox plays the person).")
        # what bot_example/bot.py asks for: it sends a report email
        sandbox.authorize(DEMO_LABEL, ["basic", "mail_send"])
        stored = sandbox.stored_token(DEMO_LABEL) or ""
        meta = json.loads(stored)["botcity"]
        keys = [i["key"] for i in sandbox.maestro.credentials[DEMO_LABEL]]
        _say(f"Signed in as {meta['account']}, permissions {', '.join(meta['permissions'])}.\n"
             f"The token is in Maestro credential '{DEMO_LABEL}', key 'token' "
             f"({len(stored)} bytes); the credential now holds: {', '.join(keys)}.", indent=4)

        _step(4, "A Runner starts the bot, with the Maestro connection on its command line "
                 "and nobody at the keyboard:")
        sandbox.requests.clear()
        task, output = _run_bot(sandbox, bot, timeout)
        _say(output, indent=6)
        identity = len(sandbox.requests("identity"))
        inbox = [m["subject"] for m in sandbox.graph.mail("inbox")]
        _say(f"Task {task.id} finished {task.finish_status}: {task.finish_message}\n"
             f"In the mailbox: {inbox[-1] if inbox else '(nothing)'!r}.\n"
             f"Requests to Microsoft's identity platform: {identity} (the stored access "
             "token was still valid).", indent=4)
        if task.finish_status != "SUCCESS":
            return EXIT_FAILED

        _step(5, "An hour later the access token has expired; the Runner starts the bot "
                 "again:")
        before = sandbox.stored_token(DEMO_LABEL)
        sandbox.force_expiry()
        sandbox.requests.clear()
        task, output = _run_bot(sandbox, bot, timeout)
        _say(output, indent=6)
        refreshes = len(sandbox.token_requests("refresh_token"))
        after = sandbox.stored_token(DEMO_LABEL)
        rotated = _refresh_secret(after) != _refresh_secret(before)
        kept = sandbox.maestro.secret(DEMO_LABEL, "client_secret") == sandbox.app.secret
        _say(f"Task {task.id} finished {task.finish_status}: {task.finish_message}\n"
             f"Refreshes: {refreshes}. The rotated token was written back to Maestro: "
             f"{'yes' if rotated else 'NO'}; client_id and client_secret unchanged: "
             f"{'yes' if kept else 'NO'}.", indent=4)
        if task.finish_status != "SUCCESS" or refreshes != 1 or not rotated or not kept:
            return EXIT_FAILED

    _say("\nDone: one consent, then every Runner run used (and renewed) the token from "
         "Maestro on its own.")
    return EXIT_OK
