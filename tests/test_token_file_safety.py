"""The token file and its temporary files are never readable by others, and never left
behind (issue 25, items 5 to 7). Windows is the injected Win32 calls of ``platform.py``.

Sources:
[MKS] tempfile.mkstemp: "The file is readable and writable only by the creating user ID"
      (Doc/library/tempfile.rst); Lib/tempfile.py opens it with mode 0o600. On Windows
      that mode only sets the read-only attribute (Doc/library/os.rst, os.chmod: "Windows
      only supports setting the file's read-only flag"), so the file gets its folder's
      inherited access list until SetFileSecurityW replaces it.
[EPERM] chmod of a file the caller does not own fails with EPERM (POSIX chmod(2)), which
      Python raises as PermissionError(errno.EPERM, "Operation not permitted").
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import platform
from botcity.plugins.ms365.credentials.persistence import ORPHAN_SECONDS, FileText
from botcity.plugins.ms365.credentials.platform import FILE_TYPE_CHAR, WindowsCalls


def windows(protect) -> WindowsCalls:
    return WindowsCalls(handle=lambda fd: 0x1C, file_type=lambda h: FILE_TYPE_CHAR,
                        console_mode=lambda h: True, protect=protect)


# -- 5. leftovers of a process whose pid is in use again --------------------------------


def test_an_old_temporary_file_goes_even_when_its_pid_runs_again(tmp_path):
    # a container's bot is pid 1 (or 7...) at every run: the leftover of a killed run
    # names this very process
    leftover = tmp_path / f".o365_token.txt.{os.getpid()}.abcd1234.tmp"
    leftover.write_text("a refresh token")
    old = time.time() - ORPHAN_SECONDS - 5
    os.utime(leftover, (old, old))
    under_way = tmp_path / f".o365_token.txt.{os.getpid()}.efgh5678.tmp"
    under_way.write_text("another thread's save, under way")

    FileText(tmp_path / "o365_token.txt").save("{}")

    assert not leftover.exists(), "a minute-old temporary file is no save under way"
    assert under_way.exists(), "a recent one may be another thread's save"


def test_clean_removes_old_files_whatever_alive_says(tmp_path):
    leftover = tmp_path / ".o365_token.txt.1.abcd1234.tmp"
    leftover.write_text("a refresh token")
    old = time.time() - 2 * ORPHAN_SECONDS
    os.utime(leftover, (old, old))

    assert FileText(tmp_path / "o365_token.txt").clean(alive=lambda pid: True) == 1
    assert not leftover.exists()


# -- 6. a 0.2.0 token file readable by others -------------------------------------------


def test_loading_a_0644_token_file_makes_it_0600(tmp_path):
    path = tmp_path / "o365_token.txt"
    path.write_text("{}")
    path.chmod(0o644)  # as 0.2.0 (O365's open("w")) left it

    assert FileText(path).load() == "{}"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_file_that_cannot_be_tightened_is_logged_not_an_error(tmp_path, monkeypatch,
                                                                       caplog):
    path = tmp_path / "o365_token.txt"
    path.write_text("{}")
    path.chmod(0o644)

    def not_ours(path, system=None, windows=None):
        raise PermissionError(errno.EPERM, "Operation not permitted")  # [EPERM]

    monkeypatch.setattr(platform, "protect", not_ours)
    with caplog.at_level(logging.WARNING):
        assert FileText(path).load() == "{}"

    assert "Operation not permitted" in caplog.text and "chmod 600" in caplog.text
    assert str(path.resolve()) in caplog.text


def test_on_windows_loading_sets_the_owner_only_access_list(tmp_path, monkeypatch):
    path = tmp_path / "o365_token.txt"
    path.write_text("{}")
    protected: list[str] = []
    monkeypatch.setattr(platform, "SYSTEM", "win32")
    monkeypatch.setattr(platform, "_WINDOWS", windows(protected.append))

    FileText(path).load()

    assert protected == [str(path)]


# -- 7. protected before the first byte ---------------------------------------------------


def test_on_windows_the_temporary_file_is_protected_before_the_token_is_written(
        tmp_path, monkeypatch):
    sizes: list[int] = []
    monkeypatch.setattr(platform, "SYSTEM", "win32")
    monkeypatch.setattr(platform, "_WINDOWS",
                        windows(lambda path: sizes.append(os.path.getsize(path))))

    FileText(tmp_path / "o365_token.txt").save('{"a": "refresh token"}')

    assert sizes == [0], "the access list is set while the file is still empty"
    assert (tmp_path / "o365_token.txt").read_text() == '{"a": "refresh token"}'


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_on_posix_the_temporary_file_is_0600_from_its_creation(tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    real = platform.protect

    def spy(path, system=None, windows=None):
        seen.append((stat.S_IMODE(os.stat(path).st_mode), os.path.getsize(path)))
        real(path, system, windows)

    monkeypatch.setattr(platform, "protect", spy)
    FileText(tmp_path / "o365_token.txt").save("{}")

    assert seen == [(0o600, 0)]  # [MKS]
    assert not any(p.name.endswith(".tmp") for p in Path(tmp_path).iterdir())


def test_a_0600_file_is_left_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / "o365_token.txt"
    path.write_text("{}")
    path.chmod(0o600)
    assert platform.tighten(path, "linux") is False
