"""The permissions sent to Microsoft are exactly the ones asked for."""

from __future__ import annotations

import pytest
from O365.connection import DEFAULT_SCOPES

from botcity.plugins.ms365.credentials import ConfigurationError, MS365CredentialsPlugin, Scopes
from botcity.plugins.ms365.credentials.scopes import resolve_permissions

RESERVED = {"openid", "profile", "offline_access"}


def asked_permissions(sandbox) -> set[str]:
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    scopes = authorize.query["scope"].split()
    assert RESERVED <= set(scopes), "msal adds the reserved scopes itself"
    prefixed = [s for s in scopes if s not in RESERVED]
    assert all(s.startswith("https://graph.microsoft.com/") for s in prefixed)
    return {s.removeprefix("https://graph.microsoft.com/") for s in prefixed}


@pytest.mark.parametrize("member", list(Scopes), ids=lambda m: m.name)
def test_authorize_asks_exactly_for_the_member(member, sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    plugin.authenticate([member], consent=sandbox.consent_redirect)

    assert asked_permissions(sandbox) == set(member.permissions) | {"User.Read"}
    assert plugin.is_authenticated, "Microsoft accepted every permission"


@pytest.mark.parametrize("member", list(Scopes), ids=lambda m: m.name)
def test_members_agree_with_o365s_helper_names(member):
    """Where the member's value is an O365 helper name, O365 means the same permissions."""
    assert member.value in DEFAULT_SCOPES, f"O365 2.1 has no helper {member.value!r}"
    assert set(DEFAULT_SCOPES[member.value]) == set(member.permissions)


def test_the_020_bugs_are_gone():
    assert Scopes.SITES_READ_WRITE_ALL.permissions == ("Sites.ReadWrite.All",)
    assert resolve_permissions(None) == {"User.Read"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["Calendars.ReadWrite"], {"Calendars.ReadWrite"}),
        ("Calendars.ReadWrite", {"Calendars.ReadWrite"}),
        (["https://graph.microsoft.com/Mail.Read"], {"Mail.Read"}),
        (["mail_read_write"], {"Mail.ReadWrite", "Mail.Send"}),
        (["MAIL_SEND", " files_read "], {"Mail.Send", "Files.Read.All"}),
        (["message_all"], {"Mail.ReadWrite", "Mail.Send"}),
        (Scopes.TASKS_READ_WRITE, {"Tasks.ReadWrite"}),
        (["offline_access", "openid"], set()),
        ((s for s in [Scopes.MAIL_READ]), {"Mail.Read"}),
    ],
)
def test_accepted_spellings(given, expected):
    assert resolve_permissions(given) == frozenset(expected | {"User.Read"})


@pytest.mark.parametrize("bad", ["mail_reed", "sharepoint_dl", "", "Files", 42, None])
def test_unknown_scopes_are_refused_with_the_valid_forms(bad):
    with pytest.raises(ConfigurationError) as caught:
        resolve_permissions([bad])
    text = str(caught.value)
    assert "Scopes" in text


def test_raw_permission_reaches_microsoft(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(["Calendars.ReadWrite", Scopes.CONTACTS_READ],
                        consent=sandbox.consent_redirect)
    assert asked_permissions(sandbox) == {"Calendars.ReadWrite", "Contacts.Read", "User.Read"}
