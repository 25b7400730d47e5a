"""Where the stored token's text lives, apart from what it means (``tokens.py``) and from
O365's token backend (``stores.py``).

Each kind of place reads, writes and removes text, and says where it is without a secret:

- :class:`FileText`: a local file, written atomically (a temporary file beside it, made
  readable only by its user before the first byte, renamed over it); a file an older
  version left readable by others is tightened when it is loaded; a temporary file that a
  killed process left is removed at the next save;
- :class:`MaestroText`: one key of a BotCity Maestro credential;
- :class:`Fallback`: a token Maestro could not take, kept on this machine for one
  workspace, label and key until Maestro can take it.

A place other processes share also keeps :class:`Note` entries beside the text: small
entries a bot *adds* without rewriting anything else (a Maestro key of their own, a file
of their own), so that no note can undo another writer's change. The token's lifecycle
uses them to agree on one renewer (``lifecycle.py``); a save of the text drops the notes
it makes obsolete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from . import platform
from ._maestro import MaestroVault, check_name, edits_keys
from .errors import StoreError, TokenFormatError
from .settings import ENV_FALLBACK_DIR
from .tokens import parse_token

log = logging.getLogger(__name__)

#: A temporary file this old is abandoned, whatever process id its name carries: a save
#: takes milliseconds, and a container's bot runs as the same pid every time, so a "live"
#: pid in the name of an old file is a reused one.
ORPHAN_SECONDS = 60.0


#: The kinds of note: a bot renews generation ``generation`` for the others until ``at``;
#: it gave that up; Microsoft refused its renewal for want of a person; it waited on
#: another's renewal of ``generation`` (several bots started together); and the renewed
#: token that follows generation ``generation`` (its ``text``).
CLAIM, RELEASE, REFUSED, HERD, NEXT = "claim", "release", "refused", "herd", "next"
_NOTE = re.compile(r"\.(claim|release|refused|herd|next)\.(\d{1,15})\.([0-9a-f]{1,32})")
_CODE = re.compile(r"AADSTS\d{1,9}")


class Note(NamedTuple):
    """An entry beside the token (see the module's docstring); ``by`` is a bot's name in
    notes, ``at`` a time (epoch seconds) whose meaning the kind gives; a *next* note holds
    a token's ``text`` instead, a *refused* one Microsoft's AADSTS code when it gave one."""

    kind: str
    generation: int
    by: str
    at: float = 0.0
    text: str = ""

    def value(self) -> str:
        """What the note's entry holds."""
        if self.kind == NEXT:
            return self.text
        return f"{self.at!r} {self.text}" if self.text else repr(self.at)

    def __repr__(self) -> str:  # a next note's text is a token: never shown
        return f"Note({self.kind}, {self.generation}, {self.by}, at={self.at})"

    def name(self, base: str) -> str:
        return f"{base}.{self.kind}.{self.generation}.{self.by}"

    @staticmethod
    def parse(base: str, name: str, value: str) -> Note | None:
        """The note named ``name`` beside ``base`` holding ``value`` (None: not a note)."""
        if not name.startswith(base):
            return None
        match = _NOTE.fullmatch(name[len(base):])
        if match is None:
            return None
        if match.group(1) == NEXT:
            return Note(NEXT, int(match.group(2)), match.group(3), text=value or "")
        when, _, code = (value or "0").partition(" ")
        try:
            at = float(when)
        except ValueError:
            return None
        code = code if match.group(1) == REFUSED and _CODE.fullmatch(code) else ""
        if not 0 <= at < 2 ** 33:
            return None
        return Note(match.group(1), int(match.group(2)), match.group(3), at, code)


def obsolete(notes: list[Note], generation: int) -> set[Note]:
    """The notes a save of ``generation`` leaves no use for: those of older generations."""
    return {n for n in notes if n.generation < generation}


class TextPersistence:
    """A place that holds the token's text."""

    #: Where it is, for logs and messages (never a secret).
    location = "?"
    #: What a person removes to start over, for messages.
    removal = "remove it"
    #: Whether a renewed token is added beside the text (a *next* note) rather than
    #: written over it: places that several machines share, slowly and without a
    #: conditional write (Maestro).
    takes_renewals = False
    #: Whether the text can be written over (a Maestro older than 3.0.0 can only add).
    rewritable = True

    def load(self, max_age: float | None = None) -> str | None:
        """The text held now (None: none); ``max_age``: an earlier read this recent will
        do (for places that are slow to read)."""
        raise NotImplementedError

    def save(self, text: str, *, generation: int | None = None) -> None:
        """Hold ``text``, the token of ``generation`` (given: the notes it makes obsolete
        go in the same write)."""
        raise NotImplementedError

    def remove(self) -> bool:
        """Remove the text; False when there was none."""
        raise NotImplementedError

    def notes(self) -> list[Note]:
        """The notes beside the text as the last load saw them, in the order the place
        keeps them (the order they were added in); none for places nobody shares."""
        return []

    def add_note(self, note: Note) -> None:
        """Add ``note`` without rewriting anything else (places nobody shares keep none)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location})"


class MemoryText(TextPersistence):
    """Nothing kept (app-only tokens are renewed without a person: nothing worth storing)."""

    location = "memory (app-only tokens are not stored)"

    def load(self, max_age: float | None = None) -> str | None:
        return None

    def save(self, text: str, *, generation: int | None = None) -> None:
        return None

    def remove(self) -> bool:
        return False


class FileText(TextPersistence):
    """A local file. A save creates a temporary file in the same folder (its name carries
    the writer's process id), makes it readable by its user only (:func:`.platform.protect`:
    mode 0600 on POSIX, where ``mkstemp`` creates it so already; an owner-only access list
    on Windows, where it would inherit the folder's) before writing a byte to it, and
    renames it over the file, waiting out a moment another process has it open (Windows):
    the file is always the old or the new text, never half of one.

    The first load tightens a file that others may read (a 0.2.0 file is 0644) the same
    way; a file that cannot be tightened (another user's) is only logged."""

    def __init__(self, path: Path, rename: Callable[[Any, Any], None] = os.replace) -> None:
        self.path = path
        self.location = f"file {path.resolve()}"
        self.removal = f"delete {path.resolve()}"
        self._rename = rename  # the OS's rename (tests pass one that fails)
        self._tightened = False

    def load(self, max_age: float | None = None) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise TokenFormatError(
                f"The token in {self.location} is not UTF-8 text. It was left as it is: "
                f"{self.removal} and authorize again."
            ) from None
        except OSError as exc:
            raise StoreError(f"Cannot read {self.location}: {exc.strerror or exc}.") from None
        if not self._tightened:
            self._tightened = True
            self._tighten()
        return text

    def _tighten(self) -> None:
        """Make the file readable by its user only, if others may read it (best effort)."""
        try:
            if platform.tighten(self.path):
                log.debug("Made %s readable by its user only", self.location)
        except OSError as exc:
            log.warning("Could not make %s readable by its user only (%s): it holds a "
                        "refresh token; its owner should restrict it (POSIX: chmod 600; "
                        "Windows: its Security properties)", self.location,
                        exc.strerror or type(exc).__name__)

    def save(self, text: str, *, generation: int | None = None) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.{os.getpid()}.",
                                       suffix=".tmp")
        except OSError as exc:
            raise StoreError(f"Cannot write {self.location}: {exc.strerror or exc}.") from None
        try:
            try:
                platform.protect(tmp)  # before the first byte of the token is written
            except BaseException:
                os.close(fd)
                raise
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            platform.replace(tmp, self.path, rename=self._rename)
        except PermissionError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(
                f"Cannot write {self.location}: {exc.strerror or exc} (tried for "
                f"{platform.REPLACE_SECONDS:g} s). Another program keeps it open (another "
                "bot reading it, an antivirus, a sync client such as OneDrive), or this "
                "user may not write it (a read-only file, its access list) or its folder; "
                "the token stored there is unchanged.") from None
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StoreError(f"Cannot write {self.location}: {exc.strerror or exc}.") from None
        self.clean()
        if generation is not None:
            for note in obsolete(self.notes(), generation):
                (self.path.parent / note.name(f".{self.path.name}")).unlink(missing_ok=True)

    def notes(self) -> list[Note]:
        """The note files beside the token file (``.o365_token.txt.claim.3.ab12``), in the
        order they were made (their modification time)."""
        base = f".{self.path.name}"
        found: list[tuple[int, str, Note]] = []
        try:
            candidates = [p for p in self.path.parent.iterdir() if p.name.startswith(base)]
        except OSError:
            return []
        for candidate in candidates:
            try:
                note = Note.parse(base, candidate.name, candidate.read_text(encoding="utf-8"))
                made = candidate.stat().st_mtime_ns
            except (OSError, ValueError):
                continue
            if note is not None:
                found.append((made, candidate.name, note))
        return [note for _, _, note in sorted(found)]

    def add_note(self, note: Note) -> None:
        path = self.path.parent / note.name(f".{self.path.name}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(note.value())
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(f"Cannot write beside {self.location}: "
                             f"{exc.strerror or exc}.") from None

    def remove(self) -> bool:
        try:
            self.path.unlink()
            removed = True
        except FileNotFoundError:
            removed = False
        except OSError as exc:
            raise StoreError(f"Cannot delete {self.location}: {exc.strerror or exc}.") from None
        self.clean()
        return removed

    def clean(self, alive: Callable[[int], bool] = platform.pid_alive) -> int:
        """Remove the temporary files that saves of killed processes left beside the file
        (they hold tokens); return how many: those of a process that no longer runs, and
        any older than :data:`ORPHAN_SECONDS` whatever its process id (a container's bot
        has the same pid at every run, so its own leftovers name a live process). A
        recent one of a running process is left alone, this one's included (another
        thread may be saving)."""
        pattern = re.compile(re.escape(f".{self.path.name}.") + r"(?:(\d+)\.)?[^.]*\.tmp")
        removed = 0
        try:
            candidates = list(self.path.parent.iterdir())
        except OSError:
            return 0
        for candidate in candidates:
            match = pattern.fullmatch(candidate.name)
            if match is None:
                continue
            pid = int(match.group(1)) if match.group(1) else None
            try:
                stale = (time.time() - candidate.stat().st_mtime > ORPHAN_SECONDS) or (
                    pid is not None and not alive(pid))
                if stale:
                    candidate.unlink()
                    removed += 1
            except OSError:
                continue
        return removed


class MaestroText(TextPersistence):
    """Key ``key`` of the BotCity Maestro credential ``label``; the other keys of the set
    are never changed (see :class:`MaestroVault`). A renewed token is added as a key of
    its own (``<key>.next.<generation>.<bot>``, a *next* note): Maestro's only write that
    sends no other key, so it cannot undo an operator's edit, a newer token or a logout."""

    takes_renewals = True

    def __init__(self, vault: MaestroVault, label: str, key: str = "token") -> None:
        self.vault = vault
        self.label = check_name("label", label)
        self.key = check_name("key", key)
        self.location = f"Maestro credential '{label}' key '{key}' at {vault.server}"
        self.removal = f"delete key '{key}' of the Maestro credential '{label}'"

    @property
    def rewritable(self) -> bool:  # type: ignore[override]
        return edits_keys(self.vault.version)

    def load(self, max_age: float | None = None) -> str | None:
        values = self.vault.read(self.label, max_age=max_age)
        return None if values is None else values.get(self.key)

    def save(self, text: str, *, generation: int | None = None) -> None:
        if generation is None:
            self.vault.write(self.label, self.key, text)
            return
        drop = {note.name(self.key) for note in obsolete(self.notes(), generation)}
        self.vault.write(self.label, self.key, text, drop=drop.__contains__)

    def notes(self) -> list[Note]:
        """The keys ``<key>.claim.<generation>.<bot>`` (and the other kinds) of the set as
        last read, in the order Maestro lists them."""
        values = self.vault.read(self.label, max_age=None)
        notes = (Note.parse(self.key, name, value) for name, value in (values or {}).items())
        return [note for note in notes if note is not None]

    def add_note(self, note: Note) -> None:
        self.vault.add(self.label, note.name(self.key), note.value())

    def remove(self) -> bool:
        """Remove the token and every note beside it (renewed tokens among them)."""
        if self.load(max_age=0) is None:
            return False
        notes = {note.name(self.key) for note in self.notes()}
        self.vault.remove(self.label, self.key, also=notes.__contains__)
        return True


def fallback_folder(chosen: str | None = None) -> Path:
    """``chosen`` (``MS365_FALLBACK_DIR``), else the platform's per-user data folder."""
    return Path(chosen) if chosen else platform.user_data_dir()


class Fallback:
    """A refreshed token Maestro could not take, kept on this machine until it can: one
    file per workspace (server and organization), label and key, named by a hash of them,
    holding only the token of the app and account it was refreshed for.

    The folder is looked up when the fallback is first needed: a machine without a home
    folder only fails then, and a fallback that cannot be written is a warning (the token
    is still in the bot's memory)."""

    def __init__(self, server: str, organization: str, label: str, key: str,
                 folder: Callable[[], Path] = fallback_folder) -> None:
        self._id = hashlib.sha256(f"{server}|{organization}|{label}|{key}".encode()
                                  ).hexdigest()[:16]
        self._folder = folder
        self._file: FileText | None = None

    @property
    def file(self) -> FileText:
        if self._file is None:
            try:
                folder = self._folder()
            except platform.NoDataDir as exc:
                raise StoreError(f"There is no folder to keep the token in on this machine "
                                 f"({exc}): set {ENV_FALLBACK_DIR}.") from None
            self._file = FileText(folder / f"fallback-{self._id}.json")
        return self._file

    @property
    def where(self) -> str:
        try:
            return str(self.file.path)
        except StoreError:
            return f"(no folder: set {ENV_FALLBACK_DIR})"

    def keep(self, text: str) -> bool:
        """Keep ``text``; False (and a warning) when it cannot be written."""
        try:
            self.file.save(text)
        except StoreError as exc:
            log.warning("Could not keep the token on this machine either (%s); it stays in "
                        "this bot's memory only", exc)
            return False
        return True

    def kept(self) -> dict[str, Any] | None:
        """The token kept here (None: none, or unreadable, which is no fallback)."""
        try:
            text = self.file.load()
            return parse_token(text, self.file.location) if text and text.strip() else None
        except StoreError:
            return None

    def discard(self) -> None:
        """Remove the kept token (never raises: a file that cannot go is only logged)."""
        try:
            file = self.file
        except StoreError:
            return  # no folder: nothing was kept
        if not file.path.exists():
            return
        try:
            file.remove()
        except StoreError as exc:
            log.warning("Could not remove the token kept on this machine (%s)", exc)
