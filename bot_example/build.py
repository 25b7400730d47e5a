"""Builds bot.zip, the package BotCity Maestro deploys, on any OS: ``python build.py``.

Everything in this folder goes in (the bot, its other modules, requirements.txt,
resources/), except what must never ship or is not needed on a Runner: token files,
virtual environments, caches, hidden files, tests, earlier zips and this script. Entry
names use forward slashes, as the zip format requires (Windows PowerShell 5.1's
Compress-Archive writes backslashes, which a Linux Runner unpacks as odd file names).
"""

from __future__ import annotations

import fnmatch
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = "bot.zip"
#: Names never packed, wherever they are (globs).
EXCLUDED = ("o365_token*.txt", "*.1x-backup*", "fallback-*.json", "*.zip", "*.pyc", "*.pyo",
            "__pycache__", "venv", "env", "tests", "build.py", "build.sh", "build.bat",
            "build.ps1")


def packed(folder: Path) -> list[Path]:
    """The files of ``folder`` that go into the zip, in a stable order."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or any(fnmatch.fnmatch(part, glob) for glob in EXCLUDED)
               for part in parts):
            continue
        if any((folder.joinpath(*parts[:i]) / "pyvenv.cfg").exists()
               for i in range(1, len(parts))):
            continue  # inside a virtual environment, whatever its name
        if path.is_file():
            files.append(path)
    return files


def build(folder: Path = HERE, target: str = TARGET) -> Path:
    zip_path = folder / target
    zip_path.unlink(missing_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in packed(folder):
            archive.write(path, path.relative_to(folder).as_posix())
    return zip_path


if __name__ == "__main__":
    built = build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE)
    print(f"Built {built}")
