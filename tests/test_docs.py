"""The documentation, checked: README.md and every page under docs/.

- Every fenced Python block runs, in page order and one namespace per page, against the
  ``ms365_sandbox`` fixture, unless a ``<!-- test: skip REASON -->`` line stands right
  above it (at most five such blocks in all, each with its reason). What a block needs
  from the world is set up by directives above it, invisible on the rendered page:

  ``<!-- test: scene NAME -->``
      a fresh working folder and what the example assumes there (see :class:`Scene`):
      ``local`` (a developer's machine, a person at the console; the default),
      ``developer`` (the same, with a Maestro credential holding the app's keys),
      ``runner`` (a Runner task's arguments, the credential authorized once),
      ``runner-first-time`` (the same, nobody has authorized yet),
      ``runner-maestro-down`` (a Runner task's arguments, Maestro stopped),
      ``certificate`` (``bot.pem`` registered on the app, no client secret),
      ``bot-folder`` (a copy of ``bot_example/``).
  ``<!-- test: then STATEMENT -->``
      a hidden check run after the block, in its namespace.
  ``<!-- test: pytest -->``
      the block defines pytest tests: each ``test_*`` is called with the fixtures it names.

  A person at the console is played by the sandbox: when the plugin prints a consent URL
  and reads stdin, the sandbox signs in, accepts and "pastes" the address. The quoted
  placeholders ``"<client_id>"``, ``"<client_secret>"``, ``"<tenant_id>"``,
  ``"<server>"``, ``"<login>"`` and ``"<key>"`` stand for the sandbox's values.
- Every ``botcity-ms365`` line of a shell block runs against the sandbox, in page order
  (``export`` lines are the sandbox's environment, already set).
- Generated sections (``--help``, the AADSTS table, transcripts of real runs) match what
  the code and a new run give now (``tests/docs_support.py`` rewrites them).
- The configuration reference names every argument and environment variable; the README
  stays a landing page whose links resolve; ``mkdocs build --strict`` passes and headless
  Chromium shows the first page with its title and navigation.
"""

from __future__ import annotations

import inspect
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import consent_answerer, run_process
from docs_support import (
    PYTHON,
    README,
    REPO,
    SHELL,
    Block,
    blocks,
    cli_env,
    generated_pages,
    name,
    normalize,
    pages,
    render,
    sections,
)

#: What the credential is authorized for in the runner scene: every scope the pages use.
DOC_SCOPES = ["basic", "mail_read_write", "files_read_write_all", "mail_send"]
MAX_NOT_RUN = 5
#: Pages whose examples carry no ``then`` check yet: what the test checks for them instead
#: (better moved into the page as a ``<!-- test: then ... -->`` line).
UNCHECKED_PAGES = {
    "docs/from-020.md": "assert service.ms365_account.get_current_user_data()"
                        ".user_principal_name == ms365_sandbox.user",
}


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.lang in PYTHON]


PYTHON_PAGES = [p for p in pages() if any(not b.directive("skip") for b in python_blocks(p))]


def cli_lines(block: Block) -> list[str]:
    """The ``botcity-ms365 ...`` command lines of a shell block."""
    found = []
    for line in block.code.splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("botcity-ms365 "):
            found.append(line.split(" #")[0].strip())
    return found


SHELL_PAGES = [p for p in pages() if any(b.lang in SHELL and cli_lines(b) for b in blocks(p))]


# -- the person, and the process's console ---------------------------------------------
class Console(io.TextIOBase):
    """stdout that the test can read back (and that still reaches pytest's capture)."""

    def __init__(self, real: Any) -> None:
        self.real, self.text = real, []

    def write(self, text: str) -> int:
        self.text.append(text)
        self.real.write(text)
        return len(text)

    def flush(self) -> None:
        self.real.flush()


class Person(io.TextIOBase):
    """stdin with a person behind it: asked for an address, they open the last consent URL
    the console showed, accept, and paste where the browser landed."""

    def __init__(self, console: Console, box: Any) -> None:
        self.console, self.box = console, box

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        urls = re.findall(r"https://\S+/oauth2/v2\.0/authorize\?\S+", "".join(self.console.text))
        return self.box.consent(urls[-1]) + "\n" if urls else ""


class Scene:
    """Sets the world up for the blocks of a page (see the module's docstring)."""

    def __init__(self, box: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.box, self.tmp_path, self.monkeypatch = box, tmp_path, monkeypatch
        self.console = Console(sys.stdout)
        monkeypatch.setattr(sys, "stdout", self.console)
        monkeypatch.setattr(sys, "argv", ["bot.py"])
        self.count = 0

    def enter(self, scene: str) -> None:
        self.count += 1
        folder = self.tmp_path / f"{self.count}-{scene}"
        if scene == "bot-folder":
            shutil.copytree(REPO / "bot_example", folder,
                            ignore=shutil.ignore_patterns("__pycache__", "*.zip", ".*"))
        else:
            folder.mkdir()
        self.monkeypatch.chdir(folder)
        self.monkeypatch.setattr(sys, "argv", ["bot.py"])
        self.monkeypatch.setattr(sys, "stdin", Person(self.console, self.box))
        for key, value in self.box.env.items():
            self.monkeypatch.setenv(key, value)
        maestro = self.box.sandbox.maestro
        maestro.alerts.clear()
        if scene in ("developer", "runner", "runner-first-time"):
            maestro.credentials.pop("ms365", None)
            self.box.sandbox.put_app_credentials("ms365")
        if scene == "runner":
            self.box.authorize("ms365", scopes=DOC_SCOPES)
        if scene in ("runner", "runner-first-time", "runner-maestro-down"):
            self.monkeypatch.setattr(sys, "argv", ["bot.py", *self.box.runner_argv()])
            closed = io.StringIO()
            closed.close()
            self.monkeypatch.setattr(sys, "stdin", closed)  # a Runner's: nobody there
        if scene == "runner-maestro-down":
            # the Runner's Maestro is not running: nothing listens at its address
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
            self.monkeypatch.setattr(sys, "argv", ["bot.py", f"http://127.0.0.1:{port}",
                                                   *sys.argv[2:]])
        if scene == "certificate":
            made = self.box.sandbox.add_certificate()
            (folder / "bot.pem").write_text(made.pem)
            self.monkeypatch.delenv("MS365_CLIENT_SECRET")
        if scene not in ("local", "developer", "runner", "runner-first-time",
                         "runner-maestro-down", "certificate", "bot-folder"):
            raise AssertionError(f"unknown scene {scene!r}")

    def placeholders(self, code: str) -> str:
        box = self.box
        values = {"client_id": box.client_id, "client_secret": box.client_secret,
                  "tenant_id": box.tenant_id, "server": box.maestro_server,
                  "login": box.maestro_login, "key": box.maestro_key}
        for key, value in values.items():
            code = code.replace(f'"<{key}>"', repr(value))
        return code


def run_block(block: Block, namespace: dict[str, Any], scene: Scene,
              fixtures: dict[str, Any]) -> int:
    """Run ``block`` and its checks; return how many checks (``then`` statements and
    pytest tests) it passed."""
    for wanted in block.directive("scene"):
        scene.enter(wanted)
    code = scene.placeholders(block.code)
    before = set(namespace)
    try:
        compiled = compile(code, block.where, "exec")
        exec(compiled, namespace)  # noqa: S102 - the docs' code
    except Exception as exc:
        raise AssertionError(f"{block.where}: the example failed: {type(exc).__name__}: "
                             f"{exc}") from exc
    checked = 0
    if block.directive("pytest"):
        tests = [n for n in namespace if n.startswith("test_") and n not in before]
        assert tests, f"{block.where}: marked pytest, but defines no test"
        for test in tests:
            function = namespace[test]
            wanted = inspect.signature(function).parameters
            function(**{p: fixtures[p] for p in wanted})
            checked += 1
    for check in block.directive("then"):
        checked += 1
        try:
            exec(compile(check, f"{block.where} (then)", "exec"), namespace)  # noqa: S102
        except AssertionError as exc:
            raise AssertionError(f"{block.where}: after the example, `{check}` "
                                 f"failed {exc}") from exc
    return checked


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=name)
def test_python_examples_run(page: Path, ms365_sandbox, tmp_path, monkeypatch):
    scene = Scene(ms365_sandbox, tmp_path, monkeypatch)
    namespace: dict[str, Any] = {"__name__": "__docs__", "ms365_sandbox": ms365_sandbox}
    fixtures = {"ms365_sandbox": ms365_sandbox, "tmp_path": tmp_path,
                "monkeypatch": monkeypatch}
    runnable = [b for b in python_blocks(page) if not b.directive("skip")]
    ran = checked = 0
    for block in runnable:
        if ran == 0 and not block.directive("scene"):
            scene.enter("local")
        checked += run_block(block, namespace, scene, fixtures)
        ran += 1
    if not checked and name(page) in UNCHECKED_PAGES:
        exec(UNCHECKED_PAGES[name(page)], namespace)  # noqa: S102 - our check
        checked += 1
    assert ran == len(runnable) > 0
    assert checked, (f"{name(page)}: its examples run, but nothing checks what they did: "
                     "add a <!-- test: then ... --> line")


def test_not_runnable_blocks_are_few_and_say_why():
    marked = [(b.where, reason) for p in pages() for b in python_blocks(p)
              for reason in b.directive("skip")]
    assert all(len(reason) > 10 for _, reason in marked), marked
    assert len(marked) <= MAX_NOT_RUN, marked


def test_directives_are_known():
    for page in pages():
        for block in blocks(page):
            for directive in block.directives:
                assert directive.split()[0] in ("scene", "then", "pytest", "skip"), (
                    f"{block.where}: unknown directive {directive!r}")
                assert block.lang in PYTHON, f"{block.where}: a directive on a {block.lang} block"


# -- shell examples of the CLI ---------------------------------------------------------
@pytest.mark.parametrize("page", SHELL_PAGES, ids=name)
def test_cli_examples_run(page: Path, ms365_sandbox, tmp_path):
    sandbox = ms365_sandbox.sandbox
    sandbox.put_app_credentials("ms365")
    env = {**cli_env(), **ms365_sandbox.env}
    ran = []
    for block in blocks(page):
        if block.lang not in SHELL:
            continue
        for line in cli_lines(block):
            args = shlex.split(line)
            if args[1] in ("demo", "sandbox"):
                continue  # tests/test_cli.py and test_sandbox_command.py run these
            run = run_process([sys.executable, "-m", "botcity.plugins.ms365.credentials",
                               *args[1:]], env, cwd=tmp_path,
                              answer=consent_answerer(sandbox), timeout=120)
            assert run.returncode == 0, f"{block.where}: `{line}` exited {run.returncode}:\n" \
                f"{run.stdout}{run.stderr}"
            ran.append(line)
    assert ran


def test_the_openssl_recipe_makes_a_certificate_the_app_takes(ms365_sandbox, tmp_path,
                                                              monkeypatch):
    """The certificate recipe of docs/azure-app.md, run as written; the certificate it
    makes is uploaded to the (sandbox) app and the bot signs in with bot.pem."""
    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    need(shutil.which("openssl"), "openssl")
    [recipe] = [b for b in blocks(REPO / "docs" / "azure-app.md")
                if b.lang in SHELL and "openssl req" in b.code]
    subprocess.run(["bash", "-euo", "pipefail", "-c", recipe.code], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    sandbox = ms365_sandbox.sandbox
    sandbox.tenant.upload_certificate(sandbox.app, (tmp_path / "cert.pem").read_text())
    monkeypatch.delenv("MS365_CLIENT_SECRET")
    service = MS365CredentialsPlugin(client_id=ms365_sandbox.client_id,
                                     client_certificate=tmp_path / "bot.pem",
                                     token_path=tmp_path)
    sandbox.requests.clear()
    service.authenticate(consent=ms365_sandbox.consent)
    [grant] = sandbox.token_requests("authorization_code")
    assert "client_assertion" in grant.form() and "client_secret" not in grant.form(), (
        "signed in with the certificate, not a secret")
    assert service.ms365_account.get_current_user_data().user_principal_name == (
        ms365_sandbox.user)


# -- generated sections ----------------------------------------------------------------
@pytest.mark.parametrize("page,section", [(p, s) for p, s, _ in generated_pages()],
                         ids=lambda v: v if isinstance(v, str) else name(v))
def test_generated_sections_are_current(page: Path, section: str):
    """The page shows what the code (or a run) gives now; `python tests/docs_support.py`
    regenerates it."""
    assert normalize(sections(page)[section]) == normalize(render(section)), (
        f"{name(page)}: the section {section!r} is stale: run python tests/docs_support.py")


def test_the_command_page_shows_every_subcommands_help():
    from botcity.plugins.ms365.credentials.cli import build_parser

    parser = build_parser()
    wanted = {"help"}
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for command, sub in action.choices.items():
            wanted.add(f"help {command}")
            for inner in getattr(sub, "_subparsers", None)._group_actions if sub._subparsers \
                    else []:
                wanted |= {f"help {command} {c}" for c in inner.choices}
    shown = set(sections(REPO / "docs" / "cli.md"))
    assert wanted <= shown, sorted(wanted - shown)


def test_the_troubleshooting_page_has_every_aadsts_code():
    from botcity.plugins.ms365.credentials.errors import AADSTS

    text = (REPO / "docs" / "troubleshooting.md").read_text()
    assert "aadsts" in sections(REPO / "docs" / "troubleshooting.md")
    for code in AADSTS:
        assert f"| {code} |" in text


def test_the_consent_prompt_is_quoted_as_the_plugin_prints_it():
    from botcity.plugins.ms365.credentials.consent import console_consent
    from botcity.plugins.ms365.credentials.errors import AuthorizationRequired

    printed = io.StringIO()
    with pytest.raises(AuthorizationRequired):  # nobody answers: stdin ends
        console_consent("https://sign-in", "https://back", "state", stdin=io.StringIO(""),
                        stdout=printed)
    source = printed.getvalue().splitlines()
    quoted = [b for p in pages() for b in blocks(p)
              if b.lang == "text" and b.code.startswith("Microsoft 365 needs your consent")]
    assert quoted
    for block in quoted:
        for line in block.code.splitlines():
            if line and not line.startswith("https://"):
                assert line in source, f"{block.where}: the plugin does not print {line!r}"


def test_the_troubleshooting_page_has_every_message_of_the_plugin():
    from botcity.plugins.ms365.credentials.errors import MESSAGES

    page = REPO / "docs" / "troubleshooting.md"
    table = sections(page)["messages"]
    assert len([row for row in table.splitlines() if row.startswith("| `")]) == len(MESSAGES)


# -- one spelling of permissions -------------------------------------------------------
#: What the docs, the example bot and the sandbox's docstrings are read for.
SPELLED = [*pages(), *sorted((REPO / "bot_example").rglob("*.py")),
           *sorted((REPO / "sandbox" / "src").rglob("*.py"))]
_LIST = re.compile(r"(?:\bscopes\s*=\s*|\bSCOPES\s*=\s*|authenticate\(\s*|sign_in\(\s*)"
                   r"\[([^\]]*)\]")
_RAW = re.compile(r"[A-Za-z]+(\.[A-Za-z]+)+")
#: A resource's scope as azure-core clients ask for it (Microsoft's Graph SDK):
#: ``https://graph.microsoft.com/.default``, ``https://graph.microsoft.com/Mail.Read``.
_RESOURCE = re.compile(r"https://[\w.-]+/(\.default|[A-Za-z]+(\.[A-Za-z]+)+)")


def spellings() -> tuple[set[str], set[str]]:
    """(the Scopes names, O365's other names for the same sets)."""
    from botcity.plugins.ms365.credentials import Scopes

    names = {m.name.lower() for m in Scopes}
    return names, {m.value for m in Scopes} - names


@pytest.mark.parametrize("path", SPELLED, ids=name)
def test_permissions_are_spelled_one_way(path: Path):
    """The Scopes names (``mail_send``, ``Scopes.MAIL_SEND``) or Microsoft's permissions
    (``Mail.Send``): O365's names for the same sets appear in one table only (the
    configuration reference's generated ``scopes`` section)."""
    names, aliases = spellings()
    text = path.read_text(encoding="utf-8")
    if "scopes" in sections(path):
        text = text.replace(sections(path)["scopes"], "")
    where = name(path)
    for listed in _LIST.finditer(text):
        for word in re.findall(r"[\"']([^\"']+)[\"']", listed[1]):
            assert word in names or _RAW.fullmatch(word) or _RESOURCE.fullmatch(word), (
                f"{where}: scope {word!r}")
    for given in re.finditer(r"--scopes((?:[ \t]+[\w.]+)+)", text):
        for word in given[1].split():
            assert word not in aliases, f"{where}: --scopes ... {word}: use its Scopes name"
            if word not in names and not _RAW.fullmatch(word):
                break  # the words after the scopes
    for alias in aliases:
        assert not re.search(rf"[\"'`]{alias}[\"'`]", text), (
            f"{where}: {alias!r} is O365's name; the docs spell it as its Scopes name")


def test_the_configuration_reference_lists_every_scope_and_its_other_name_once():
    names, aliases = spellings()
    table = sections(REPO / "docs" / "configuration.md")["scopes"]
    for word in names | aliases:
        assert table.count(f"`{word}`") == 1, word


# -- the configuration reference -------------------------------------------------------
def reference_table() -> tuple[set[str], set[str]]:
    """(arguments, environment variables) named in the configuration reference's table."""
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("<!-- table: configuration -->", 1)[1].split("\n\n", 1)[0]
    arguments, variables = set(), set()
    for row in table.splitlines()[2:]:
        cells = row.strip("|").split("|")
        # "(`authenticate`, `sign_in`)" says where an argument is taken, not an argument
        arguments |= set(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", cells[0])))
        variables |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
    return arguments, variables


def test_the_configuration_reference_names_every_argument():
    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

    arguments, _ = reference_table()
    code = set()
    for function in (MS365CredentialsPlugin.__init__, MS365CredentialsPlugin.authenticate,
                     MS365CredentialsPlugin.sign_in):
        code |= set(inspect.signature(function).parameters) - {"self"}
    assert code - arguments == set(), "arguments missing from docs/configuration.md"
    assert arguments - code == set(), "docs/configuration.md names arguments that do not exist"


def test_the_configuration_reference_names_every_environment_variable():
    from botcity.plugins.ms365.credentials import settings
    from botcity.plugins.ms365.sandbox import command

    _, variables = reference_table()
    code = {value for key, value in vars(settings).items() if key.startswith("ENV_")}
    code |= {command.ENV_STATE, "BOTCITY_SERVER", "BOTCITY_LOGIN", "BOTCITY_KEY"}
    assert code - variables == set(), "variables missing from docs/configuration.md"
    source = "\n".join(p.read_text() for p in [*(REPO / "src").rglob("*.py"),
                                                 *(REPO / "sandbox" / "src").rglob("*.py")])
    for variable in variables - {"REQUESTS_CA_BUNDLE"}:  # requests' own, set by the sandbox
        assert f'"{variable}"' in source, f"{variable} is not read by the code"


# -- the README ------------------------------------------------------------------------
def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub (and our mkdocs toc, for these headings) makes for a page."""
    anchors = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        title = re.sub(r"[^\w\- ]", "", title)
        anchors.add(title.replace(" ", "-"))
    return anchors


def test_the_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    # the two commands CI and reviewers run as written
    assert ('python3 -m venv .venv && .venv/bin/pip install -e ".[demo]" -e ./sandbox && '
            ".venv/bin/botcity-ms365 demo") in text
    assert ('python3 -m venv .venv && .venv/bin/pip install -e ".[test]" -e ./sandbox && '
            ".venv/bin/pytest") in text


@pytest.mark.parametrize("path", [README, REPO / "bot_example" / "README.md"], ids=name)
def test_every_link_resolves(path: Path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        parts = urlsplit(link)
        if parts.scheme:
            assert parts.scheme in ("http", "https") and parts.netloc and "." in parts.netloc, link
            continue
        target = (path.parent / parts.path).resolve() if parts.path else path
        assert target.exists(), f"{name(path)}: {link} does not exist"
        if parts.fragment:
            assert target.suffix == ".md", link
            assert parts.fragment in github_anchors(target), f"{name(path)}: no anchor {link}"


# -- the site --------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def need(tool: object, what: str) -> None:
    if not tool:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed; .ci/run installs it")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        need(None, 'the docs extra (pip install -e ".[docs]")')
    folder = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(folder)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_the_first_page_shows_its_title_and_the_navigation(site: Path, tmp_path):
    need(CHROMIUM, "chromium")
    import yaml

    page = (site / "index.html").as_uri()
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing leaves this machine
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]
    shot = tmp_path / "first-page.png"
    subprocess.run([*browser, f"--screenshot={shot}", page], capture_output=True,
                   timeout=120, check=True)
    dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert shot.stat().st_size > 20_000, "the screenshot is (nearly) empty"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "<h1" in dom and "Microsoft 365 - Credentials" in text
    assert not re.search(r"<(link|script)[^>]+(href|src)=\"https?://", dom), "loads from the web"
    nav = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)["nav"]
    titles = [next(iter(entry)) for entry in nav]
    assert len(titles) >= 14
    for title in titles:
        assert title in text, f"the navigation lacks {title!r}"
