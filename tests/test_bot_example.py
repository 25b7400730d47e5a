"""bot_example/ is a bot in BotCity's template layout: it builds the zip Maestro takes."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

from conftest import REPO

EXAMPLE = REPO / "bot_example"


def test_build_sh_makes_the_zip_maestro_deploys(tmp_path):
    folder = tmp_path / "bot"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.zip"))
    # what must never ship: a token, a virtual environment, caches
    (folder / "o365_token.txt").write_text("{}")
    (folder / ".venv" / "bin").mkdir(parents=True)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "bot.cpython-311.pyc").write_bytes(b"x")

    done = subprocess.run(["sh", str(folder / "build.sh")], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    names = sorted(zipfile.ZipFile(folder / "bot.zip").namelist())
    assert names == ["bot.py", "requirements.txt", "resources/", "resources/README.txt"]


def test_the_template_files_are_there():
    for name in ("bot.py", "requirements.txt", "build.sh", "build.bat", "build.ps1",
                 "README.md", "resources"):
        assert (EXAMPLE / name).exists(), name
    requirements = (EXAMPLE / "requirements.txt").read_text()
    assert "botcity-ms365-credentials-plugin>=1.0" in requirements
    assert "botcity-maestro-sdk" in requirements and "botcity-ms365-outlook-plugin" in requirements
    assert "Compress-Archive" in (EXAMPLE / "build.ps1").read_text()
    assert "build.ps1" in (EXAMPLE / "build.bat").read_text()
