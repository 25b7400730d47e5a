"""bot_example/ is a bot in BotCity's template layout: ``python build.py`` makes the zip
Maestro deploys, the same on every OS."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO

EXAMPLE = REPO / "bot_example"


def test_build_py_makes_the_zip_maestro_deploys(tmp_path):
    folder = tmp_path / "bot"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.zip", "__pycache__"))
    # what must never ship: tokens, virtual environments (by any name), caches, tests
    (folder / "o365_token.txt").write_text("{}")
    (folder / "o365_token.txt.1x-backup").write_text("{}")
    for venv in (".venv", "venv", "my-env"):
        (folder / venv / "lib").mkdir(parents=True)
        (folder / venv / "pyvenv.cfg").write_text("home = /usr/bin")
        (folder / venv / "lib" / "site.py").write_text("")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "bot.cpython-311.pyc").write_bytes(b"x")
    (folder / "resources" / "nested").mkdir()
    (folder / "resources" / "nested" / "data.csv").write_text("a,b\n")
    (folder / "helpers.py").write_text("")  # the bot's own modules go in
    (folder / "old.zip").write_bytes(b"PK")
    (folder / "tests").mkdir(exist_ok=True)  # bot_example has its own tests: not shipped
    (folder / "tests" / "test_bot.py").write_text("")

    done = subprocess.run([sys.executable, str(folder / "build.py")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "Built" in done.stdout
    names = sorted(zipfile.ZipFile(folder / "bot.zip").namelist())
    assert names == ["README.md", "bot.py", "helpers.py", "requirements.txt",
                     "resources/README.txt", "resources/nested/data.csv"]
    assert all("\\" not in name for name in names), "forward slashes only"
    with zipfile.ZipFile(folder / "bot.zip") as archive:
        assert archive.testzip() is None
        archive.extractall(tmp_path / "unzipped")
    assert (tmp_path / "unzipped" / "resources" / "nested" / "data.csv").is_file()


def test_the_template_files_are_there():
    for name in ("bot.py", "requirements.txt", "build.py", "README.md", "resources"):
        assert (EXAMPLE / name).exists(), name
    for gone in ("build.sh", "build.bat", "build.ps1"):
        assert not (EXAMPLE / gone).exists(), f"{gone}: one build script for every OS"
    requirements = (EXAMPLE / "requirements.txt").read_text()
    assert "botcity-ms365-credentials-plugin>=1.0" in requirements
    assert "botcity-maestro-sdk" in requirements and "botcity-ms365-outlook-plugin" in requirements
