"""Every question whose answer depends on the operating system, answered in one place.

- :func:`stdin_kind` and :func:`person_at_keyboard`: is someone there to paste an
  address (a console, an IDE's Run window) or not (a closed stdin, the null device)?
- :func:`protect`: make a token file readable by its user only;
- :func:`replace`: rename a temporary file over the token file, waiting out another
  process that has it open (Windows);
- :func:`user_data_dir`: where per-user data lives (the fallback folder);
- :func:`pid_alive`: whether the process that left a temporary file is still running.

Each takes the OS facts it needs as arguments with the real ones as defaults (``system``
is :data:`SYSTEM`; ``environ`` is ``os.environ``; the Windows calls are small functions
in :class:`WindowsCalls`, passed in), so the tests on Linux run every Windows branch with
the values Windows really returns. Nothing else in the plugin asks which OS it runs on.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TextIO

APP = "botcity-ms365"
#: The OS the plugin runs on (``sys.platform``); tests set it to try another OS's branch.
SYSTEM = sys.platform

# -- is a person at the keyboard? ------------------------------------------------------------
#: Win32 GetFileType answers (Microsoft's documentation of GetFileType).
FILE_TYPE_UNKNOWN, FILE_TYPE_DISK, FILE_TYPE_CHAR, FILE_TYPE_PIPE = 0, 1, 2, 3
#: ``msvcrt.get_osfhandle`` gives a handle as an unsigned number (CPython's
#: PC/clinic/msvcrtmodule.c.h: ``PyLong_FromVoidPtr``), so the C runtime's -2 ("no stream",
#: a pythonw descriptor) is 2**64 - 2 on 64-bit Windows, and INVALID_HANDLE_VALUE (-1) is
#: 2**64 - 1 (it never comes back: get_osfhandle raises OSError for it).
_POINTER = 2 ** (8 * struct.calcsize("P"))
INVALID_HANDLE_VALUE = _POINTER - 1
NO_STREAM_HANDLE = _POINTER - 2


class WindowsCalls(NamedTuple):
    """The Win32 calls the plugin makes, as functions a test can replace.

    - ``handle(fd)``: ``msvcrt.get_osfhandle``; raises ``OSError`` (EBADF) for a closed
      descriptor;
    - ``file_type(handle)``: ``GetFileType``;
    - ``console_mode(handle)``: whether ``GetConsoleMode`` succeeds (it fails for the
      ``NUL`` device, which is a character device too);
    - ``protect(path)``: set a protected DACL granting the file's owner, SYSTEM and
      Administrators only (CPython's own choice for ``os.mkdir(path, 0o700)``).
    """

    handle: Callable[[int], int]
    file_type: Callable[[int], int]
    console_mode: Callable[[int], bool]
    protect: Callable[[str], None]


def _real_windows_calls() -> WindowsCalls:  # pragma: no cover - runs on Windows only
    import ctypes
    import msvcrt
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetFileType.argtypes = [wintypes.HANDLE]
    kernel32.GetFileType.restype = wintypes.DWORD
    kernel32.GetConsoleMode.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    kernel32.GetConsoleMode.restype = wintypes.BOOL

    def console_mode(handle: int) -> bool:
        mode = wintypes.DWORD()
        return bool(kernel32.GetConsoleMode(handle, ctypes.byref(mode)))

    def protect(path: str) -> None:
        descriptor = ctypes.c_void_p()
        if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                OWNER_ONLY_SDDL, 1, ctypes.byref(descriptor), None):
            raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
        try:
            if not advapi32.SetFileSecurityW(
                    path, DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                    descriptor):
                raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
        finally:
            kernel32.LocalFree(descriptor)

    return WindowsCalls(handle=msvcrt.get_osfhandle,  # type: ignore[attr-defined]
                        file_type=kernel32.GetFileType, console_mode=console_mode,
                        protect=protect)


_WINDOWS: WindowsCalls | None = None


def windows_calls() -> WindowsCalls:
    """The real Win32 calls (made once, on Windows only)."""
    global _WINDOWS
    if _WINDOWS is None:
        _WINDOWS = _real_windows_calls()
    return _WINDOWS


def stdin_kind(stdin: TextIO | None, system: str | None = None,
               windows: WindowsCalls | None = None) -> str:
    """What stdin is: ``"console"`` (a terminal), ``"pipe"`` (an IDE's Run window, a
    parent process), ``"file"`` (redirected from a file), ``"null"`` (``/dev/null``,
    ``NUL``), ``"closed"`` (none, closed, or a Windows handle that is not valid) or
    ``"replaced"`` (a stream without a descriptor: an IDE's or a test's).

    On Windows ``os.fstat`` asks the handle's ``GetFileType`` (CPython's
    Python/fileutils.c, ``_Py_fstat_noraise``): it tells a pipe (``S_IFIFO``) and a file
    from a console (``S_IFCHR``), but a console and ``NUL`` are both character devices
    (``S_IFCHR``), and ``os.isatty`` is True for both. So the plugin asks ``GetFileType``
    itself, and ``GetConsoleMode`` for a character device, which only a console accepts."""
    system = SYSTEM if system is None else system
    if stdin is None or getattr(stdin, "closed", True):
        return "closed"
    try:
        fd = stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return "replaced"
    if system == "win32":
        calls = windows or windows_calls()
        try:
            handle = calls.handle(fd)
        except OSError:
            return "closed"
        if handle in (0, NO_STREAM_HANDLE, INVALID_HANDLE_VALUE):
            return "closed"
        kind = calls.file_type(handle)
        if kind == FILE_TYPE_CHAR:
            return "console" if calls.console_mode(handle) else "null"
        if kind == FILE_TYPE_PIPE:
            return "pipe"
        if kind == FILE_TYPE_DISK:
            return "file"
        return "closed"
    try:
        info = os.fstat(fd)
    except OSError:
        return "closed"
    try:
        null = os.stat(os.devnull)
        if (info.st_ino, info.st_dev) == (null.st_ino, null.st_dev):
            return "null"
    except OSError:
        pass
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode):
        return "pipe"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return "console"


def person_at_keyboard(stdin: TextIO | None, system: str | None = None,
                       windows: WindowsCalls | None = None) -> bool:
    """Whether someone can answer on stdin: a console, an IDE's Run window or a parent
    process's pipe (as 0.2.0 assumed), or a file of prepared answers; not a closed stdin
    or the null device (a service's)."""
    return stdin_kind(stdin, system, windows) not in ("closed", "null")


# -- a token file only its user can read ----------------------------------------------------
#: Owner, SYSTEM and Administrators; protected from the folder's inherited entries.
OWNER_ONLY_SDDL = "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;BA)"
DACL_SECURITY_INFORMATION = 0x00000004
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000


def protect(path: str | os.PathLike[str], system: str | None = None,
            windows: WindowsCalls | None = None) -> None:
    """Make ``path`` readable and writable by its user only: mode 0600 on POSIX; on
    Windows, where ``chmod`` only toggles the read-only flag, a protected access list
    for its owner (and SYSTEM and Administrators) instead of the folder's."""
    system = SYSTEM if system is None else system
    if system == "win32":
        (windows or windows_calls()).protect(os.fspath(path))
    else:
        os.chmod(path, 0o600)


def tighten(path: str | os.PathLike[str], system: str | None = None,
            windows: WindowsCalls | None = None) -> bool:
    """:func:`protect` ``path`` if others may read it; True when it was changed. On POSIX
    that is a group or other permission bit (a 0.2.0 token file is 0644); on Windows the
    mode says nothing about the access list (``os.stat`` derives it from the read-only
    attribute), so the owner-only list is set every time. ``OSError`` when the file is not
    ours to change (``chmod`` gives EPERM, ``SetFileSecurityW`` ERROR_ACCESS_DENIED)."""
    system = SYSTEM if system is None else system
    if system != "win32" and not stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        return False
    protect(path, system, windows)
    return True


# -- renaming over a file another process has open -------------------------------------------
#: Windows refuses to rename over a file another process has open: ERROR_ACCESS_DENIED (5)
#: or ERROR_SHARING_VIOLATION (32), both PermissionError (errno 13) in Python. 5 is also
#: Windows' answer for a real denial (a read-only file, an access list that refuses us),
#: which the retries cannot tell from a passing one: that error comes after the wait.
SHARING_ERRORS = (5, 32)
REPLACE_SECONDS = 2.0


def replace(source: str | os.PathLike[str], target: str | os.PathLike[str],
            rename: Callable[[Any, Any], None] = os.replace,
            sleep: Callable[[float], None] = time.sleep,
            seconds: float = REPLACE_SECONDS) -> None:
    """``os.replace``, retried for up to ``seconds`` while another process has the target
    open (another bot reading it, an antivirus, OneDrive syncing the folder): 50 ms,
    doubling to 400 ms. Then the last ``PermissionError`` is raised. A real denial
    (ERROR_ACCESS_DENIED for a read-only target or a refusing access list) looks the same
    and is raised only after those ``seconds`` too; on POSIX a refusal is raised at once."""
    waited, wait = 0.0, 0.05
    while True:
        try:
            rename(source, target)
            return
        except PermissionError as exc:
            # on POSIX a refused rename is a permission that waiting does not change
            if getattr(exc, "winerror", None) not in SHARING_ERRORS or (
                    waited + wait > seconds):
                raise
        sleep(wait)
        waited += wait
        wait = min(wait * 2, 0.4)


class NoDataDir(Exception):
    """No folder for per-user data can be found (no HOME, no profile)."""


# -- where per-user data lives ----------------------------------------------------------------
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
    system = SYSTEM if system is None else system
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
#: Windows: OpenProcess access rights and its error for a pid that does not exist, and
#: WaitForSingleObject's answers (Microsoft's documentation of OpenProcess, Process
#: Security and Access Rights, and WaitForSingleObject). The exit code is no test of
#: "running": a process may exit with 259, STILL_ACTIVE (GetExitCodeProcess's remarks).
SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
ERROR_INVALID_PARAMETER = 87
WAIT_OBJECT_0 = 0x0
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF


def _windows_wait(pid: int) -> int | None:  # pragma: no cover - runs on Windows only
    """``WaitForSingleObject(process, 0)`` for ``pid``: WAIT_TIMEOUT while it runs,
    WAIT_OBJECT_0 once it has ended; None: no such process."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    handle = kernel32.OpenProcess(SYNCHRONIZE, False, pid)
    if not handle:
        if ctypes.get_last_error() == ERROR_INVALID_PARAMETER:  # type: ignore[attr-defined]
            return None
        return WAIT_TIMEOUT  # exists, but not ours to wait for (another user's): alive
    try:
        return int(kernel32.WaitForSingleObject(handle, 0))
    finally:
        kernel32.CloseHandle(handle)


def _posix_signal(pid: int) -> None:
    os.kill(pid, 0)


def pid_alive(pid: int, system: str | None = None,
              wait: Callable[[int], int | None] = _windows_wait,
              signal: Callable[[int], None] = _posix_signal) -> bool:
    """Whether process ``pid`` still runs. On Windows this must not use ``os.kill``, which
    there terminates the process; it asks whether the process object is signaled
    (``WaitForSingleObject`` with no wait): WAIT_TIMEOUT means running, and a wait that
    failed (WAIT_FAILED) counts as running too (its temporary file is left, until it is
    a minute old)."""
    system = SYSTEM if system is None else system
    if pid <= 0:
        return False
    if system == "win32":
        answer = wait(pid)
        return answer is not None and answer != WAIT_OBJECT_0
    try:
        signal(pid)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True
