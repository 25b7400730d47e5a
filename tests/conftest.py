"""Fixtures: a fresh sandbox per test, the environment that points clients at it, and a
helper that runs a bot as its own process (as a developer or a Runner does)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials._clock import Clock
from botcity.plugins.ms365.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
BOT = REPO / "bot_example" / "bot.py"
#: What bot_example/bot.py asks for (it sends a report email).
BOT_SCOPES = ("basic", "mail_send")

#: Anything a test waits for is bounded by this.
DEADLINE = 60.0
#: What a fake clock starts at (epoch seconds).
START = 1_800_000_000.0

#: What a sandbox names its folder (``Sandbox.__init__``).
SANDBOX_FOLDERS = "botcity-ms365-sandbox-*"
#: The test run's temporary folder (see :func:`pytest_configure`).
SESSION_TMP: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """The suite's temporary files (the sandboxes' folders, with their TLS keys, this
    process's and its subprocesses') go to a folder of this run, so that what a test
    leaves behind is seen (a check after every test) and other runs on the machine do not
    count; pytest's own tmp_path folders stay where they always are."""
    global SESSION_TMP
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
    SESSION_TMP = Path(tempfile.mkdtemp(prefix="botcity-ms365-tests-"))
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = str(SESSION_TMP)
    tempfile.tempdir = str(SESSION_TMP)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_TMP is not None:
        shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_sandbox_folder_is_left_behind() -> Iterator[None]:
    """After each test: no sandbox's folder remains (a sandbox stopped, killed by a signal,
    or refused its options, removes it)."""
    yield
    assert SESSION_TMP is not None
    left = sorted(SESSION_TMP.glob(SANDBOX_FOLDERS))
    for folder in left:
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"the test left {[f.name for f in left]} in the temporary folder"


class FakeClock(Clock):
    """Time that passes only when a test (or a sleep it is given) moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.t = START

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def sandbox_options() -> dict[str, object]:
    """What ``sandbox`` is made with (``Sandbox``'s arguments): a test overrides this
    fixture, or parametrizes it, for a slow Maestro or one far away."""
    return {}


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
            sandbox_options: dict[str, object]) -> Iterator[Sandbox]:
    """A running sandbox; this process trusts it and the plugin points at it. The test
    runs in an empty working directory, so a token file never leaks between tests."""
    for name in ("MS365_CLIENT_ID", "MS365_CLIENT_SECRET", "MS365_TENANT_ID", "MS365_CONSENT",
                 "BOTCITY_SERVER", "BOTCITY_LOGIN", "BOTCITY_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MS365_FALLBACK_DIR", str(tmp_path / "fallback"))
    with Sandbox(**sandbox_options) as sbx:  # type: ignore[arg-type]
        for key, value in sbx.client_env().items():
            monkeypatch.setenv(key, value)
        yield sbx


@pytest.fixture
def maestro(sandbox: Sandbox):
    """A BotMaestroSDK logged in to the sandbox Maestro, as on a developer's machine."""
    return sandbox.maestro_sdk()


def bot_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return sandbox.process_env(**{"MS365_FALLBACK_DIR": os.environ["MS365_FALLBACK_DIR"],
                                  **extra})


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_process(
    args: list[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    answer: Callable[[str], str | None] | None = None,
    stdin_closed: bool = False,
    timeout: float = DEADLINE,
) -> Run:
    """Run ``args``; when ``answer`` is given, feed it every stdout line and write what
    it returns to the process's stdin (a person at the console). Killed at ``timeout``."""
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, text=True,
        stdin=subprocess.DEVNULL if stdin_closed else subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []

    def pump_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def pump_err() -> None:
        assert proc.stderr is not None
        err.append(proc.stderr.read())

    threads = [threading.Thread(target=pump_out, daemon=True),
               threading.Thread(target=pump_err, daemon=True)]
    for thread in threads:
        thread.start()
    out: list[str] = []
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{args} still running after {timeout} s:\n{''.join(out)}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                break
            out.append(line)
            if answer is not None and proc.stdin is not None:
                reply = answer(line)
                if reply is not None:
                    proc.stdin.write(reply + "\n")
                    proc.stdin.flush()
        proc.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for thread in threads:
        thread.join(timeout=5)
    return Run(proc.returncode, "".join(out), "".join(err))


def consent_answerer(sandbox: Sandbox) -> Callable[[str], str | None]:
    """A person at the console: opens the consent URL the bot prints, accepts, and pastes
    the address the browser lands on."""
    def answer(line: str) -> str | None:
        text = line.strip()
        if text.startswith(sandbox.authority_host) and "/authorize?" in text:
            return sandbox.consent_redirect(text)
        return None
    return answer


def script(path: Path, source: str) -> list[str]:
    path.write_text(source)
    return [sys.executable, str(path)]


def with_discovery(text: str, entry: object = None) -> str:
    """A stored token whose saved discovery answers (``botcity.discovery``) are replaced by
    ``entry``, or removed (None)."""
    data = json.loads(text)
    data["botcity"].pop("discovery", None)
    if entry is not None:
        data["botcity"]["discovery"] = entry
    return json.dumps(data, separators=(",", ":"))


def newest_token(sandbox: Sandbox, label: str = "ms365", key: str = "token",
                 organization: str | None = None) -> str | None:
    """The text of the newest token the plugin stored in the sandbox's Maestro, as its bots
    read it: key ``key`` of ``label``, or the newest renewal added beside it
    (:func:`~botcity.plugins.ms365.credentials.tokens.follow`); None: no token."""
    from botcity.plugins.ms365.credentials.persistence import NEXT, Note
    from botcity.plugins.ms365.credentials.tokens import follow, parse_token

    space = sandbox.maestro.workspaces[organization or sandbox.maestro.login]
    items = {i["key"]: i.get("value") or "" for i in space.credentials.get(label, [])}
    if not items.get(key):
        return None
    notes = (Note.parse(key, name, value) for name, value in items.items())
    chain = follow(parse_token(items[key], label),
                   [(n.generation, n.text) for n in notes if n is not None and n.kind == NEXT],
                   label)
    return json.dumps(chain.token, separators=(",", ":"))
