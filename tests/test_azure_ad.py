"""Azure AD's everyday unkind answers, as the sandbox gives them (modelled on Microsoft's
error-code reference and answers quoted in users' reports), and what the plugin makes of
each: its own exception, a message that names the fix, and one Maestro alert when an
unattended bot cannot go on."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsPlugin,
    ServiceUnavailable,
    StoreUnavailable,
)
from botcity.plugins.ms365.credentials.errors import told
from conftest import BOT, BOT_SCOPES, bot_env, consent_answerer, run_process, with_discovery

LABEL = "ms365"
SCRIPT = str(Path(sys.executable).with_name("botcity-ms365"))


def authorized(sandbox, maestro, scopes=BOT_SCOPES):
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        list(scopes), consent=sandbox.consent_redirect)


def runner_run(sandbox, **env):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL})
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    run = run_process(argv, bot_env(sandbox, **env), stdin_closed=True)
    return sandbox.maestro.tasks[task_id], run


def maestro_env(sandbox, **extra):
    return bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                   BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key,
                   **extra)


def cli(env, *args, cwd, answer=None):
    return run_process([SCRIPT, *args], env, cwd=cwd, answer=answer,
                       stdin_closed=answer is None)


# -- 1. the redirect URI's platform ---------------------------------------------------------


def test_a_redirect_on_the_public_platform_is_named_as_the_fix(sandbox):
    sandbox.tenant.set_redirect_platform(sandbox.app, "public")
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    with pytest.raises(AuthorizationError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)

    assert caught.value.code == "AADSTS700025"
    assert "registered as a public client (Mobile and desktop applications)" in str(
        caught.value)
    assert "add them under 'Web'" in str(caught.value)
    assert sandbox.app.secret not in str(caught.value)

    assert not Path("o365_token.txt").exists(), "nothing stored from the refused sign-in"

    sandbox.tenant.set_redirect_platform(sandbox.app, "web")  # the fix the message names
    plugin.authenticate(consent=sandbox.consent_redirect)
    assert json.loads(Path("o365_token.txt").read_text())["RefreshToken"]
    assert plugin.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)


def test_console_consent_on_the_public_platform_says_so_at_the_console(sandbox, tmp_path):
    sandbox.tenant.set_redirect_platform(sandbox.app, "public")
    env = bot_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                  MS365_CLIENT_SECRET=sandbox.app.secret)

    run = cli(env, "login", "--scopes", "mail_read", cwd=tmp_path,
              answer=consent_answerer(sandbox))

    assert run.returncode == 1
    assert "AADSTS700025" in run.stderr and "'Web'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "o365_token.txt").exists()


# -- 2. single-tenant apps and tenants ------------------------------------------------------


def test_a_single_tenant_app_without_tenant_id_is_told_to_set_it(sandbox, monkeypatch,
                                                                 tmp_path):
    monkeypatch.delenv("MS365_TENANT_ID")
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    with pytest.raises(ConfigurationError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)

    assert "AADSTS50194" in str(caught.value)
    assert "Set tenant_id (or MS365_TENANT_ID" in str(caught.value)
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    assert authorize.path.startswith("/common/")

    # with the tenant: a person consents once, then an unattended run works
    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                           tenant_id=sandbox.tenant.tenant_id).authenticate(
        ["Mail.Read"], consent=sandbox.consent_redirect)
    sandbox.requests.clear()
    unattended = (
        "import os\n"
        "from botcity.plugins.ms365.credentials import MS365CredentialsPlugin\n"
        "p = MS365CredentialsPlugin(os.environ['APP_ID'], os.environ['APP_SECRET'],\n"
        "                           tenant_id=os.environ['TENANT'])\n"
        "p.authenticate(['Mail.Read'])\n"
        "print('user:', p.ms365_account.get_current_user_data().user_principal_name)\n")
    (tmp_path / "bot.py").write_text(unattended)
    run = run_process([sys.executable, str(tmp_path / "bot.py")],
                      bot_env(sandbox, APP_ID=sandbox.app.client_id,
                              APP_SECRET=sandbox.app.secret, TENANT=sandbox.tenant.domain),
                      cwd=tmp_path, stdin_closed=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"user: {sandbox.tenant.user.upn}" in run.stdout
    assert sandbox.requests("identity", path_contains="/authorize") == []


def test_a_multi_tenant_app_signs_in_through_common(sandbox, monkeypatch):
    monkeypatch.delenv("MS365_TENANT_ID")
    sandbox.app.multi_tenant = True
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)

    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    [grant] = sandbox.token_requests("authorization_code")
    assert authorize.path.startswith("/common/") and grant.path.startswith("/common/")
    stored = json.loads(Path("o365_token.txt").read_text())
    [account] = stored["Account"].values()
    assert account["username"] == sandbox.tenant.user.upn
    assert account["home_account_id"].endswith(f".{sandbox.tenant.tenant_id}"), (
        "the account of the user's own tenant")
    assert plugin.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)


def test_an_unknown_tenant_is_a_configuration_error(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                    tenant_id="contoso-typo.onmicrosoft.com")
    with pytest.raises(ConfigurationError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)
    assert "tenant 'contoso-typo.onmicrosoft.com' is not known" in str(caught.value)
    assert "AADSTS90002" in str(caught.value)
    assert "Set tenant_id" in str(caught.value)


# -- 3. an unattended bot that cannot go on: one alert that says what to do ----------------


def test_a_runner_with_an_expired_secret_fails_and_alerts_once(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.expire_client_secret()

    task, run = runner_run(sandbox)

    assert task.finish_status == "FAILED", run.stdout + run.stderr
    assert "client secret has expired" in task.finish_message
    assert "New client secret" in task.finish_message
    [alert] = sandbox.maestro.alerts
    assert alert["type"] == "ERROR" and alert["taskId"] == str(task.id)
    assert "client secret has expired" in alert["message"]
    assert sandbox.app.secret not in alert["message"] + task.finish_message


def test_a_runner_with_a_wrong_secret_fails_and_alerts_once(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    # the operator pasted the secret's ID instead of its Value
    sandbox.maestro.put_secret(LABEL, "client_secret", sandbox.app.secrets[0].id)

    task, run = runner_run(sandbox)

    assert task.finish_status == "FAILED", run.stdout + run.stderr
    assert "secret's ID instead of its Value" in task.finish_message
    [alert] = sandbox.maestro.alerts
    assert "AADSTS7000215" in alert["message"]


def test_conditional_access_on_the_runner_fails_with_what_to_ask_the_admin(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.tenant.conditional_access = "mfa"

    task, run = runner_run(sandbox)

    assert task.finish_status == "FAILED", run.stdout + run.stderr
    assert "AADSTS50076" in task.finish_message
    assert "administrator" in task.finish_message and "Runner's network" in task.finish_message
    [alert] = sandbox.maestro.alerts
    assert "AADSTS50076" in alert["message"] and "botcity-ms365 login" in alert["message"]


def test_conditional_access_carries_its_claims_and_login_passes_them_on(sandbox, maestro,
                                                                        tmp_path):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.tenant.conditional_access = "mfa"
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    with pytest.raises(AuthorizationRequired) as caught:
        plugin.ms365_account.get_current_user_data()
    assert caught.value.code == "AADSTS50076"
    assert json.loads(caught.value.claims)["access_token"]["capolids"]["essential"] is True

    # a person signs in again (with MFA); the sign-in carries Microsoft's challenge
    sandbox.requests.clear()
    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "basic",
              cwd=tmp_path, answer=consent_answerer(sandbox))
    assert run.returncode == 0, run.stdout + run.stderr
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    asked = json.loads(authorize.query["claims"])["access_token"]
    assert asked["capolids"] == json.loads(caught.value.claims)["access_token"]["capolids"]
    assert asked["xms_cc"] == {"values": ["CP1"]}, "with the plugin's CAE capability (msal)"

    # and the Runner works again
    sandbox.force_expiry()
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr


# -- 4. loop detection is throttling, not a dead token --------------------------------------


def test_twenty_bots_tripping_loop_detection_are_throttled_not_told_to_sign_in(
        sandbox, maestro, monkeypatch):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    sandbox.tenant.loop_threshold = 15
    monkeypatch.setenv("MS365_COORDINATE_REFRESH", "0")  # each refreshes: 20 in a second
    monkeypatch.setenv("MS365_RETRY_SECONDS", "3")
    bots = [MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
            for _ in range(20)]
    outcomes: list[object] = [None] * len(bots)

    def work(i: int) -> None:
        try:
            outcomes[i] = bots[i].ms365_account.get_current_user_data().user_principal_name
        except Exception as exc:  # noqa: BLE001 - what each bot got is the result
            outcomes[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    looped = [r for r in sandbox.token_requests("refresh_token") if r.status == 400]
    assert looped, "the sandbox's loop detection answered AADSTS50196"
    failed = [o for o in outcomes if isinstance(o, Exception)]
    succeeded = [o for o in outcomes if o == sandbox.tenant.user.upn]
    assert len(succeeded) == 15 and len(failed) == 5, outcomes
    assert all(isinstance(e, ServiceUnavailable) and e.code == "AADSTS50196" for e in failed)
    assert all("request loop" in str(e) and "sign in" not in str(e).lower() for e in failed)
    assert sandbox.maestro.alerts == [], "throttling is not a reason to call an operator"
    assert all(b.ms365_account.con.rejected is None for b in bots), "no token marked dead"
    monkeypatch.setenv("MS365_COORDINATE_REFRESH", "1")
    sandbox.requests.clear()
    after = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    after.authenticate(consent="none")  # the stored token works: no person needed
    assert after.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn)
    assert sandbox.requests("identity", path_contains="/authorize") == []
    assert sandbox.token_requests() == [], "a token one of the twenty renewed and stored"


def test_a_bot_throttled_for_a_loop_looks_again_and_uses_the_others_token(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    first = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    second = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
    loop = {"error": "invalid_grant", "error_description": "AADSTS50196: The server "
            "terminated an operation because it encountered a client request loop. Please "
            "contact your app vendor.\r\nTrace ID: x\r\nCorrelation ID: y\r\nTimestamp: z",
            "error_codes": [50196]}
    sandbox.identity.fail_next(400, body=loop, path_contains="/token")
    got: list[object] = []
    thread = threading.Thread(
        target=lambda: got.append(second.ms365_account.get_current_user_data()))
    thread.start()
    end = time.monotonic() + 10
    while not [r for r in sandbox.token_requests() if r.status == 400]:
        assert time.monotonic() < end
        time.sleep(0.05)
    first.ms365_account.get_current_user_data()  # renews and stores while the other waits
    thread.join(timeout=30)

    assert got and got[0].user_principal_name == sandbox.tenant.user.upn
    assert second.ms365_account.con.refresh_count == 0, "it used the stored token"
    assert len(sandbox.token_requests("refresh_token")) == 2  # the looped one, the first's


# -- 5. permissions in another casing -------------------------------------------------------


def test_permissions_in_any_casing_are_consented_once_and_then_covered(sandbox, maestro,
                                                                       tmp_path):
    sandbox.put_app_credentials(LABEL)
    wanted = ["Mail.send", "Files.Readwrite.all"]
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        wanted, consent=sandbox.consent_redirect)
    stored = json.loads(sandbox.maestro.secret(LABEL, "token"))
    assert stored["botcity"]["permissions"] == ["Files.ReadWrite.All", "Mail.Send",
                                                "User.Read"]
    [access] = stored["AccessToken"].values()
    assert set(access["target"].split()) == {"Files.ReadWrite.All", "Mail.Send", "User.Read",
                                             "profile", "openid", "email"}, (
        "as Microsoft answers: its casing, no resource, no offline_access")

    sandbox.force_expiry()
    for _ in range(2):  # unattended runs: a refresh, then the renewed token
        plugin = MS365CredentialsPlugin(maestro=sandbox.maestro_sdk(), credential_label=LABEL)
        plugin.authenticate(wanted, consent="none")
        plugin.ms365_account.get_current_user_data()
    assert len(sandbox.requests("identity", path_contains="/authorize")) == 1
    assert sandbox.maestro.alerts == []

    run = cli(maestro_env(sandbox), "status", "--label", LABEL, "--scopes", "mail.SEND",
              "files.readwrite.ALL", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Requested:      Files.ReadWrite.All, Mail.Send, User.Read: all covered" in (
        run.stdout)


# -- 6. login always signs in, and replaces the account -------------------------------------


def test_login_repairs_a_revoked_token_whose_access_token_still_works(sandbox, maestro,
                                                                      tmp_path):
    authorized(sandbox, maestro)
    sandbox.tenant.kill_refresh_tokens("revoked")  # the access token is still valid
    sandbox.requests.clear()

    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "basic",
              cwd=tmp_path, answer=consent_answerer(sandbox))

    assert run.returncode == 0, run.stdout + run.stderr
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    assert "prompt" not in authorize.query
    assert "Permissions granted: Mail.Send, User.Read." in run.stdout, "kept what it had"
    sandbox.force_expiry()
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert len(sandbox.token_requests("refresh_token")) == 1, "the new refresh token works"


def test_login_force_as_another_account_replaces_the_stored_one(sandbox, maestro, tmp_path):
    authorized(sandbox, maestro)
    other = sandbox.tenant.add_user("reports@contoso.onmicrosoft.com", "Reports Bot")
    sandbox.tenant.signing_in = other
    sandbox.requests.clear()

    run = cli(maestro_env(sandbox), "login", "--label", LABEL, "--scopes", "basic",
              "mail_send", "--force", cwd=tmp_path, answer=consent_answerer(sandbox))

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Signed in as {other.upn}." in run.stdout
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    assert authorize.query["prompt"] == "select_account"
    stored = json.loads(sandbox.maestro.secret(LABEL, "token"))
    for section in ("Account", "RefreshToken", "AccessToken", "IdToken"):
        assert {e["home_account_id"] for e in stored[section].values()} == {
            f"{other.oid}.{sandbox.tenant.tenant_id}"}, section
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert f"Signed in to Microsoft 365 as {other.upn}" in run.stdout


def test_a_code_pasted_after_ten_minutes_says_to_start_again(sandbox):
    sandbox.tenant.code_lifetime = 0.0  # as if the person pasted it 10 minutes later
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(AuthorizationError) as caught:
        plugin.authenticate(consent=sandbox.consent_redirect)
    assert not isinstance(caught.value, AuthorizationRequired)
    assert caught.value.code == "AADSTS70008"
    assert "The sign-in took too long" in str(caught.value) and "Start again" in str(
        caught.value)


# -- 7. discovery that fails ----------------------------------------------------------------


@pytest.mark.parametrize(("fault", "expected", "says"), [
    ({"status": 503}, ServiceUnavailable, ("did not answer its OpenID configuration",
                                            "Try again later")),
    ({"status": 200, "html": "<html><body>Proxy login</body></html>"}, ServiceUnavailable,
     ("a page that is not Microsoft's", "check the machine's proxy")),
    ({"status": 404, "html": "<html>Not found</html>"}, ConfigurationError,
     ("is not known to", "Set tenant_id")),
], ids=["503", "html", "404-html"])
def test_a_failing_discovery_is_one_of_the_plugins_errors(sandbox, monkeypatch, fault,
                                                          expected, says):
    monkeypatch.setenv("MS365_RETRY_SECONDS", "1")
    sandbox.identity.fail_next(path_contains="openid-configuration", times=50, **fault)
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    consented: list[str] = []
    with pytest.raises(expected) as caught:
        plugin.authenticate(consent=lambda url: consented.append(url) or "")
    assert all(part in str(caught.value) for part in says), str(caught.value)
    assert f"'{sandbox.tenant.tenant_id}'" in str(caught.value), "the tenant it asked for"
    assert consented == [], "nobody was sent to a sign-in that cannot work"
    assert not Path("o365_token.txt").exists()


def test_a_failing_discovery_during_a_refresh_is_one_of_the_plugins_errors(sandbox, maestro,
                                                                         monkeypatch):
    authorized(sandbox, maestro)
    sandbox.force_expiry()
    # without the discovery answers saved with the token, the refresh has to fetch them
    sandbox.maestro.put_secret(LABEL, "token",
                               with_discovery(sandbox.maestro.secret(LABEL, "token")))
    monkeypatch.setenv("MS365_RETRY_SECONDS", "1")
    sandbox.identity.fail_next(503, path_contains="openid-configuration", times=50)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    with pytest.raises(ServiceUnavailable, match="OpenID configuration"):
        plugin.ms365_account.get_current_user_data()
    with pytest.raises(ServiceUnavailable):
        plugin.authenticate(consent="none")


def test_the_cli_reports_a_failing_discovery_without_a_traceback(sandbox, tmp_path):
    sandbox.identity.fail_next(503, path_contains="openid-configuration", times=50)
    env = bot_env(sandbox, MS365_CLIENT_ID=sandbox.app.client_id,
                  MS365_CLIENT_SECRET=sandbox.app.secret, MS365_RETRY_SECONDS="1")
    run = cli(env, "login", "--scopes", "basic", cwd=tmp_path, answer=lambda line: None)
    assert run.returncode == 1
    assert "\nerror: Microsoft's identity platform" in run.stderr
    assert "Traceback" not in run.stderr


# -- 8. Maestro's answers -------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404])
def test_login_into_a_new_label_works_whatever_maestro_answers_for_it(sandbox, tmp_path,
                                                                      status):
    sandbox.maestro.missing_label_status = status
    sandbox.put_app_credentials("app")

    run = cli(maestro_env(sandbox), "login", "--label", "app", "--token-label", "new-token",
              "--scopes", "basic", cwd=tmp_path, answer=consent_answerer(sandbox))

    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(sandbox.maestro.secret("new-token", "token"))["RefreshToken"]


def test_login_into_a_label_that_answers_500_creates_nothing_and_says_to_create_it(
        sandbox, tmp_path):
    # a 5xx may be Maestro's answer for a missing label, or an outage: creating the label
    # then could replace a set that holds the app's keys, so the plugin does not guess
    sandbox.maestro.missing_label_status = 500
    sandbox.put_app_credentials("app")

    run = cli(maestro_env(sandbox), "login", "--label", "app", "--token-label", "new-token",
              "--scopes", "basic", cwd=tmp_path, answer=consent_answerer(sandbox))

    assert run.returncode == 1, run.stdout + run.stderr
    assert ("answered HTTP 500 to the read of credential 'new-token'" in run.stderr
            and "Check that credential 'new-token' exists in Maestro" in run.stderr)
    assert "new-token" not in sandbox.maestro.credentials
    assert sandbox.requests("maestro", path_contains="/credential", method="POST") == []
    assert sandbox.requests("identity", path_contains="/authorize") == [], (
        "nobody was asked to consent for a token that could not be stored")


def test_a_label_that_answers_500_and_exists_says_what_to_check(sandbox, maestro):
    authorized(sandbox, maestro)
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{LABEL}", method="GET",
                              times=5)
    with pytest.raises(StoreUnavailable) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert str(caught.value) == told("maestro-failing-read", server=sandbox.maestro_url,
                                     status=500, label=LABEL)


@pytest.mark.parametrize("fault", [{"body": [{"key": "client_id"}]},
                                   {"html": "<html><body>Sign in to the proxy</body></html>"}],
                         ids=["json-list", "html"])
def test_an_odd_200_from_maestro_is_store_unavailable(sandbox, maestro, fault):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(200, path_contains=f"/credential/{LABEL}", **fault)
    with pytest.raises(StoreUnavailable, match="not the JSON Maestro sends"):
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)


# -- device codes as Azure AD times them ----------------------------------------------------


def test_a_device_code_that_expires_before_anyone_signs_in(sandbox, monkeypatch):
    sandbox.app.public_client_flows = True
    sandbox.tenant.device_code_lifetime = 1
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    with pytest.raises(AuthorizationError, match="before the code expired .* start again"):
        plugin.authenticate(consent="device_code")
    [poll] = sandbox.token_requests()  # one poll, then msal waits Microsoft's 5 s interval
    assert poll.form()["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"
