"""The ``ms365_sandbox`` fixture, as a bot developer uses it in their own test suite
(the package's pytest plugin, loaded by its ``pytest11`` entry point)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
import requests
from botcity.maestro import BotMaestroSDK, Column

from botcity.plugins.ms365.credentials import MS365CredentialsError, MS365CredentialsPlugin
from conftest import DEADLINE

pytest_plugins = ["pytester"]

INNER_TEST = '''
import json, os
from botcity.maestro import BotMaestroSDK
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

def test_a_bot_in_this_process(ms365_sandbox, tmp_path):
    box = ms365_sandbox
    with open(os.environ["URLS_FILE"], "w") as file:
        json.dump([box.sandbox.authority_host, box.sandbox.graph_url, box.maestro_server],
                  file)
    box.authorize("reports", scopes=["basic", "onedrive_all"])
    box.put_drive_file("/In/data.txt", b"hello")
    # the test's own process uses the sandbox: its environment is the fixture's env
    maestro = BotMaestroSDK(os.environ["BOTCITY_SERVER"], os.environ["BOTCITY_LOGIN"],
                            os.environ["BOTCITY_KEY"])
    maestro.login()
    service = MS365CredentialsPlugin(maestro=maestro, credential_label="reports")
    service.authenticate(["basic", "onedrive_all"])
    drive = service.ms365_account.storage().get_default_drive()
    drive.get_item_by_path("/In/data.txt").download(to_path=str(tmp_path))
    (tmp_path / "data.txt").write_bytes((tmp_path / "data.txt").read_bytes() + b" world")
    drive.get_root_folder().upload_file(item=str(tmp_path / "data.txt"))
    assert box.drive_file("/data.txt") == b"hello world"
    assert box.drive_file("/nothing.txt") is None
    assert set(box.credential("reports")) == {"client_id", "client_secret", "tenant_id",
                                              "token"}
'''


def test_the_fixture_comes_with_the_package_and_leaves_nothing_running(pytester, tmp_path,
                                                                       monkeypatch):
    urls_file = tmp_path / "urls.json"
    monkeypatch.setenv("URLS_FILE", str(urls_file))
    before = {t.ident for t in threading.enumerate()}
    pytester.makepyfile(test_inner=INNER_TEST)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    # the servers are gone: no thread of theirs, no port that still answers
    left = [t.name for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("sandbox-")]
    assert left == []
    for url in json.loads(urls_file.read_text()):
        parts = urlsplit(url)
        with pytest.raises(OSError):
            socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    # and the test's environment is as it was
    assert "BOTCITY_SERVER" not in os.environ or os.environ["BOTCITY_SERVER"] != json.loads(
        urls_file.read_text())[2]


def test_env_runs_a_local_file_bot_in_its_own_process(ms365_sandbox, tmp_path):
    token = ms365_sandbox.authorize_file(tmp_path / "bot", scopes=["basic"])
    assert token == tmp_path / "bot" / "o365_token.txt"
    (tmp_path / "bot.py").write_text(
        "import os, sys\n"
        "from botcity.plugins.ms365.credentials import MS365CredentialsPlugin\n"
        "service = MS365CredentialsPlugin(os.environ['MS365_CLIENT_ID'],\n"
        "    os.environ['MS365_CLIENT_SECRET'], token_path=sys.argv[1])\n"
        "print(service.ms365_account.get_current_user_data().user_principal_name)\n")
    ms365_sandbox.expire_access_tokens()  # the file's token too: this run renews it
    before = token.read_text()

    done = subprocess.run([sys.executable, str(tmp_path / "bot.py"), str(tmp_path / "bot")],
                          env={**os.environ, **ms365_sandbox.env}, capture_output=True,
                          text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ms365_sandbox.user
    assert len(ms365_sandbox.sandbox.token_requests("refresh_token")) == 1
    assert token.read_text() != before


def test_a_task_made_by_the_test_runs_with_its_parameters(ms365_sandbox, monkeypatch):
    maestro = BotMaestroSDK(ms365_sandbox.maestro_server, ms365_sandbox.maestro_login,
                            ms365_sandbox.maestro_key)
    maestro.login()
    task = maestro.create_task("invoices", {"month": "2026-11"})
    assert ms365_sandbox.task(task.id)["state"] == "START"

    argv = ms365_sandbox.runner_argv(task.id, {"retry": 1})
    task_id = argv[1]

    monkeypatch.setattr(sys, "argv", ["bot.py", *argv])
    runner = BotMaestroSDK.from_sys_args()  # as bot.py does with the Runner's arguments
    execution = runner.get_execution()
    assert execution.parameters == {"month": "2026-11", "retry": 1}
    runner.finish_task(task_id, status="PARTIALLY_COMPLETED", message="2 of 3",
                       total_items=3, processed_items=2, failed_items=1)
    state = ms365_sandbox.task(task_id)
    assert (state["state"], state["finish_status"], state["finish_message"]) == (
        "FINISHED", "PARTIALLY_COMPLETED", "2 of 3")
    assert (state["total_items"], state["processed_items"], state["failed_items"]) == (3, 2, 1)
    with pytest.raises(KeyError):
        ms365_sandbox.runner_argv(999)


def test_maestro_logs_and_errors_as_the_sdk_writes_them(ms365_sandbox):
    maestro = BotMaestroSDK(ms365_sandbox.maestro_server, ms365_sandbox.maestro_login,
                            ms365_sandbox.maestro_key)
    maestro.login()
    maestro.new_log("invoices", [Column("Invoice", "invoice", 100),
                                 Column("Total", "total", 50)])
    maestro.new_log_entry("invoices", {"invoice": "A-1", "total": "10.00"})
    assert maestro.get_log("invoices") == [{"Invoice": "A-1", "Total": "10.00"}]
    maestro.delete_log("invoices")
    with pytest.raises(ValueError, match="404"):
        maestro.get_log("invoices")
    task = maestro.create_task("invoices", {})
    maestro.alert(str(task.id), "Heads up", "Something to look at", "WARN")
    assert [(a["title"], a["message"]) for a in ms365_sandbox.alerts()] == [
        ("Heads up", "Something to look at")]


def test_faults(ms365_sandbox):
    ms365_sandbox.authorize("ms365")
    version = ms365_sandbox.maestro_server + "/api/v2/maestro/version"
    ms365_sandbox.fail_maestro(times=2, status=503)
    assert [requests.get(version, timeout=10).status_code for _ in range(3)] == [503, 503, 200]
    ms365_sandbox.fail_maestro(status=0)
    with pytest.raises(requests.ConnectionError):
        requests.get(version, timeout=10)

    ms365_sandbox.expire_client_secret()
    ms365_sandbox.expire_access_tokens()
    with pytest.raises(MS365CredentialsError, match="client secret has expired"):
        MS365CredentialsPlugin(maestro=_maestro(ms365_sandbox), credential_label="ms365"
                               ).authenticate()


def test_the_fixture_keeps_its_secrets_out_of_repr(ms365_sandbox):
    text = repr(ms365_sandbox)
    assert ms365_sandbox.user in text
    for secret in (ms365_sandbox.client_secret, ms365_sandbox.maestro_key):
        assert secret not in text


def test_messages_are_filed_as_graph_files_them(ms365_sandbox):
    ms365_sandbox.authorize("ms365", scopes=["basic", "message_send"])
    service = MS365CredentialsPlugin(maestro=_maestro(ms365_sandbox), credential_label="ms365")
    service.authenticate(["basic", "message_send"])
    mailbox = service.ms365_account.mailbox()
    for to, subject in ((ms365_sandbox.user, "to myself"), ("someone@example.com", "out")):
        message = mailbox.new_message()
        message.to.add(to)
        message.subject = subject
        message.send()
    assert [m["subject"] for m in ms365_sandbox.messages("sentitems")] == ["to myself", "out"]
    assert [m["subject"] for m in ms365_sandbox.messages()] == ["to myself"]
    assert ms365_sandbox.messages("drafts") == []
    with pytest.raises(ValueError, match="no folder 'Nope'.*Inbox, Junk Email"):
        ms365_sandbox.messages("Nope")


# -- mail a test puts in the mailbox ---------------------------------------------------------
INVOICE = b"%PDF-1.7 invoice 0042"


def _mail_reader(box):
    box.authorize("ms365", scopes=["basic", "mail_read_write"])
    service = MS365CredentialsPlugin(maestro=_maestro(box), credential_label="ms365")
    service.authenticate(["basic", "mail_read_write"])
    return service


def test_delivered_mail_reads_as_graph_serves_it_through_o365(ms365_sandbox, tmp_path):
    """Each field the test gives comes back through the real O365 mailbox API: folder,
    sender, subject, body, attachments and the read flag."""
    box = ms365_sandbox
    first = box.deliver_mail("Invoice 0042", "<p>Please pay <b>120.00</b></p>", html=True,
                             sender="billing@fabrikam.com", sender_name="Fabrikam Billing",
                             attachments={"invoice-0042.pdf": INVOICE})
    box.deliver_mail("Read already", "old news", is_read=True)
    box.deliver_mail("Filed", "in a folder of its own", folder="Inbox/Invoices")
    box.deliver_mail("Spam", "win", folder="junkemail")
    mailbox = _mail_reader(box).ms365_account.mailbox()

    inbox = mailbox.inbox_folder()
    unread = list(inbox.get_messages(query=mailbox.new_query().equals("isRead", False),
                                     download_attachments=True))
    assert [m.subject for m in unread] == ["Invoice 0042"]
    message = unread[0]
    assert message.object_id == first
    assert message.sender.address == "billing@fabrikam.com"
    assert message.sender.name == "Fabrikam Billing"
    assert "Please pay" in message.body and message.body_type == "html"
    assert message.to[0].address == box.user
    [attachment] = message.attachments
    assert attachment.name == "invoice-0042.pdf"
    assert attachment.save(str(tmp_path)) and (tmp_path / "invoice-0042.pdf").read_bytes() == (
        INVOICE)
    assert [m.subject for m in inbox.get_messages()] == ["Invoice 0042", "Read already"]
    filed = inbox.get_folder(folder_name="Invoices")
    assert [m.subject for m in filed.get_messages()] == ["Filed"]
    assert [m.subject for m in mailbox.junk_folder().get_messages()] == ["Spam"]

    assert message.mark_as_read()
    assert box.messages("inbox")[0]["isRead"] is True
    assert message.move(filed)
    # oldest (received) first, wherever it was filed
    assert [m["subject"] for m in box.messages("Inbox/Invoices")] == ["Invoice 0042", "Filed"]
    moved = box.messages("Inbox/Invoices")[0]
    assert moved["id"] != first, "a moved message gets a new id, as in Exchange"
    assert box.attachments(moved["id"]) == {"invoice-0042.pdf": INVOICE}
    assert [m["subject"] for m in box.messages()] == ["Read already"]


def test_the_outlook_plugin_finds_downloads_marks_and_moves_delivered_mail(ms365_sandbox,
                                                                           tmp_path):
    from botcity.plugins.ms365.outlook import MS365OutlookPlugin

    box = ms365_sandbox
    box.deliver_mail("Invoice 1", "see attached", attachments={"1.pdf": b"one"})
    box.deliver_mail("Newsletter", "no attachment")
    outlook = MS365OutlookPlugin(service_account=_mail_reader(box))
    outlook.create_folder("Processed")
    criteria = outlook.new_query_filter().equals("hasAttachments", True)
    [found] = outlook.search_messages(criteria=criteria, include_attachments=True,
                                      mark_read=True)
    outlook.download_attachments(found, str(tmp_path))
    outlook.move(found, "Processed")
    assert (tmp_path / "1.pdf").read_bytes() == b"one"
    [processed] = box.messages("Processed")
    assert processed["subject"] == "Invoice 1" and processed["isRead"] is True
    assert [m["subject"] for m in box.messages()] == ["Newsletter"]


def test_a_filter_the_sandbox_does_not_know_is_refused_as_graph_refuses_bad_ones(
        ms365_sandbox):
    mailbox = _mail_reader(ms365_sandbox).ms365_account.mailbox()
    with pytest.raises(requests.HTTPError, match="400"):
        list(mailbox.inbox_folder().get_messages(query="receivedDateTime ge 2026-01-01"))


def _maestro(box):
    maestro = BotMaestroSDK(box.maestro_server, box.maestro_login, box.maestro_key)
    maestro.login()
    return maestro


# -- the page a person sees ---------------------------------------------------------------
def _authorize_url(box) -> str:
    from urllib.parse import urlencode

    query = urlencode({"client_id": box.client_id, "response_type": "code",
                       "redirect_uri": "https://login.microsoftonline.com/common/oauth2/"
                                       "nativeclient",
                       "scope": "User.Read offline_access", "state": "s1"})
    return f"{box.sandbox.authority_host}/{box.tenant_id}/oauth2/v2.0/authorize?{query}"


def test_a_person_sees_an_accept_page_and_cancel_is_a_refusal(ms365_sandbox):
    ms365_sandbox.sandbox.tenant.consent = "ask"  # as `botcity-ms365 sandbox` runs it
    url = _authorize_url(ms365_sandbox)
    ca = ms365_sandbox.sandbox.ca_file
    page = requests.get(url, verify=ca, allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert "Accept</button>" in page.text and "User.Read" in page.text
    refused = requests.post(url, data={"decision": "cancel"}, verify=ca,
                            allow_redirects=False, timeout=10)
    assert refused.status_code == 302
    assert "error=access_denied" in refused.headers["Location"]
    assert "state=s1" in refused.headers["Location"]
    accepted = ms365_sandbox.consent(url)
    assert "code=" in accepted and "state=s1" in accepted


def test_the_accept_page_renders_in_a_browser(ms365_sandbox, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run must install it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    ms365_sandbox.sandbox.tenant.consent = "ask"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", _authorize_url(ms365_sandbox)],
        capture_output=True, text=True, timeout=DEADLINE)
    assert '<button id="accept" name="decision" value="accept">Accept</button>' in done.stdout
    assert ms365_sandbox.user in done.stdout
