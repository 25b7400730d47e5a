"""``botcity-ms365 sandbox`` as a developer uses it from terminals: one runs the sandbox
and prints what a bot needs; the others run the bot with those exports, sign in with
``sandbox consent`` and inject faults. Real processes, a real pseudo-terminal for the
0.2.0 snippet's console sign-in."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import BOT, DEADLINE, run_process

CLI = [sys.executable, "-m", "botcity.plugins.ms365.credentials"]


@dataclass
class Running:
    output: list[str]
    env: dict[str, str]  # this machine's environment plus the printed bash exports
    proc: subprocess.Popen[str]

    def line(self, prefix: str) -> str:
        return next(line for line in self.output if line.strip().startswith(prefix)).strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "sandbox", *args], env=self.env, text=True,
                              capture_output=True, timeout=DEADLINE)


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MS365_", "BOTCITY_", "REQUESTS_CA"))}
    env["MS365_SANDBOX_STATE"] = str(tmp_path / "sandbox.json")
    return env


@contextmanager
def sandbox_command(tmp_path: Path, *options: str) -> Iterator[Running]:
    """``botcity-ms365 sandbox OPTIONS`` in its own process, until it says it serves."""
    env = base_env(tmp_path)
    proc = subprocess.Popen([*CLI, "sandbox", "--minutes", "5", *options], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[str] = []
    try:
        assert proc.stdout is not None
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line.rstrip("\n"))
            if line.startswith("Serving until Ctrl+C"):
                break
        assert output and output[-1].startswith("Serving"), "\n".join(output)
        exports = dict(re.findall(r"^  export (\w+)=(.*)$", "\n".join(output), re.M))
        yield Running(output, {**env, **exports}, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl+C
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_it_prints_the_urls_the_app_keys_and_the_exports_for_bash_and_powershell(tmp_path):
    with sandbox_command(tmp_path) as box:
        text = "\n".join(box.output)
        for name in ("REQUESTS_CA_BUNDLE", "MS365_AUTHORITY_HOST", "MS365_GRAPH_URL",
                     "MS365_TENANT_ID", "MS365_CLIENT_ID", "MS365_CLIENT_SECRET",
                     "BOTCITY_SERVER", "BOTCITY_LOGIN", "BOTCITY_KEY"):
            assert f"export {name}=" in text
            assert f'$env:{name} = "{box.env[name]}"' in text  # the same value for PowerShell
        assert f"app client id                {box.env['MS365_CLIENT_ID']}" in text
        assert f"app client secret            {box.env['MS365_CLIENT_SECRET']}" in text
        for url_name in ("MS365_AUTHORITY_HOST", "MS365_GRAPH_URL", "BOTCITY_SERVER"):
            assert box.env[url_name] in text
            assert box.env[url_name].startswith(("https://127.0.0.1:", "http://127.0.0.1:"))
        assert "botcity-ms365 sandbox consent" in text
        # the state file that lets a second terminal reach it is its user's only
        state = tmp_path / "sandbox.json"
        assert state.stat().st_mode & 0o077 == 0
        folder = Path(box.env["REQUESTS_CA_BUNDLE"]).parent
        assert (folder / "server-key.pem").is_file()
        box.proc.send_signal(signal.SIGINT)
        assert box.proc.wait(timeout=15) == 130  # as shells report Ctrl+C (docs/cli.md)
    assert not state.exists()  # gone with the sandbox
    assert not folder.exists(), "its folder, with the TLS key in it, is removed"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_removes_the_folder_and_the_state_file(tmp_path, stop):
    """A service manager's SIGTERM (or a closed terminal's SIGHUP) stops it as Ctrl+C
    does: the servers stop, its folder (the TLS key) and its state file are removed, and
    the exit code is the shell's for that signal."""
    with sandbox_command(tmp_path) as box:
        folder = Path(box.env["REQUESTS_CA_BUNDLE"]).parent
        assert (folder / "server-key.pem").is_file()
        box.proc.send_signal(getattr(signal, stop))
        assert box.proc.wait(timeout=15) == 128 + getattr(signal, stop)
    assert not folder.exists()
    assert not (tmp_path / "sandbox.json").exists()


def test_the_task_line_run_as_printed_finishes_its_task(tmp_path):
    with sandbox_command(tmp_path, "--task", "--authorize") as box:
        line = box.line("python bot.py")
        args = line.split()[2:]
        assert len(args) == 4  # server task_id token organization
        done = run_process([sys.executable, str(BOT), *args], box.env, cwd=BOT.parent,
                           stdin_closed=True)
        assert done.returncode == 0, done.stdout + done.stderr
        status = box.cli("task", args[1])
        assert status.returncode == 0
        assert status.stdout.startswith(f"task {args[1]}: FINISHED SUCCESS: Report sent to")


def test_a_sandbox_at_a_distance_runs_the_printed_task_line_through_its_proxies(tmp_path):
    with sandbox_command(tmp_path, "--task", "--authorize", "--maestro-rtt", "0.04",
                         "--microsoft-rtt", "0.02", "--latency", "0.01-0.02",
                         "--visible-after", "0", "--token-lifetime", "600") as box:
        text = "\n".join(box.output)
        assert "maestro: 40 ms round trip (through a proxy)" in text
        assert "identity: 20 ms round trip" in text and "graph: 20 ms round trip" in text
        assert "Maestro reads: 0.01-0.02 s each" in text
        assert "Maestro writes: 0.01-0.02 s each" in text
        assert "Maestro tokens: refused 600 s after issue" in text
        state = _state(tmp_path)
        args = box.line("python bot.py").split()[2:]
        assert args[0] == state["maestro"] == box.env["BOTCITY_SERVER"]
        done = run_process([sys.executable, str(BOT), *args], box.env, cwd=BOT.parent,
                           stdin_closed=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert box.cli("task", args[1]).stdout.startswith(f"task {args[1]}: FINISHED SUCCESS")


@pytest.mark.parametrize("option", [["--latency", "0.3-0.1"], ["--latency", "fast"],
                                    ["--maestro-rtt", "-1"], ["--visible-after", "soon"]])
def test_distance_options_out_of_range_are_refused(tmp_path, option):
    done = subprocess.run([*CLI, "sandbox", "--minutes", "0", *option], env=base_env(tmp_path),
                          text=True, capture_output=True, timeout=DEADLINE)
    assert done.returncode == 2
    assert "expected" in done.stderr


def test_faults_from_a_second_terminal_reach_the_running_sandbox(tmp_path):
    with sandbox_command(tmp_path, "--authorize") as box:
        # nothing works for a caller without the admin key of the state file
        admin = requests.post(_state(tmp_path)["admin"] + "/revoke-tokens",
                              timeout=10)
        assert admin.status_code == 403
        assert box.cli("expire-tokens").returncode == 0
        assert box.cli("revoke-tokens").returncode == 0
        maestro = subprocess.run(
            [*CLI, "status", "--label", "ms365", "--check"], env=box.env, text=True,
            capture_output=True, timeout=DEADLINE)
        assert maestro.returncode == 1
        assert "botcity-ms365 login --label ms365 --scopes basic" in maestro.stderr

        assert box.cli("fail-maestro", "--times", "3", "--status", "503").returncode == 0
        down = subprocess.run([*CLI, "status", "--label", "ms365"], env=box.env, text=True,
                              capture_output=True, timeout=DEADLINE)
        assert down.returncode == 1
        assert "answered HTTP 503 to the login: it is failing or overloaded" in down.stderr


def test_critical_events_from_a_second_terminal_reach_the_running_sandbox(tmp_path):
    """The continuous access evaluation events of a second terminal change what Microsoft
    answers a renewal (``status --check`` renews once)."""
    with sandbox_command(tmp_path, "--authorize") as box:
        def check() -> str:
            done = subprocess.run([*CLI, "status", "--label", "ms365", "--check"],
                                  env=box.env, text=True, capture_output=True,
                                  timeout=DEADLINE)
            return "ok" if done.returncode == 0 else done.stdout + done.stderr

        disabled = box.cli("disable-account")
        assert disabled.returncode == 0 and "AADSTS50057" in disabled.stdout
        assert "rejected by Microsoft (AADSTS50057)" in check()
        assert box.cli("enable-account").returncode == 0
        assert check() == "ok"
        assert box.cli("fail-ip-policy").returncode == 0
        assert "rejected by Microsoft (AADSTS53003)" in check()
        assert box.cli("pass-ip-policy").returncode == 0
        assert check() == "ok"
        assert box.cli("change-password").returncode == 0
        assert "rejected by Microsoft (AADSTS50173)" in check()
        revoked = box.cli("revoke-sessions")
        assert revoked.returncode == 0 and "AADSTS50173" in revoked.stdout


def test_a_subcommand_without_a_running_sandbox_says_how_to_start_one(tmp_path):
    done = subprocess.run([*CLI, "sandbox", "expire-tokens"], env=base_env(tmp_path),
                          text=True, capture_output=True, timeout=DEADLINE)
    assert done.returncode == 1
    assert "no sandbox is running" in done.stderr
    assert "botcity-ms365 sandbox" in done.stderr


def _state(tmp_path: Path) -> dict[str, str]:
    import json

    return json.loads((tmp_path / "sandbox.json").read_text())


SNIPPET_020 = """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

service = MS365CredentialsPlugin(
    client_id=os.environ["MS365_CLIENT_ID"],
    client_secret=os.environ["MS365_CLIENT_SECRET"],
)
service.authenticate(scopes=[Scopes.BASIC, Scopes.MAIL_READ_WRITE])
print("signed in as", service.ms365_account.get_current_user_data().user_principal_name)
"""


def run_in_terminal(args: list[str], env: dict[str, str], cwd: Path,
                    answer=None) -> tuple[int, str]:
    """Run ``args`` on a pseudo-terminal (a person's console: stdin is a tty). ``answer``
    gets the output so far and returns a line to type, or None."""
    main, child = os.openpty()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=child, stdout=child, stderr=child,
                            close_fds=True, start_new_session=True)
    os.close(child)
    seen = ""
    typed = False
    end = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                if answer is not None and not typed:
                    reply = answer(seen)
                    if reply is not None:
                        os.write(main, reply.encode() + b"\n")
                        typed = True
            elif proc.poll() is not None:
                break
        else:
            raise TimeoutError(f"{args} still running:\n{seen}")
        return proc.wait(timeout=10), seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_the_020_snippet_signs_in_at_the_console_with_sandbox_consent_then_reuses_it(
        tmp_path):
    with sandbox_command(tmp_path) as box:
        bot = tmp_path / "bot"
        bot.mkdir()
        (bot / "bot.py").write_text(SNIPPET_020)
        consents: list[str] = []

        def person(seen: str) -> str | None:
            # what a developer does: copy the printed address into `sandbox consent`
            # in a second terminal, and paste what it prints back into the bot's prompt
            found = re.search(r"^(https://127\.0\.0\.1:\d+/\S+/authorize\?\S+)\s*$", seen, re.M)
            if not found or "Paste the address" not in seen:
                return None
            done = box.cli("consent", found.group(1))
            assert done.returncode == 0, done.stderr
            consents.append(done.stdout.strip())
            return done.stdout.strip()

        code, seen = run_in_terminal([sys.executable, "bot.py"], box.env, bot, person)
        assert code == 0, seen
        assert len(consents) == 1
        assert "signed in as bot@contoso.onmicrosoft.com" in seen
        assert (bot / "o365_token.txt").is_file()

        again, seen = run_in_terminal([sys.executable, "bot.py"], box.env, bot)
        assert again == 0, seen
        assert "Microsoft 365 needs your consent" not in seen
        assert "signed in as bot@contoso.onmicrosoft.com" in seen


def test_consent_refuses_an_address_that_is_not_the_sandboxes(tmp_path):
    with sandbox_command(tmp_path) as box:
        done = box.cli("consent", "https://login.microsoftonline.com/common/oauth2/v2.0/"
                       "authorize?client_id=x")
        assert done.returncode == 1
        assert "not an address of this sandbox" in done.stderr
