"""Microsoft's own Graph SDK (msgraph-sdk, the real one) on the plugin's token through
``service.credential`` (issue 27), against the sandbox: the SDK's requests are answered,
the token is the one ``ms365_account`` uses (one store, one write per renewal, renewed by
the same lifecycle), Graph's claims challenge is answered by the SDK's own retry, and a
permission nobody consented to is the plugin's error naming the login command."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from urllib.parse import quote

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsPlugin,
    MS365TokenCredential,
)
from botcity.plugins.ms365.credentials.renewal import Schedule
from conftest import REPO, bot_env, newest_token, run_process, script

GraphServiceClient = pytest.importorskip("msgraph").GraphServiceClient
from azure.core.credentials import AccessToken, AccessTokenInfo  # noqa: E402

LABEL = "ms365"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


def authorized(sandbox, maestro, scopes=("basic", "mail_read_write")) -> MS365CredentialsPlugin:
    """A bot whose credential a person authorized once, started afresh."""
    sandbox.authorize(LABEL, list(scopes))
    return MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)


def graph_client(service: MS365CredentialsPlugin, scopes=(GRAPH_DEFAULT,)):
    """``GraphServiceClient`` on the plugin's token, at the Graph the plugin uses (made
    inside the event loop that uses it: its httpx client belongs to one loop)."""
    graph = GraphServiceClient(credentials=service.credential, scopes=list(scopes) or None)
    graph.request_adapter.base_url = service.credential.graph_url + "/v1.0"
    return graph


def generation(sandbox) -> int:
    return json.loads(newest_token(sandbox, LABEL))["botcity"]["generation"]


def token_writes(sandbox) -> int:
    """Writes of a renewed token (added beside the token, or the credential written whole
    when a renewal folds the others in; claims are added keys too)."""
    return len([r for r in sandbox.requests("maestro", method="POST")
                if r.path == f"/api/v2/credential/{LABEL}" or (
                    r.path.endswith("/key") and ".next." in r.json().get("key", ""))])


def graph_calls(sandbox) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in sandbox.requests("graph")]


def sent_tokens(sandbox) -> list[str]:
    return [r.headers.get("authorization", "").removeprefix("Bearer ")
            for r in sandbox.requests("graph")]


def held(service: MS365CredentialsPlugin) -> str:
    return str(service.token_store.get_access_token()["secret"])


# -- the SDK's calls -------------------------------------------------------------------
def test_the_sdk_reads_me_and_lists_mail_on_the_stored_token(sandbox, maestro):
    service = authorized(sandbox, maestro)
    sandbox.graph.put_drive_file("/Reports/july.txt", b"July")
    sandbox.requests.clear()

    async def run():
        from msgraph.generated.models.body_type import BodyType
        from msgraph.generated.models.email_address import EmailAddress
        from msgraph.generated.models.item_body import ItemBody
        from msgraph.generated.models.message import Message
        from msgraph.generated.models.recipient import Recipient
        from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
            SendMailPostRequestBody,
        )

        graph = graph_client(service)
        me = await graph.me.get()
        await graph.me.send_mail.post(SendMailPostRequestBody(
            message=Message(subject="From the Graph SDK",
                            body=ItemBody(content_type=BodyType.Text, content="Hello"),
                            to_recipients=[Recipient(email_address=EmailAddress(
                                address=me.user_principal_name))]),
            save_to_sent_items=True))
        messages = await graph.me.messages.get()
        drive = await graph.me.drive.get()
        children = await graph.drives.by_drive_id(drive.id).items.by_drive_item_id(
            "root").children.get()
        return me, messages, children

    me, messages, children = asyncio.run(run())

    assert me.user_principal_name == sandbox.tenant.user.upn
    assert sorted(m.subject for m in messages.value) == ["From the Graph SDK"] * 2, (
        "in the Inbox and in Sent Items")
    assert [c.name for c in children.value] == ["Reports"]
    assert [(m, p) for m, p, _ in graph_calls(sandbox)] == [
        ("GET", "/v1.0/me"), ("POST", "/v1.0/me/sendMail"), ("GET", "/v1.0/me/messages"),
        ("GET", "/v1.0/me/drive"),
        ("GET", f"/v1.0/drives/{quote(sandbox.graph.drive_id, safe='')}/items/root/children")]
    assert all(status in (200, 202) for _, _, status in graph_calls(sandbox))
    assert set(sent_tokens(sandbox)) == {held(service)}, "the token ms365_account holds"
    assert sandbox.token_requests() == [], "a valid stored token: nothing asked of Microsoft"
    assert token_writes(sandbox) == 0


def test_without_scopes_the_sdk_asks_for_its_host_s_default_and_gets_the_token(sandbox,
                                                                              maestro):
    """Given no scopes, the Graph SDK asks for ``https://<host>/.default`` of each request
    (here the sandbox's address): the Graph the plugin is configured for."""
    service = authorized(sandbox, maestro)
    asked = []
    get_token = service.credential.get_token

    def recording(*scopes, **kwargs):
        asked.append((scopes, kwargs))
        return get_token(*scopes, **kwargs)

    service.credential.get_token = recording  # type: ignore[method-assign]

    async def run():
        return await graph_client(service, scopes=()).me.get()

    assert asyncio.run(run()).user_principal_name == sandbox.tenant.user.upn
    assert asked == [(("https://127.0.0.1/.default",), {"claims": None, "enable_cae": True})]


# -- one token, one store, one owner of renewal -------------------------------------------
def test_a_renewal_during_a_run_is_written_to_maestro_once(sandbox, maestro):
    sandbox.tenant.access_token_lifetime = 4
    service = authorized(sandbox, maestro)
    lifecycle = service.ms365_account.con.lifecycle
    service.authenticate()  # the stored 4 s token, loaded
    lifecycle.schedule = Schedule(draw=lambda: 0.0)  # this bot renews at the window's start
    before = generation(sandbox)

    async def run():
        graph = graph_client(service)
        await graph.me.get()
        first = held(service)
        due_at = lifecycle.schedule.due_at(service.token_store.get_access_token())
        await asyncio.sleep(max(0.0, due_at - time.time()) + 0.05)
        assert lifecycle.due()
        sandbox.requests.clear()
        for _ in range(3):  # the run goes on: one renewal, at the first request due
            await graph.me.messages.get()
        return first

    first = asyncio.run(run())

    assert len(sandbox.token_requests("refresh_token")) == 1
    assert token_writes(sandbox) == 1, "the renewed token: one write"
    assert generation(sandbox) == before + 1
    assert json.loads(newest_token(sandbox, LABEL))["AccessToken"], "stored whole"
    assert held(service) != first and set(sent_tokens(sandbox)) == {held(service)}
    # ms365_account goes on with the renewed token: no refresh, no write, no 401
    sandbox.requests.clear()
    service.ms365_account.get_current_user_data()
    assert sandbox.token_requests() == [] and token_writes(sandbox) == 0
    assert graph_calls(sandbox) == [("GET", "/v1.0/me", 200)]
    assert sent_tokens(sandbox) == [held(service)]


def test_get_token_info_says_when_this_bot_renews(sandbox, maestro):
    service = authorized(sandbox, maestro)
    credential = service.credential
    sandbox.requests.clear()

    info = credential.get_token_info(GRAPH_DEFAULT)
    token = credential.get_token(GRAPH_DEFAULT)

    entry = service.token_store.get_access_token()
    assert isinstance(info, AccessTokenInfo) and isinstance(token, AccessToken)
    assert info.token == token.token == entry["secret"]
    assert info.expires_on == token.expires_on == int(entry["expires_on"])
    due_at = service.ms365_account.con.lifecycle.schedule.due_at(entry)
    assert info.refresh_on == int(due_at)
    assert time.time() < info.refresh_on < info.expires_on - 60, "inside the refresh window"
    assert sandbox.token_requests() == []


# -- continuous access evaluation ------------------------------------------------------
def test_graph_s_claims_challenge_is_answered_by_the_sdk_s_retry(sandbox, maestro, caplog):
    service = authorized(sandbox, maestro)
    before = generation(sandbox)

    async def run():
        graph = graph_client(service)
        await graph.me.get()
        refused = held(service)
        claims = sandbox.graph.challenge_issued()  # a critical event: Graph refuses it
        sandbox.requests.clear()
        me = await graph.me.get()
        return refused, claims, me

    with caplog.at_level(logging.DEBUG):
        refused, claims, me = asyncio.run(run())

    assert me.user_principal_name == sandbox.tenant.user.upn
    assert graph_calls(sandbox) == [("GET", "/v1.0/me", 401), ("GET", "/v1.0/me", 200)]
    assert sent_tokens(sandbox) == [refused, held(service)]
    [grant] = sandbox.token_requests()
    assert grant.form()["grant_type"] == "refresh_token"
    asked = json.loads(grant.form()["claims"])["access_token"]
    assert asked["nbf"] == json.loads(claims)["access_token"]["nbf"], "the challenge's claims"
    assert asked["xms_cc"] == {"values": ["CP1"]}, "with the client capability"
    assert token_writes(sandbox) == 1 and generation(sandbox) == before + 1
    assert refused not in caplog.text and held(service) not in caplog.text
    # ms365_account uses the renewed token at once (no 401 of its own)
    sandbox.requests.clear()
    service.ms365_account.get_current_user_data()
    assert graph_calls(sandbox) == [("GET", "/v1.0/me", 200)]


@pytest.mark.parametrize("claims", [
    None,  # Graph's: a token issued after the critical event (nbf)
    '{"access_token":{"capolids":{"essential":true,"values":["a1b2"]}}}',  # a policy's
], ids=["nbf", "policy"])
def test_requests_refused_together_renew_once(sandbox, maestro, claims):
    service = authorized(sandbox, maestro)

    async def run():
        graph = graph_client(service)
        await graph.me.get()
        sandbox.graph.challenge_issued(claims)
        sandbox.requests.clear()
        return await asyncio.gather(graph.me.get(), graph.me.messages.get(),
                                    graph.me.drive.get())

    me, messages, drive = asyncio.run(run())

    assert me.user_principal_name == sandbox.tenant.user.upn and drive.id
    assert sorted(s for _, _, s in graph_calls(sandbox)) == [200, 200, 200, 401, 401, 401]
    assert len(sandbox.token_requests("refresh_token")) == 1, "one renewal for the three"
    assert token_writes(sandbox) == 1


def nbf(seconds: int) -> str:
    return json.dumps({"access_token": {"nbf": {"essential": True, "value": str(seconds)}}})


def test_a_token_issued_after_the_challenge_s_nbf_answers_it_without_a_renewal(sandbox,
                                                                            maestro):
    """Another bot (or request) renewed the token after the critical event: the token held
    is the answer; one issued before it is renewed."""
    service = authorized(sandbox, maestro)
    service.authenticate()
    issued = int(service.token_store.get_access_token()["cached_at"])
    token = held(service)
    sandbox.requests.clear()

    assert service.credential.get_token(GRAPH_DEFAULT, claims=nbf(issued - 5)).token == token
    assert sandbox.token_requests() == [] and token_writes(sandbox) == 0

    renewed = service.credential.get_token(GRAPH_DEFAULT, claims=nbf(issued + 5)).token
    assert renewed != token and renewed == held(service)
    [grant] = sandbox.token_requests("refresh_token")
    assert json.loads(grant.form()["claims"])["access_token"]["nbf"]["value"] == str(issued + 5)
    assert token_writes(sandbox) == 1


def test_a_renewal_microsoft_refuses_is_the_plugin_s_error_and_one_alert(sandbox, maestro):
    service = authorized(sandbox, maestro)

    async def run():
        graph = graph_client(service)
        await graph.me.get()
        sandbox.tenant.kill_refresh_tokens("password_reset")
        sandbox.graph.challenge_issued()
        await graph.me.get()

    with pytest.raises(AuthorizationRequired) as caught:
        asyncio.run(run())

    assert caught.value.code == "AADSTS50173"
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and "botcity-ms365 login --label ms365" in alert["message"]
    assert len(sandbox.token_requests("refresh_token")) == 1
    with pytest.raises(AuthorizationRequired):  # and it is not asked again
        service.credential.get_token(GRAPH_DEFAULT)
    assert len(sandbox.token_requests("refresh_token")) == 1
    assert len(sandbox.maestro.alerts) == 1


# -- what cannot be given --------------------------------------------------------------
def test_a_permission_never_consented_is_the_plugin_s_error_naming_the_login(sandbox,
                                                                           maestro):
    service = authorized(sandbox, maestro, scopes=("basic", "mail_read"))
    sandbox.requests.clear()

    async def run():
        graph = graph_client(service, scopes=["https://graph.microsoft.com/Mail.Read",
                                              "https://graph.microsoft.com/Calendars.Read"])
        await graph.me.get()

    with pytest.raises(AuthorizationRequired) as caught:
        asyncio.run(run())

    message = str(caught.value)
    assert caught.value.missing_permissions == ("Calendars.Read",)
    assert "lacks the permissions Calendars.Read" in message
    assert ("botcity-ms365 login --label ms365 --scopes basic calendars_read mail_read"
            in message), "the command consents to it, keeping what the token has"
    assert sandbox.requests("graph") == [] and sandbox.requests("identity") == []
    [alert] = sandbox.maestro.alerts
    assert "Calendars.Read" in alert["message"]
    # what was consented is given, by Graph's name or a bare permission
    assert service.credential.get_token("https://graph.microsoft.com/mail.read", "openid")
    assert service.credential.get_token("Mail.Read", "offline_access")


def test_no_stored_token_is_the_plugin_s_error_naming_the_login(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    service = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)

    with pytest.raises(AuthorizationRequired) as caught:
        service.credential.get_token(GRAPH_DEFAULT)

    assert "holds no token" in str(caught.value)
    assert "botcity-ms365 login --label ms365" in str(caught.value)
    assert sandbox.token_requests() == []


@pytest.mark.parametrize(("scopes", "kwargs", "says"), [
    (("https://vault.azure.net/.default",), {}, "cannot give one for"),
    ((), {}, "needs a scope"),
    ((GRAPH_DEFAULT,), {"tenant_id": "fabrikam.onmicrosoft.com"}, "one tenant's account"),
])
def test_what_is_not_this_graph_token_is_a_configuration_error(sandbox, maestro, scopes,
                                                               kwargs, says):
    service = authorized(sandbox, maestro)
    with pytest.raises(ConfigurationError, match=says):
        service.credential.get_token(*scopes, **kwargs)
    # the plugin's own tenant is fine, by id
    assert service.credential.get_token(GRAPH_DEFAULT, tenant_id=sandbox.tenant.tenant_id)


def test_an_app_only_plugin_gives_its_app_token(sandbox):
    service = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                     tenant_id=sandbox.tenant.tenant_id, auth_flow="app")

    async def run():
        return await graph_client(service).users.by_user_id(sandbox.tenant.user.upn).get()

    assert asyncio.run(run()).user_principal_name == sandbox.tenant.user.upn
    [grant] = sandbox.token_requests()
    assert grant.form()["grant_type"] == "client_credentials"
    with pytest.raises(ConfigurationError, match="application permissions"):
        service.credential.get_token("https://graph.microsoft.com/Mail.Read")


def test_without_azure_core_the_error_says_what_to_install(sandbox, maestro, monkeypatch):
    service = authorized(sandbox, maestro)
    monkeypatch.setitem(sys.modules, "azure.core", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "azure.core.credentials", None)

    with pytest.raises(ConfigurationError) as caught:
        service.credential  # noqa: B018 - the property raises

    assert 'pip install "botcity-ms365-credentials-plugin[graph]"' in str(caught.value)
    assert service.ms365_account.get_current_user_data(), "the rest works without it"


def test_the_credential_shows_no_secret(sandbox, maestro):
    service = authorized(sandbox, maestro)
    credential = service.credential
    token = credential.get_token(GRAPH_DEFAULT).token
    assert isinstance(credential, MS365TokenCredential) and credential is service.credential
    assert token not in repr(credential) and sandbox.app.secret not in repr(credential)
    assert "MS365TokenCredential(graph_url=" in repr(credential)


def test_mypy_checks_the_typed_snippet():
    """tests/typing_credential.py (service.credential where azure-core's TokenCredential,
    SupportsTokenInfo and GraphServiceClient's argument are expected) is in mypy's files."""
    mypy = (REPO / "pyproject.toml").read_text().split("[tool.mypy]", 1)[1].split("\n[", 1)[0]
    files = mypy.split("files = [", 1)[1].split("]", 1)[0]
    assert '"tests/typing_credential.py"' in files
    assert (REPO / "tests" / "typing_credential.py").is_file()


# -- a Runner's bot --------------------------------------------------------------------
RUNNER_BOT = """
import asyncio
from botcity.maestro import BotMaestroSDK
from msgraph import GraphServiceClient
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

maestro = BotMaestroSDK.from_sys_args()
execution = maestro.get_execution()
service = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
service.authenticate(["mail_read"])

async def main():
    graph = GraphServiceClient(credentials=service.credential,
                               scopes=["https://graph.microsoft.com/.default"])
    graph.request_adapter.base_url = service.credential.graph_url + "/v1.0"
    messages = await graph.me.messages.get()
    return [m.subject for m in messages.value]

subjects = asyncio.run(main())
print("subjects:", subjects)
maestro.finish_task(task_id=execution.task_id, status="SUCCESS",
                    message=f"{len(subjects)} messages")
"""


def test_a_runner_bot_uses_the_sdk_after_a_cold_start(sandbox, maestro, tmp_path):
    sandbox.authorize(LABEL, ["basic", "mail_read"])
    sandbox.graph.messages.append({"id": "AAMk1", "subject": "Invoice 7",
                                   "parentFolderId": "inbox"})
    sandbox.force_expiry()  # the stored access token expired while no bot ran
    before = generation(sandbox)
    task_id, token = sandbox.maestro.start_task()
    argv = script(tmp_path / "bot.py", RUNNER_BOT) + sandbox.maestro.runner_argv(task_id, token)
    sandbox.requests.clear()

    run = run_process(argv, bot_env(sandbox), cwd=tmp_path, stdin_closed=True, timeout=60)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "subjects: ['Invoice 7']" in run.stdout
    assert sandbox.maestro.tasks[task_id].finish_status == "SUCCESS"
    assert len(sandbox.token_requests("refresh_token")) == 1, "renewed once, at the start"
    assert token_writes(sandbox) == 1 and generation(sandbox) == before + 1
    assert graph_calls(sandbox) == [("GET", "/v1.0/me/messages", 200)], "no 401"
    assert sandbox.maestro.alerts == []
