"""What the documentation tests read and generate: the fenced blocks of README.md and
docs/, their ``<!-- test: ... -->`` directives, and the sections of the pages that are
generated from the code or from a real run (``<!-- generated: NAME -->`` ... ``<!-- end
generated -->``).

Regenerate those sections after changing the CLI, ``errors.AADSTS``, ``errors.MESSAGES``,
``Scopes`` or the sandbox's output, then review the diff::

    .venv/bin/python tests/docs_support.py            # rewrite the generated sections
    .venv/bin/python tests/docs_support.py --check    # exit 1 when a page is stale

``tests/test_docs.py`` fails when a generated section differs from what the code or a
real run gives now (run-dependent values such as ports, ids and times aside).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"
#: Fence languages that are Python examples, and shell examples.
PYTHON = ("python", "py", "python3")
SHELL = ("bash", "sh", "shell", "console")
#: Width the CLI's --help is rendered at, on the page and in the check.
HELP_COLUMNS = "88"


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# -- fenced blocks ---------------------------------------------------------------------
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^`]*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*test:\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{name(self.path)}:{self.line}"

    def directive(self, word: str) -> list[str]:
        """The arguments of every ``<!-- test: WORD ... -->`` before this block."""
        found = []
        for text in self.directives:
            head, _, rest = text.partition(" ")
            if head == word:
                found.append(rest.strip())
        return found


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the directives right above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        directives = []
        j = i - 1
        while j >= 0 and (directive := _DIRECTIVE.match(lines[j])):
            directives.insert(0, directive["text"])
            j -= 1
        body = []
        k = i + 1
        while k < len(lines) and not (lines[k].strip().startswith(fence)
                                      and lines[k].strip().strip(fence[0]) == ""):
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else
                        lines[k].lstrip())
            k += 1
        found.append(Block(path, i + 1, match["lang"].lower(), "\n".join(body) + "\n",
                           directives))
        i = k + 1
    return found


# -- generated sections ----------------------------------------------------------------
_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def sections(path: Path) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _SECTION.finditer(path.read_text(encoding="utf-8"))}


def rewrite(path: Path, render: Callable[[str], str]) -> bool:
    """Put ``render(name)`` into each generated section of ``path`` that differs from it
    by more than a run's values (ports, times: :func:`normalize`); True if it changed."""
    text = path.read_text(encoding="utf-8")

    def section(match: re.Match[str]) -> str:
        body = render(match["name"])
        if normalize(body) == normalize(match["body"]):
            body = match["body"]
        return match[1] + body + match[4]

    new = _SECTION.sub(section, text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def render(section: str) -> str:
    """The text of a generated section: ``help [COMMAND...]``, ``aadsts``, ``messages``,
    ``scopes``, ``cli-session``, ``sandbox-session`` or ``doctor-session``."""
    words = section.split()
    if words[0] == "help":
        return fenced("text", cli_help(words[1:]))
    if words[0] == "aadsts":
        return aadsts_table()
    if words[0] == "messages":
        return messages_table()
    if words[0] == "scopes":
        return scopes_table()
    if words[0] == "cli-session":
        return fenced("text", shorten(cli_session()))
    if words[0] == "sandbox-session":
        return fenced("text", shorten(sandbox_session()))
    if words[0] == "doctor-session":
        return fenced("text", doctor_session())
    raise KeyError(f"no generator for the section {section!r}")


def fenced(lang: str, text: str) -> str:
    return f"```{lang}\n{text.rstrip()}\n```\n"


# -- the CLI's --help ------------------------------------------------------------------
def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MS365_", "BOTCITY_", "PYTEST_"))}
    env.update(COLUMNS=HELP_COLUMNS, PYTHONIOENCODING="utf-8")
    return env


def cli(args: list[str], env: dict[str, str] | None = None,
        **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "botcity.plugins.ms365.credentials", *args], text=True,
        capture_output=True, env=env or cli_env(), timeout=120, **options)  # type: ignore[call-overload]


def cli_help(command: list[str]) -> str:
    done = cli([*command, "--help"])
    assert done.returncode == 0, done.stderr
    # run as `python -m ...`, argparse names the program after the module's file
    return done.stdout.replace("__main__.py", "botcity-ms365").replace(
        "python -m botcity.plugins.ms365.credentials", "botcity-ms365")


# -- errors.AADSTS ---------------------------------------------------------------------
RAISED_AS = {"sign_in": "AuthorizationRequired", "refused": "AuthorizationError",
             "config": "ConfigurationError", "throttled": "ServiceUnavailable"}


def aadsts_table() -> str:
    from botcity.plugins.ms365.credentials.errors import AADSTS

    def cell(text: str) -> str:
        return text.replace("|", "\\|") or "-"

    rows = ["| Code | It means | What to do | Raised as |", "|---|---|---|---|"]
    for code in sorted(AADSTS, key=lambda c: int(c[6:])):
        known = AADSTS[code]
        rows.append(f"| {code} | {cell(known.meaning)} | {cell(known.fix)} | "
                    f"`{RAISED_AS[known.kind]}` |")
    return "\n".join(rows) + "\n"


# -- errors.MESSAGES and Scopes --------------------------------------------------------
#: How the messages table shows the sign-in command a message names in full.
TABLE_COMMAND = ("botcity-ms365 login --label <label> --scopes <scopes> (with BOTCITY_SERVER, "
                 "BOTCITY_LOGIN and BOTCITY_KEY of this workspace set)")


def template(text: str) -> str:
    """A message of ``errors.MESSAGES`` as the table shows it: ``<name>`` where a value
    goes, in a code span."""
    text = text.replace("{command}", TABLE_COMMAND)
    return "`" + re.sub(r"\{(\w+)\}", r"<\1>", text).replace("|", "\\|") + "`"


def messages_table() -> str:
    from botcity.plugins.ms365.credentials.errors import MESSAGES

    rows = ["| Message (its cause) | When it appears | What it says to do | Raised as |",
            "|---|---|---|---|"]
    for told in MESSAGES.values():
        when = told.when.replace("|", "\\|")
        rows.append(f"| {template(told.cause)} | {when} | {template(told.step)} | "
                    f"`{told.raised_as.__name__}` |")
    return "\n".join(rows) + "\n"


def scopes_table() -> str:
    from botcity.plugins.ms365.credentials import Scopes

    rows = ["| `Scopes` member | Its name (`--scopes`, `scopes=[...]`) | Microsoft Graph "
            "permissions | O365's name (also accepted) |", "|---|---|---|---|"]
    for member in Scopes:
        alias = f"`{member.value}`" if member.value != member.name.lower() else "-"
        rows.append(f"| `Scopes.{member.name}` | `{member.name.lower()}` | "
                    f"{', '.join(f'`{p}`' for p in member.permissions)} | {alias} |")
    return "\n".join(rows) + "\n"


# -- real runs against the sandbox -----------------------------------------------------
#: The session on the CLI page: (command, a person answers the consent prompt)
CLI_SESSION = [
    "botcity-ms365 login --label ms365 --scopes mail_read_write files_read_write_all",
    "botcity-ms365 status --label ms365 --scopes mail_read_write calendars_read",
    "botcity-ms365 status --label ms365 --check",
    "botcity-ms365 copy --from maestro:ms365 --to file:o365_token.txt",
    "botcity-ms365 logout --label ms365",
]


def cli_session() -> str:
    """Run :data:`CLI_SESSION` against a fresh sandbox, as a person at a terminal does;
    return the transcript (``$ command``, its output, ``exit N`` when not 0)."""
    sys.path.insert(0, str(REPO / "tests"))
    from botcity.plugins.ms365.sandbox import Sandbox
    from conftest import consent_answerer, run_process

    out = []
    with tempfile.TemporaryDirectory() as folder, Sandbox() as sandbox:
        sandbox.put_app_credentials("ms365")
        env = {**cli_env(), **sandbox.bot_env(),
               "MS365_FALLBACK_DIR": str(Path(folder) / "fallback")}
        for command in CLI_SESSION:
            args = [sys.executable, "-m", "botcity.plugins.ms365.credentials",
                    *command.split()[1:]]
            run = run_process(args, env, cwd=Path(folder), answer=consent_answerer(sandbox))
            out.append(f"$ {command}\n{run.stdout}{run.stderr}".rstrip())
            if run.returncode:
                out.append(f"$ echo $?\n{run.returncode}")
    return "\n\n".join(out).replace(folder, "/home/me/bot") + "\n"


def doctor_session() -> str:
    """``botcity-ms365 doctor`` on a credential authorized once, against a fresh sandbox;
    then with Maestro 40 ms away, slow to write and late to show a write; with a key that
    may only read; and with Microsoft's clock 400 s ahead of this machine's."""
    from botcity.plugins.ms365.sandbox import Sandbox

    command = "botcity-ms365 doctor --label ms365"
    out = []

    def doctor(sandbox: Sandbox, folder: str, **extra: str) -> None:
        env = {**cli_env(), **sandbox.bot_env(),
               "MS365_FALLBACK_DIR": str(Path(folder) / "fallback"), **extra}
        run = cli(command.split()[1:], env, cwd=folder)
        out.append(f"$ {command}\n{run.stdout}{run.stderr}".rstrip())
        if run.returncode:
            out.append(f"$ echo $?\n{run.returncode}")

    with tempfile.TemporaryDirectory() as folder:
        with Sandbox() as sandbox:
            sandbox.authorize("ms365", ["basic"])
            doctor(sandbox, folder)
        with Sandbox(round_trip={"maestro": 0.040}, maestro_write_latency=(0.1, 0.3),
                     maestro_visibility_delay=0.5) as sandbox:
            sandbox.authorize("ms365", ["basic"])
            doctor(sandbox, folder)
            doctor(sandbox, folder, BOTCITY_KEY=sandbox.maestro.reader_key())
            sandbox.skew_clock(400)
            doctor(sandbox, folder)
    return "\n\n".join(out) + "\n"


def sandbox_session() -> str:
    """``botcity-ms365 sandbox --task`` as it prints, up to its "Serving until Ctrl+C"
    line; then Ctrl+C."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**cli_env(), "MS365_SANDBOX_STATE": str(Path(folder) / "sandbox.json"),
               "TMPDIR": folder}
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "botcity.plugins.ms365.credentials", "sandbox", "--task"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env)
        assert proc.stdout is not None
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("Serving until Ctrl+C"):
                    break
            else:
                raise AssertionError("botcity-ms365 sandbox ended early:\n" + "".join(lines))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                rest = proc.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                rest = proc.communicate()[0]
        text = "$ botcity-ms365 sandbox --task\n" + "".join(lines) + rest.rstrip() + "\n^C"
        return text.replace(folder, "/tmp/sbx")


# -- comparing a run with the page -----------------------------------------------------
_AUTHORIZE = re.compile(r"(https://127\.0\.0\.1:\d+/[^/\s]+/oauth2/v2\.0/authorize\?)\S+")


def shorten(text: str) -> str:
    """What the generator writes: the consent URL's long query cut to ``...``."""
    return _AUTHORIZE.sub(r"\1client_id=...", text)


_VARYING = [
    (re.compile(r"/tmp/sbx[^\s\"]*"), "<file>"),
    (re.compile(r"https?://127\.0\.0\.1:\d+"), "<local>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<guid>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"), "<time>"),
    (re.compile(r"\((in )?\d+ (min|days|h)( ago)?\)"), "(<span>)"),
    (re.compile(r"\b\d+(\.\d+)? (ms|s|min|h)\b"), "<span>"),  # the doctor's measures
    (re.compile(r"(?<=\S)  +"), "  "),  # a table's columns, as wide as its values
    (re.compile(r"sbx[\w~.-]*"), "<sandbox value>"),
    (re.compile(r"\b\d{4,}\b"), "<n>"),  # a token's size in bytes, a port
]


def normalize(text: str) -> str:
    """``text`` without what differs from run to run (ports, ids, times, secrets)."""
    text = shorten(text)
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def generated_pages() -> Iterator[tuple[Path, str, str]]:
    """(page, section name, body) of every generated section."""
    for path in pages():
        for section, body in sections(path).items():
            yield path, section, body


def main(argv: list[str]) -> int:
    started = time.monotonic()
    stale = []
    for path in pages():
        if not sections(path):
            continue
        if "--check" in argv:
            for section, body in sections(path).items():
                if normalize(body) != normalize(render(section)):
                    stale.append(f"{name(path)}: {section}")
        elif rewrite(path, render):
            print(f"rewrote {name(path)}")
    for line in stale:
        print(f"stale: {line}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
