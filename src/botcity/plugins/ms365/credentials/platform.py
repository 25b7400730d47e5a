"""Every question whose answer depends on the operating system, answered in one place.

- :func:`user_data_dir`: where per-user data lives (the fallback folder);
- :func:`pid_alive`: whether the process that left a temporary file is still running.

Each takes the OS facts it needs as arguments with the real ones as defaults (``system``
is ``sys.platform``; ``environ`` is ``os.environ``; the Windows calls are small functions
passed in), so the tests on Linux run every Windows branch with the values Windows
really returns. Nothing else in the plugin asks which OS it runs on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

APP = "botcity-ms365"


class NoDataDir(Exception):
    """No folder for per-user data can be found (no HOME, no profile)."""


def user_data_dir(environ: Mapping[str, str] | None = None, system: str | None = None,
                  home: Callable[[], Path] | None = None) -> Path:
    """The per-user data folder of the plugin, by the platform's rules (as platformdirs):

    - Windows: ``%LOCALAPPDATA%\\botcity-ms365`` (``%USERPROFILE%\\AppData\\Local`` when the
      variable is missing);
    - macOS: ``~/Library/Application Support/botcity-ms365``;
    - others: ``$XDG_DATA_HOME/botcity-ms365`` when that is an absolute path, else
      ``~/.local/share/botcity-ms365``.

    :class:`NoDataDir` when the rules lead nowhere (a container with a random UID and no
    HOME): only an error when a fallback is actually needed."""
    environ = os.environ if environ is None else environ
    system = sys.platform if system is None else system
    if system == "win32":
        local = environ.get("LOCALAPPDATA") or (
            str(Path(environ["USERPROFILE"]) / "AppData" / "Local")
            if environ.get("USERPROFILE") else "")
        if not local:
            raise NoDataDir("neither LOCALAPPDATA nor USERPROFILE is set")
        return Path(local) / APP
    try:
        base = (home or Path.home)()
    except (RuntimeError, KeyError, OSError) as exc:  # no HOME and no passwd entry
        base = None
        missing = str(exc) or type(exc).__name__
    if system == "darwin":
        if base is None:
            raise NoDataDir(missing)
        return base / "Library" / "Application Support" / APP
    xdg = environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP
    if base is None:
        raise NoDataDir(missing)
    return base / ".local" / "share" / APP


# -- processes ----------------------------------------------------------------------------
#: Windows: OpenProcess access right, error for a pid that does not exist, exit code of a
#: running process (Microsoft's documentation of OpenProcess and GetExitCodeProcess).
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
ERROR_INVALID_PARAMETER = 87
STILL_ACTIVE = 259


def _windows_exit_code(pid: int) -> int | None:  # pragma: no cover - runs on Windows only
    """The exit code of ``pid`` (STILL_ACTIVE while it runs); None: no such process."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        if ctypes.get_last_error() == ERROR_INVALID_PARAMETER:  # type: ignore[attr-defined]
            return None
        return STILL_ACTIVE  # exists, but not ours to query (another user's): alive
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return STILL_ACTIVE
        return int(code.value)
    finally:
        kernel32.CloseHandle(handle)


def _posix_signal(pid: int) -> None:
    os.kill(pid, 0)


def pid_alive(pid: int, system: str | None = None,
              exit_code: Callable[[int], int | None] = _windows_exit_code,
              signal: Callable[[int], None] = _posix_signal) -> bool:
    """Whether process ``pid`` still runs. On Windows this must not use ``os.kill``, which
    there terminates the process; it asks ``OpenProcess``/``GetExitCodeProcess``."""
    system = sys.platform if system is None else system
    if pid <= 0:
        return False
    if system == "win32":
        return exit_code(pid) == STILL_ACTIVE
    try:
        signal(pid)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True
