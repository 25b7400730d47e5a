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
    with pytest.raises(ValueError, match="inbox"):
        ms365_sandbox.messages("drafts")


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
