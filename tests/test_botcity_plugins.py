"""The published BotCity plugins (installed from PyPI beside this package) take their
account from this plugin and work against the sandbox's Graph."""

from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

LABEL = "ms365"


@pytest.fixture
def service(sandbox, maestro):
    """The credentials plugin on a Maestro credential, as a deployed bot has it."""
    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate([Scopes.MAIL_READ_WRITE, Scopes.FILES_READ_WRITE_ALL],
                        consent=sandbox.consent_redirect)
    sandbox.requests.clear()
    return plugin


def test_this_package_satisfies_their_dependency():
    assert version("botcity-ms365-credentials-plugin") == "1.0.0"
    for plugin in ("onedrive", "outlook", "excel"):
        assert version(f"botcity-ms365-{plugin}-plugin")


def test_outlook_sends_a_message_and_finds_it_by_subject(sandbox, service):
    from botcity.plugins.ms365.outlook import MS365OutlookPlugin

    outlook = MS365OutlookPlugin(service_account=service)
    outlook.send_message(subject="Invoice 4711 processed", text_content="All good.",
                         to_addrs=[sandbox.tenant.user.upn])

    found = outlook.search_messages(criteria="subject eq 'Invoice 4711 processed'", timeout=5)

    assert [m.subject for m in found] == ["Invoice 4711 processed"]
    assert found[0].body == "All good."
    assert len(sandbox.requests("graph", path_contains="/me/sendMail")) == 1
    assert sandbox.requests("identity") == [], "the stored token served"


def test_onedrive_uploads_lists_and_downloads_byte_for_byte(sandbox, service, tmp_path):
    from botcity.plugins.ms365.onedrive import MS365OneDrivePlugin

    content = os.urandom(20_000) + "ção, 日本".encode()
    (tmp_path / "report.bin").write_bytes(content)
    onedrive = MS365OneDrivePlugin(service_account=service)

    onedrive.upload_file(str(tmp_path / "report.bin"))
    names = [item.name for item in onedrive.get_files()]
    (tmp_path / "back").mkdir()
    onedrive.download_file("report.bin", str(tmp_path / "back"))

    assert "report.bin" in names
    assert (tmp_path / "back" / "report.bin").read_bytes() == content


def test_excel_reads_a_range(sandbox, service):
    from botcity.plugins.ms365.excel import MS365ExcelPlugin

    sandbox.graph.put_workbook("Orders.xlsx", {"Orders": [["item", "qty"], ["apple", 3],
                                                          ["pear", 5]]})
    excel = MS365ExcelPlugin(service_account=service)
    excel.get_excel_file("Orders.xlsx", active_sheet="Orders")

    assert excel.get_range("A1:B3") == [["item", "qty"], ["apple", "3"], ["pear", "5"]]
    assert [sheet.name for sheet in excel.list_sheets()] == ["Orders"]


def test_a_missing_permission_shows_as_graphs_403(sandbox, maestro):
    """A token without Mail.Send: Graph refuses, as Microsoft does."""
    import requests
    from botcity.plugins.ms365.outlook import MS365OutlookPlugin

    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate([Scopes.MAIL_READ], consent=sandbox.consent_redirect)
    with pytest.raises(requests.HTTPError, match="403"):
        MS365OutlookPlugin(service_account=plugin).send_message(
            subject="x", text_content="y", to_addrs=[sandbox.tenant.user.upn])
