"""Every OS decision (platform.py), each branch tested here: the POSIX ones for real, the
Windows ones with the values Windows really returns, injected in place of the Win32 calls.

Sources of the Windows values (quoted in the cases below):
[GFT] GetFileType, learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-getfiletype:
      FILE_TYPE_DISK 1, FILE_TYPE_CHAR 2 ("a character file, typically an LPT device or a
      console"), FILE_TYPE_PIPE 3 ("a socket, a named pipe, or an anonymous pipe").
[NUL] NUL is a character device: GetFileType gives FILE_TYPE_CHAR (CPython's
      Python/fileutils.c, the FILE_TYPE_CHAR branch commented "\\\\.\\nul"; mono/mono#707);
      GetConsoleMode fails on it (ERROR_INVALID_HANDLE, reported in ddnet/ddnet#8226),
      which is how CPython's Modules/_io/winconsoleio.c tells a console from NUL.
[OSF] msvcrt.get_osfhandle raises OSError(EBADF) for a closed descriptor
      (Doc/library/msvcrt.rst: "Raises OSError if fd is not recognized"); under pythonw a
      descriptor without a stream gives the handle -2 (_NO_CONSOLE_FILENO,
      learn.microsoft.com/cpp/c-runtime-library/reference/get-osfhandle), which Python
      returns unsigned: PC/clinic/msvcrtmodule.c.h converts it with PyLong_FromVoidPtr,
      so it is 2**64 - 2 on 64-bit Windows and a negative handle never comes back;
      INVALID_HANDLE_VALUE is (HANDLE)-1, 2**64 - 1.
[FST] os.fstat on Windows sets st_mode from GetFileType (Python/fileutils.c,
      _Py_fstat_noraise: FILE_TYPE_CHAR -> _S_IFCHR, FILE_TYPE_PIPE -> _S_IFIFO), so it
      tells a pipe from a console; but a console and NUL are both FILE_TYPE_CHAR, and
      os.isatty is True for NUL (Doc/library/sys.rst): only GetConsoleMode tells them
      apart.
[REP] os.replace over a file another process has open fails with ERROR_ACCESS_DENIED (5)
      or ERROR_SHARING_VIOLATION (32), both PermissionError errno 13 (PC/errmap.h;
      numba/numba#2041, platformio/platformio-home#8960).
[DIR] platformdirs' user_data_dir: %LOCALAPPDATA%\\<app> on Windows,
      ~/Library/Application Support/<app> on macOS, $XDG_DATA_HOME/<app> (absolute only)
      else ~/.local/share/<app> elsewhere; Path.home() raises RuntimeError("Could not
      determine home directory.") with no HOME and no passwd entry (Lib/pathlib.py).
[PID] OpenProcess fails with ERROR_INVALID_PARAMETER (87) for a pid that does not exist;
      WaitForSingleObject(process, 0) gives WAIT_TIMEOUT (0x102) while it runs,
      WAIT_OBJECT_0 (0) once it has ended, WAIT_FAILED (0xFFFFFFFF) on an error
      (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-waitforsingleobject);
      GetExitCodeProcess gives STILL_ACTIVE (259) while it runs, and its remarks warn
      that a process can also exit with 259, so an exit code is no test of "running"
      (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-
      getexitcodeprocess).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, StoreError, platform
from botcity.plugins.ms365.credentials.persistence import FileText, fallback_folder
from botcity.plugins.ms365.credentials.platform import (
    FILE_TYPE_CHAR,
    FILE_TYPE_DISK,
    FILE_TYPE_PIPE,
    WAIT_FAILED,
    WAIT_OBJECT_0,
    WAIT_TIMEOUT,
    NoDataDir,
    WindowsCalls,
)
from botcity.plugins.ms365.credentials.settings import Settings


def windows(file_type: int = FILE_TYPE_CHAR, console: bool = True, handle: object = 0x1C,
            protected: list[str] | None = None) -> WindowsCalls:
    """Win32 as it answers for one stdin handle."""
    def get_handle(fd: int) -> int:
        if isinstance(handle, Exception):
            raise handle
        return handle  # type: ignore[return-value]

    return WindowsCalls(handle=get_handle, file_type=lambda h: file_type,
                        console_mode=lambda h: console,
                        protect=lambda path: (protected if protected is not None
                                              else []).append(path))


@pytest.fixture
def a_descriptor():
    read, write = os.pipe()
    stream = os.fdopen(read)
    yield stream
    stream.close()
    os.close(write)


# -- 1. who is at the keyboard ------------------------------------------------------------


@pytest.mark.parametrize(("case", "calls", "kind", "person"), [
    ("console", windows(FILE_TYPE_CHAR, console=True), "console", True),           # [GFT]
    ("IDE Run window", windows(FILE_TYPE_PIPE, console=False), "pipe", True),       # [GFT]
    ("NUL", windows(FILE_TYPE_CHAR, console=False), "null", False),                 # [NUL]
    ("closed handle", windows(handle=OSError(errno.EBADF, "Bad file descriptor")),
     "closed", False),                                                              # [OSF]
    ("pythonw, no stream", windows(handle=2**64 - 2), "closed", False),             # [OSF]
    ("INVALID_HANDLE_VALUE", windows(handle=2**64 - 1), "closed", False),           # [OSF]
    ("NULL handle", windows(handle=0), "closed", False),                            # [OSF]
    ("redirected file", windows(FILE_TYPE_DISK, console=False), "file", True),      # [GFT]
])
def test_windows_stdin_is_classified_by_its_handle(a_descriptor, case, calls, kind, person):
    assert platform.stdin_kind(a_descriptor, "win32", calls) == kind, case
    assert platform.person_at_keyboard(a_descriptor, "win32", calls) is person, case


def test_on_windows_fstat_is_not_asked(a_descriptor):
    """[FST]: os.fstat cannot tell a console from NUL on Windows (both S_IFCHR); the
    Windows branch asks GetFileType and GetConsoleMode instead."""
    asked: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fstat", lambda fd: asked.append(fd))
        console = platform.stdin_kind(a_descriptor, "win32", windows(FILE_TYPE_CHAR, True))
        nul = platform.stdin_kind(a_descriptor, "win32", windows(FILE_TYPE_CHAR, False))
    assert (console, nul, asked) == ("console", "null", [])


def test_posix_terminal_pipe_null_and_closed_for_real():
    master, slave = os.openpty()
    tty = os.fdopen(slave)
    read, write = os.pipe()
    pipe = os.fdopen(read)
    null = open(os.devnull)  # noqa: SIM115
    closed = io.StringIO()
    closed.close()
    try:
        assert platform.stdin_kind(tty, "linux") == "console"
        assert platform.stdin_kind(pipe, "linux") == "pipe"
        assert platform.stdin_kind(null, "linux") == "null"
        assert platform.stdin_kind(closed, "linux") == "closed"
        assert platform.stdin_kind(None, "linux") == "closed"
        assert platform.stdin_kind(io.StringIO("x"), "linux") == "replaced"
        assert [platform.person_at_keyboard(s, "linux") for s in (tty, pipe, null, closed,
                                                                   None)] == [
            True, True, False, False, False]
    finally:
        for stream in (tty, pipe, null):
            stream.close()
        os.close(master)
        os.close(write)


# -- 2. the 0.2.0 snippet and `login` at a Windows console ------------------------------------


class Console:
    """A Windows console with a person at it: what the bot prints goes to the person, who
    opens the sign-in URL, accepts, and types the address back into the console."""

    def __init__(self, sandbox) -> None:
        read, self._write = os.pipe()
        self.stdin = os.fdopen(read)
        self.sandbox = sandbox
        self.seen: list[str] = []

    def write(self, text: str) -> int:
        self.seen.append(text)
        for line in text.splitlines():
            if line.startswith(self.sandbox.authority_host) and "/authorize?" in line:
                answer = self.sandbox.consent_redirect(line)
                threading.Thread(target=os.write,
                                 args=(self._write, (answer + "\n").encode())).start()
        return len(text)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.stdin.close()
        os.close(self._write)


@contextlib.contextmanager
def at_a_windows_console(sandbox):
    """Inside the test body: pytest puts its own stdin and stdout back at every phase."""
    console = Console(sandbox)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(platform, "SYSTEM", "win32")
        patch.setattr(platform, "_WINDOWS", windows(FILE_TYPE_CHAR, console=True))
        patch.setattr(sys, "stdin", console.stdin)
        patch.setattr(sys, "stdout", console)
        try:
            yield console
        finally:
            console.close()


def test_the_020_snippet_asks_for_consent_at_a_windows_console(sandbox):
    with at_a_windows_console(sandbox) as console:
        service = MS365CredentialsPlugin(client_id=sandbox.app.client_id,
                                         client_secret=sandbox.app.secret)
        service.authenticate(scopes=["basic"])
        assert service.ms365_account.is_authenticated
    assert any("needs your consent once" in text for text in console.seen)


def test_login_accepts_a_windows_console(sandbox, monkeypatch, tmp_path):
    from botcity.plugins.ms365.credentials import cli

    monkeypatch.setenv("MS365_CLIENT_ID", sandbox.app.client_id)
    monkeypatch.setenv("MS365_CLIENT_SECRET", sandbox.app.secret)
    with at_a_windows_console(sandbox):
        assert cli.main(["login", "--scopes", "basic", "--quiet"]) == 0
    assert json.loads((tmp_path / "o365_token.txt").read_text())["RefreshToken"]


def test_windows_nul_is_nobody(sandbox, monkeypatch, a_descriptor):
    from botcity.plugins.ms365.credentials import AuthorizationRequired

    monkeypatch.setattr(platform, "SYSTEM", "win32")
    monkeypatch.setattr(platform, "_WINDOWS", windows(FILE_TYPE_CHAR, console=False))
    monkeypatch.setattr(sys, "stdin", a_descriptor)
    with pytest.raises(AuthorizationRequired,
                       match="No token is stored in .* yet. A person must sign in once"):
        MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret).authenticate()


# -- 3. writes that survive another process holding the file -----------------------------------


def sharing_violation() -> PermissionError:
    exc = PermissionError(errno.EACCES, "The process cannot access the file because it is "
                          "being used by another process")
    exc.winerror = 32  # type: ignore[attr-defined]  # [REP]
    return exc


def test_a_real_access_denied_is_raised_after_the_wait(tmp_path):
    # [REP] ERROR_ACCESS_DENIED (5) is also a read-only file's or a refusing access list's
    # answer: Windows does not say which, so it is waited out like a sharing violation
    denied = PermissionError(errno.EACCES, "Access is denied")
    denied.winerror = 5  # type: ignore[attr-defined]
    waits: list[float] = []

    def rename(source, target):
        raise denied

    with pytest.raises(PermissionError):
        platform.replace(tmp_path / "a", tmp_path / "b", rename=rename, sleep=waits.append)
    assert len(waits) > 3 and sum(waits) <= platform.REPLACE_SECONDS < sum(waits) + 0.4


def test_a_rename_refused_twice_then_allowed_saves(tmp_path):
    tries: list[int] = []

    def rename(source, target):
        tries.append(1)
        if len(tries) <= 2:
            raise sharing_violation()
        os.replace(source, target)

    FileText(tmp_path / "o365_token.txt", rename=rename).save('{"new": 1}')

    assert len(tries) == 3
    assert (tmp_path / "o365_token.txt").read_text() == '{"new": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["o365_token.txt"]


def test_a_rename_refused_for_ever_is_a_store_error_and_the_token_stays(tmp_path):
    target = tmp_path / "o365_token.txt"
    target.write_text('{"old": 1}')
    tries: list[int] = []

    def rename(source, target):
        tries.append(1)
        raise sharing_violation()

    with pytest.raises(StoreError, match="Another program keeps it open") as caught:
        FileText(target, rename=rename).save('{"new": 1}')
    assert "tried for 2 s" in str(caught.value) and "read-only" in str(caught.value)

    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["o365_token.txt"], "no temporary file"
    assert 3 <= len(tries) <= 10, "bounded: about two seconds of tries"


def test_another_permission_error_is_not_retried(tmp_path):
    tries: list[int] = []

    def rename(source, target):
        tries.append(1)
        exc = PermissionError(errno.EACCES, "Access is denied")
        exc.winerror = 1920  # type: ignore[attr-defined]  # the file cannot be accessed
        raise exc

    with pytest.raises(StoreError):
        FileText(tmp_path / "t.txt", rename=rename).save("{}")
    assert len(tries) == 1


# -- 4. a token file only its user can read -----------------------------------------------------


def test_on_windows_the_token_file_goes_through_the_owner_only_access_list(tmp_path,
                                                                          monkeypatch):
    protected: list[str] = []
    monkeypatch.setattr(platform, "SYSTEM", "win32")
    monkeypatch.setattr(platform, "_WINDOWS", windows(protected=protected))

    FileText(tmp_path / "o365_token.txt").save("{}")

    [path] = protected
    assert Path(path).parent == tmp_path and Path(path).name.endswith(".tmp"), (
        "the temporary file is protected before it becomes the token file")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_on_posix_the_token_file_is_0600(tmp_path):
    FileText(tmp_path / "o365_token.txt").save("{}")
    assert oct((tmp_path / "o365_token.txt").stat().st_mode & 0o777) == "0o600"


def test_copy_to_a_file_writes_a_plain_file_o365_reads(sandbox, tmp_path):
    from O365 import Account
    from O365.utils import FileSystemTokenBackend

    from botcity.plugins.ms365.credentials import cli

    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                           token_path=tmp_path / "mine.json").authenticate(
        consent=sandbox.consent_redirect)
    assert cli.main(["copy", "--from", f"file:{tmp_path / 'mine.json'}", "--to",
                     f"file:{tmp_path / 'plain' / 'o365_token.txt'}"]) == 0

    backend = FileSystemTokenBackend(token_path=tmp_path / "plain",
                                     token_filename="o365_token.txt")
    account = Account((sandbox.app.client_id, sandbox.app.secret), token_backend=backend)
    assert backend.load_token() and backend.get_refresh_token()
    assert account.con.token_backend.get_access_token()["secret"]


# -- 6. where per-user data lives ------------------------------------------------------------


def no_home() -> Path:
    raise RuntimeError("Could not determine home directory.")  # [DIR]


@pytest.mark.parametrize(("system", "environ", "home", "expected"), [
    ("win32", {"LOCALAPPDATA": r"C:\Users\bot\AppData\Local"}, no_home,
     Path(r"C:\Users\bot\AppData\Local") / "botcity-ms365"),
    ("win32", {"USERPROFILE": r"C:\Users\bot"}, no_home,
     Path(r"C:\Users\bot") / "AppData" / "Local" / "botcity-ms365"),
    ("darwin", {}, lambda: Path("/Users/bot"),
     Path("/Users/bot/Library/Application Support/botcity-ms365")),
    ("linux", {"XDG_DATA_HOME": "/srv/data"}, lambda: Path("/home/bot"),
     Path("/srv/data/botcity-ms365")),
    ("linux", {"XDG_DATA_HOME": "relative"}, lambda: Path("/home/bot"),
     Path("/home/bot/.local/share/botcity-ms365")),
    ("linux", {}, lambda: Path("/home/bot"), Path("/home/bot/.local/share/botcity-ms365")),
    ("linux", {"XDG_DATA_HOME": "/data"}, no_home, Path("/data/botcity-ms365")),
])
def test_the_data_folder_follows_each_platform_s_rules(system, environ, home, expected):
    assert platform.user_data_dir(environ, system, home) == expected


@pytest.mark.parametrize("system", ["win32", "darwin", "linux"])
def test_no_data_folder_is_an_error_only_when_one_is_needed(system):
    with pytest.raises(NoDataDir):
        platform.user_data_dir({}, system, no_home)


def test_ms365_fallback_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALAPPDATA", "C:\\x")
    monkeypatch.setenv("XDG_DATA_HOME", "/y")
    chosen = Settings.from_environ({"MS365_FALLBACK_DIR": str(tmp_path)}).fallback_dir
    assert fallback_folder(chosen) == tmp_path


# -- processes ------------------------------------------------------------------------------


@pytest.mark.parametrize(("waited", "alive"), [
    (WAIT_TIMEOUT, True), (WAIT_OBJECT_0, False), (None, False), (WAIT_FAILED, True),
])  # [PID]
def test_windows_asks_whether_the_process_is_signaled_not_kill(waited, alive):
    def never(pid):
        raise AssertionError("os.kill would terminate the process on Windows")

    assert platform.pid_alive(4242, "win32", wait=lambda pid: waited,
                              signal=never) is alive


def test_on_windows_a_process_that_exited_with_259_is_not_running():
    # [PID]: its exit code is STILL_ACTIVE (259), but its process object is signaled
    assert platform.WAIT_TIMEOUT == 0x102 and platform.WAIT_OBJECT_0 == 0
    assert platform.pid_alive(4242, "win32", wait=lambda pid: WAIT_OBJECT_0) is False


def test_posix_pids_for_real():
    assert platform.pid_alive(os.getpid(), "linux")
    assert not platform.pid_alive(2**22 + 12345, "linux")
    assert not platform.pid_alive(0, "linux")
