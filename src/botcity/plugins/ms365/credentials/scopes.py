"""Which Microsoft Graph permissions a bot asks for.

``Scopes`` keeps the eight member names of 0.2.0 and adds the ones bots need next.
:func:`resolve_permissions` turns what a user passes (members, member names such as
``"mail_read_write"``, O365 helper names such as ``"message_all"``, or raw Graph
permissions such as ``"Calendars.ReadWrite"``) into Graph permission names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from enum import Enum

from .errors import ConfigurationError


class Scopes(str, Enum):
    """Permission sets a bot can ask for. Values are O365's helper names."""

    BASIC = "basic"
    FILES_READ = "onedrive"
    FILES_READ_WRITE_ALL = "onedrive_all"
    SITES_READ_ALL = "sharepoint"
    SITES_READ_WRITE_ALL = "sharepoint_all"
    MAIL_READ = "mailbox"
    MAIL_SEND = "message_send"
    MAIL_READ_WRITE = "message_all"
    MAIL_READ_SHARED = "mailbox_shared"
    MAIL_SEND_SHARED = "message_send_shared"
    MAIL_READ_WRITE_SHARED = "message_all_shared"
    MAILBOX_SETTINGS = "mailbox_settings"
    CALENDARS_READ = "calendar"
    CALENDARS_READ_WRITE = "calendar_all"
    CALENDARS_READ_SHARED = "calendar_shared"
    CALENDARS_READ_WRITE_SHARED = "calendar_shared_all"
    CONTACTS_READ = "address_book"
    CONTACTS_READ_WRITE = "address_book_all"
    CONTACTS_READ_SHARED = "address_book_shared"
    TASKS_READ = "tasks"
    TASKS_READ_WRITE = "tasks_all"
    USERS_READ_BASIC_ALL = "users"
    PRESENCE_READ = "presence"

    @property
    def permissions(self) -> tuple[str, ...]:
        """The Microsoft Graph (delegated) permissions this member stands for."""
        return _PERMISSIONS[self]


_PERMISSIONS: dict[Scopes, tuple[str, ...]] = {
    Scopes.BASIC: ("User.Read",),
    Scopes.FILES_READ: ("Files.Read.All",),
    Scopes.FILES_READ_WRITE_ALL: ("Files.ReadWrite.All",),
    Scopes.SITES_READ_ALL: ("Sites.Read.All",),
    Scopes.SITES_READ_WRITE_ALL: ("Sites.ReadWrite.All",),
    Scopes.MAIL_READ: ("Mail.Read",),
    Scopes.MAIL_SEND: ("Mail.Send",),
    Scopes.MAIL_READ_WRITE: ("Mail.ReadWrite", "Mail.Send"),
    Scopes.MAIL_READ_SHARED: ("Mail.Read.Shared",),
    Scopes.MAIL_SEND_SHARED: ("Mail.Send.Shared",),
    Scopes.MAIL_READ_WRITE_SHARED: ("Mail.ReadWrite.Shared", "Mail.Send.Shared"),
    Scopes.MAILBOX_SETTINGS: ("MailboxSettings.ReadWrite",),
    Scopes.CALENDARS_READ: ("Calendars.Read",),
    Scopes.CALENDARS_READ_WRITE: ("Calendars.ReadWrite",),
    Scopes.CALENDARS_READ_SHARED: ("Calendars.Read.Shared",),
    Scopes.CALENDARS_READ_WRITE_SHARED: ("Calendars.ReadWrite.Shared",),
    Scopes.CONTACTS_READ: ("Contacts.Read",),
    Scopes.CONTACTS_READ_WRITE: ("Contacts.ReadWrite",),
    Scopes.CONTACTS_READ_SHARED: ("Contacts.Read.Shared",),
    Scopes.TASKS_READ: ("Tasks.Read",),
    Scopes.TASKS_READ_WRITE: ("Tasks.ReadWrite",),
    Scopes.USERS_READ_BASIC_ALL: ("User.ReadBasic.All",),
    Scopes.PRESENCE_READ: ("Presence.Read",),
}

#: msal adds these itself; a user who passes them gets them dropped, not doubled.
RESERVED = frozenset({"openid", "profile", "offline_access", "email"})

#: Microsoft's casing of the Graph permissions bots use. Azure AD compares permissions
#: without regard to case and answers in its own casing; so does the plugin.
_CASING = {p.lower(): p for p in (
    *(p for permissions in _PERMISSIONS.values() for p in permissions),
    "User.Read.All", "User.ReadWrite", "Mail.ReadBasic", "Files.Read", "Files.ReadWrite",
    "Sites.Manage.All", "Notes.Read", "Notes.ReadWrite", "Notes.ReadWrite.All",
    "Contacts.ReadWrite.Shared", "Group.Read.All", "Chat.Read", "Chat.ReadWrite",
    "ChannelMessage.Send", "Team.ReadBasic.All", "offline_access", "openid", "profile",
    "email",
)}

_RAW_PERMISSION = re.compile(r"[A-Za-z]+(\.[A-Za-z]+)+")
_BY_NAME = {m.name.lower(): m for m in Scopes} | {m.value: m for m in Scopes}


def permission_name(scope: str) -> str:
    """``https://graph.microsoft.com/mail.read`` -> ``Mail.Read``: without the resource,
    in Microsoft's casing when the permission is one the plugin knows."""
    name = scope.rsplit("/", 1)[-1] if "://" in scope else scope
    return _CASING.get(name.lower(), name)


def missing_permissions(wanted: Iterable[str], granted: Iterable[str]) -> frozenset[str]:
    """The permissions of ``wanted`` that ``granted`` lacks, compared as Azure AD compares
    them (without regard to case)."""
    have = {g.lower() for g in granted}
    return frozenset(w for w in wanted if w.lower() not in have)


def scope_names(permissions: Iterable[str]) -> tuple[str, ...]:
    """How ``botcity-ms365 login --scopes`` spells ``permissions``: the ``Scopes`` names
    (``mail_read_write`` for ``Mail.ReadWrite`` with ``Mail.Send``), ``basic`` first, then
    the Graph permissions no member stands for, as they are."""
    left = {p.lower(): p for p in permissions}
    names = []
    for member in sorted(Scopes, key=lambda m: (-len(m.permissions), m.name)):
        wanted = {p.lower() for p in member.permissions}
        if wanted <= set(left):
            names.append(member.name.lower())
            for permission in wanted:
                del left[permission]
    return (*sorted(names, key=lambda n: (n != "basic", n)), *sorted(left.values()))


def _one(item: object) -> tuple[str, ...]:
    if isinstance(item, Scopes):
        return item.permissions
    if not isinstance(item, str):
        raise ConfigurationError(
            f"A scope must be a Scopes member or a string, not {type(item).__name__}."
        )
    text = item.strip()
    member = _BY_NAME.get(text.lower())
    if member is not None:
        return member.permissions
    name = permission_name(text)
    if name.lower() in RESERVED:
        return ()
    if _RAW_PERMISSION.fullmatch(name):
        return (name,)
    close = difflib.get_close_matches(text.lower(), [m.name.lower() for m in Scopes], n=1)
    raise ConfigurationError(
        f"Unknown scope {text!r}" + (f" (did you mean {close[0]}?)" if close else "") + ". "
        "Use a Scopes member (for example Scopes.MAIL_READ_WRITE), its name in lower case "
        "('mail_read_write') or a Microsoft Graph permission such as 'Calendars.ReadWrite'."
    )


def resolve_permissions(scopes: Iterable[object] | Scopes | str | None) -> frozenset[str]:
    """Graph permissions for ``scopes``; ``User.Read`` (BASIC) is always included, as in
    0.2.0, because the plugin identifies the signed-in user with it."""
    if scopes is None:
        items: list[object] = []
    elif isinstance(scopes, str):  # also a single Scopes member
        items = [scopes]
    else:
        items = list(scopes)
    found = {p for item in items for p in _one(item)}
    return frozenset(found | set(Scopes.BASIC.permissions))
