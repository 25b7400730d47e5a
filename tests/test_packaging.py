"""The distributions install beside botcity-maestro-sdk as PEP 420 namespace packages:
the plugin, without the sandbox, and botcity-ms365-sandbox (built from sandbox/)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import REPO

PLUGIN = "botcity_ms365_credentials_plugin"
SANDBOX = "botcity_ms365_sandbox"
OLD_PATH = "botcity.plugins.ms365.credentials.sandbox"
NEW_PATH = "botcity.plugins.ms365.sandbox"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Both wheels, built once: {"plugin": ..., "sandbox": ...}."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO), str(REPO / "sandbox")],
        check=True, timeout=300,
    )
    [plugin] = list(out.glob(f"{PLUGIN}-*.whl"))
    [sandbox] = list(out.glob(f"{SANDBOX}-*.whl"))
    return {"plugin": plugin, "sandbox": sandbox}


@pytest.fixture(scope="module")
def wheel(wheels) -> zipfile.ZipFile:
    return zipfile.ZipFile(wheels["plugin"])


@pytest.fixture(scope="module")
def sandbox_wheel(wheels) -> zipfile.ZipFile:
    return zipfile.ZipFile(wheels["sandbox"])


def entry_points_text(built: zipfile.ZipFile) -> str:
    [entry] = [n for n in built.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return built.read(entry).decode()


def test_namespace_packages_have_no_init(wheel):
    names = set(wheel.namelist())
    for namespace in ("botcity", "botcity/plugins", "botcity/plugins/ms365"):
        assert f"{namespace}/__init__.py" not in names
    assert "botcity/plugins/ms365/credentials/__init__.py" in names
    assert "botcity/plugins/ms365/credentials/py.typed" in names


def test_the_plugin_wheel_has_no_sandbox_and_no_pytest_plugin(wheel):
    names = wheel.namelist()
    assert [n for n in names if "sandbox" in n or n.endswith("herd.py")] == []
    entry_points = entry_points_text(wheel)
    assert "pytest11" not in entry_points and "botcity_ms365.commands" not in entry_points


def test_the_sandbox_wheel(sandbox_wheel):
    names = set(sandbox_wheel.namelist())
    # nothing of the plugin's folders but the deprecated alias package: no __init__.py
    # above it, which would replace the plugin's (or make a namespace a package)
    for folder in ("botcity", "botcity/plugins", "botcity/plugins/ms365",
                   "botcity/plugins/ms365/credentials"):
        assert f"{folder}/__init__.py" not in names
    assert {n for n in names if n.startswith("botcity/plugins/ms365/credentials/")} == {
        "botcity/plugins/ms365/credentials/sandbox/__init__.py"}
    for module in ("__init__", "sandbox", "fixture", "pytest_plugin", "subcommands",
                   "client_assertions", "identity", "graph", "maestro", "py.typed"):
        suffix = "" if module == "py.typed" else ".py"
        assert f"botcity/plugins/ms365/sandbox/{module}{suffix}" in names
    entry_points = entry_points_text(sandbox_wheel)
    assert "[pytest11]\nbotcity_ms365 = botcity.plugins.ms365.sandbox.pytest_plugin" in (
        entry_points)
    assert "demo = botcity.plugins.ms365.sandbox.subcommands:add_demo" in entry_points
    assert "sandbox = botcity.plugins.ms365.sandbox.subcommands:add_sandbox" in entry_points
    [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
    fields = Parser().parsestr(sandbox_wheel.read(meta).decode())
    assert fields["Name"] == "botcity-ms365-sandbox"
    assert "botcity-ms365-credentials-plugin==1.0.0" in fields.get_all("Requires-Dist")


def test_metadata(wheel):
    [meta] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    fields = Parser().parsestr(wheel.read(meta).decode())
    assert fields["Name"] == "botcity-ms365-credentials-plugin"
    assert fields["Version"] == "1.0.0"
    assert fields["Requires-Python"] == ">=3.10"
    requires = fields.get_all("Requires-Dist")
    assert "o365<2.2,>=2.1.10" in [r.lower() for r in requires]
    assert "botcity-maestro-sdk<1,>=0.9" in requires
    assert "botcity-ms365 = botcity.plugins.ms365.credentials.cli:main" in entry_points_text(
        wheel)


def test_imports_beside_the_maestro_sdk():
    code = ("import botcity.maestro, botcity.plugins.ms365.credentials as c; "
            "print(c.__version__, botcity.maestro.BotMaestroSDK.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["1.0.0", "BotMaestroSDK"]


def test_the_plugin_does_not_import_what_a_bot_does_not_need():
    code = ("import sys, botcity.plugins.ms365.credentials; "
            "print(sorted(m for m in sys.modules if m.startswith('botcity.plugins') "
            "or m in ('http.server', 'webbrowser', 'hypothesis', 'cryptography.x509')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "sandbox" not in out and ".cli" not in out
    assert "webbrowser" not in out  # (http.server comes with msal itself)


# -- installed from the wheels into a fresh venv, as a bot developer installs them ----------
class Venv:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        venv.create(folder, with_pip=True)
        self.bin = folder / ("Scripts" if os.name == "nt" else "bin")
        self.python = str(self.bin / "python")

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MS365_", "BOTCITY_", "PYTHON", "PYTEST"))}
        return subprocess.run(list(args), capture_output=True, text=True, timeout=300,
                              cwd=cwd or self.folder, env=env)

    def pip(self, *args: str) -> None:
        done = self.run(self.python, "-m", "pip", "install", "-q", *args)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    """One fresh venv: what its commands answer with the plugin's wheel only (and its
    dependencies, and pytest), then with the sandbox's wheel too. Keyed by check."""
    box = Venv(tmp_path_factory.mktemp("venv") / "venv")
    project = tmp_path_factory.mktemp("project")
    (project / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    cli = str(box.bin / "botcity-ms365")
    pytest_fixtures = (box.python, "-m", "pytest", "-p", "no:cacheprovider", "--fixtures")
    trace_config = (box.python, "-m", "pytest", "-p", "no:cacheprovider", "--trace-config",
                    "--collect-only", "-q")
    results = {}
    box.pip(str(wheels["plugin"]), "pytest")
    results["import"] = box.run(box.python, "-c", "import botcity.plugins.ms365.credentials "
                                "as c; print(c.__version__)")
    results["help"] = box.run(cli, "--help")
    results["sandbox"] = box.run(cli, "sandbox")
    results["sandbox --help"] = box.run(cli, "sandbox", "--help")
    results["demo"] = box.run(cli, "demo", "--bot", "bot.py")
    results["status"] = box.run(cli, "status", "--token-path", str(project / "none.txt"))
    results["fixtures"] = box.run(*pytest_fixtures, cwd=project)
    results["trace-config"] = box.run(*trace_config, cwd=project)
    results["old path"] = box.run(box.python, "-c", f"import {OLD_PATH}")
    results["runner bot"] = runner_bot(box, project)

    box.pip("--no-index", str(wheels["sandbox"]))  # its dependencies are the plugin's
    results["with sandbox: help"] = box.run(cli, "sandbox", "--help")
    results["with sandbox: fixtures"] = box.run(*pytest_fixtures, cwd=project)
    results["with sandbox: old path"] = box.run(box.python, "-W", "default", "-c", OLD_IMPORTS)
    results["with sandbox: old path, the warning"] = box.run(box.python, "-c", OLD_WARNING)
    return results


RUNNER_BOT = """
import sys
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

maestro = BotMaestroSDK.from_sys_args()
service = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
service.authenticate(["basic"])
print("user:", service.ms365_account.get_current_user_data().user_principal_name)
print("modules:", sorted(m for m in sys.modules if "sandbox" in m))
"""


def runner_bot(box: Venv, project: Path) -> subprocess.CompletedProcess[str]:
    """A Runner's bot in the venv that has the plugin only, against the sandbox this
    process runs (the token consented once into Maestro, as a person does it)."""
    from botcity.plugins.ms365.sandbox import Sandbox

    with Sandbox() as sandbox:
        sandbox.put_app_credentials("ms365")
        sandbox.authorize("ms365", ["basic"])
        task, token = sandbox.maestro.start_task()
        (project / "bot.py").write_text(RUNNER_BOT)
        return subprocess.run(
            [box.python, str(project / "bot.py"), *sandbox.maestro.runner_argv(task, token)],
            capture_output=True, text=True, timeout=120, cwd=project, stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items()
                    if not k.startswith(("MS365_", "BOTCITY_", "PYTHON", "PYTEST"))},
                 **sandbox.client_env()})


#: the old path's imports, checked to give the new path's objects
OLD_IMPORTS = f"""
import os
import {NEW_PATH} as new
from {OLD_PATH} import MS365Sandbox, Sandbox, expire_token_text
from {OLD_PATH}.fixture import MS365Sandbox as FixtureClass
import {OLD_PATH}.certificates as certificates
assert Sandbox is new.Sandbox and MS365Sandbox is FixtureClass is new.MS365Sandbox
assert expire_token_text is new.expire_token_text
assert certificates.make_certificate is new.client_assertions.make_certificate
import {OLD_PATH} as old
print(os.path.dirname(old.__file__))
"""

#: the warning, caught (O365's import sets DeprecationWarning to "always", whatever -W says)
OLD_WARNING = f"""
import warnings
import botcity.plugins.ms365.credentials
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import {OLD_PATH}
[warning] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
print(warning.filename, warning.message)
"""


def test_the_plugin_alone_imports_and_its_command_works(installed):
    assert installed["import"].returncode == 0, installed["import"].stderr
    assert installed["import"].stdout.strip() == "1.0.0"
    help_ = installed["help"]
    assert help_.returncode == 0, help_.stderr
    for command in ("login", "status", "logout", "copy", "migrate"):
        assert f"    {command} " in help_.stdout
    assert help_.stdout.count("(needs botcity-ms365-sandbox)") == 2
    status = installed["status"]  # a command that works without the sandbox: no token
    assert status.returncode == 1 and "Traceback" not in status.stderr, status.stderr
    assert "none.txt" in status.stdout + status.stderr


def test_the_plugin_alone_runs_a_runner_s_bot_against_maestro(installed):
    bot = installed["runner bot"]
    assert bot.returncode == 0, bot.stdout + bot.stderr
    assert "user: " in bot.stdout and "@" in bot.stdout
    assert "modules: []" in bot.stdout, "nothing of the sandbox was imported"


@pytest.mark.parametrize("check", ["sandbox", "sandbox --help", "demo"])
def test_without_the_sandbox_its_commands_say_what_to_install(installed, check):
    done = installed[check]
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "pip install botcity-ms365-sandbox" in line and "pip install -e ./sandbox" in line
    assert f"'{check.split()[0]}'" in line


def test_without_the_sandbox_pytest_loads_no_sandbox_plugin(installed):
    fixtures, trace = installed["fixtures"], installed["trace-config"]
    assert fixtures.returncode == 0, fixtures.stdout + fixtures.stderr
    assert "tmp_path" in fixtures.stdout and "ms365_sandbox" not in fixtures.stdout
    assert trace.returncode == 0, trace.stdout + trace.stderr
    assert "botcity_ms365" not in trace.stdout and "sandbox" not in trace.stdout
    assert "No module named 'botcity.plugins.ms365.credentials.sandbox'" in (
        installed["old path"].stderr)


def test_with_the_sandbox_wheel_the_fixture_and_commands_are_there(installed):
    assert installed["with sandbox: help"].returncode == 0
    assert "consent" in installed["with sandbox: help"].stdout
    fixtures = installed["with sandbox: fixtures"]
    assert "ms365_sandbox" in fixtures.stdout, fixtures.stdout + fixtures.stderr


def test_with_the_sandbox_wheel_the_old_path_warns_and_works(installed):
    done = installed["with sandbox: old path"]
    assert done.returncode == 0, done.stderr
    assert f"DeprecationWarning: {OLD_PATH} is deprecated" in done.stderr
    assert f"import {NEW_PATH}" in done.stderr
    # the wheel put the alias package into the plugin's own folder
    assert Path(done.stdout.strip()).parent.joinpath("__init__.py").is_file()
    assert done.stdout.strip().endswith(os.path.join("credentials", "sandbox"))
    caught = installed["with sandbox: old path, the warning"]
    assert caught.returncode == 0, caught.stderr
    # it names the new path, and the line that imported the old one
    assert caught.stdout.startswith("<string> ") and f"import {NEW_PATH}" in caught.stdout


def test_editable_the_old_path_warns_and_works():
    """This checkout's venv (the README's pip install -e ... -e ./sandbox): the alias
    package is in sandbox/src, which the plugin's package reaches through its __path__."""
    import botcity.plugins.ms365.sandbox as new

    if not Path(new.__file__).is_relative_to(REPO):
        pytest.skip("the sandbox is not installed editable from this checkout")
    done = subprocess.run([sys.executable, "-W", "default", "-c", OLD_IMPORTS],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"DeprecationWarning: {OLD_PATH} is deprecated" in done.stderr
    assert Path(done.stdout.strip()) == (
        REPO / "sandbox" / "src" / "botcity" / "plugins" / "ms365" / "credentials" / "sandbox")
