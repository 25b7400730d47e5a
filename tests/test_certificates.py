"""Certificates instead of client secrets: the app signs each token request with its
private key (a client assertion msal makes), from every place a secret comes from. Against
the sandbox, whose identity platform checks assertions as Microsoft Entra ID does (see
docs/notes/certificates.md for its answers and their sources)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import jwt
import pytest
import requests

from botcity.plugins.ms365.credentials import (
    AuthorizationError,
    ConfigurationError,
    MS365CredentialsPlugin,
)
from botcity.plugins.ms365.sandbox.client_assertions import make_certificate
from conftest import BOT, bot_env, consent_answerer, newest_token, run_process, script

LABEL = "ms365"
SCOPES = ["basic", "message_send"]
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def runner_run(sandbox, **env):
    task_id, token = sandbox.maestro.start_task(parameters={"ms365_credential_label": LABEL})
    argv = [sys.executable, str(BOT), *sandbox.maestro.runner_argv(task_id, token)]
    run = run_process(argv, bot_env(sandbox, **env), stdin_closed=True)
    return sandbox.maestro.tasks[task_id], run


def signed_with_assertions(requests_):
    """Every token request authenticated with a client assertion, never a secret."""
    forms = [r.form() for r in requests_]
    return bool(forms) and all(
        f.get("client_assertion_type") == ASSERTION and f.get("client_assertion")
        and "client_secret" not in f for f in forms)


@pytest.fixture
def certified(sandbox, maestro):
    """The app with a certificate registered, and a Maestro credential holding the PEM
    (key and certificate) and no secret; a person consented once."""
    made = sandbox.add_certificate()
    sandbox.put_app_certificate(LABEL, made.pem)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).sign_in(
        SCOPES, consent=sandbox.consent_redirect)
    assert signed_with_assertions(sandbox.token_requests("authorization_code"))
    return made


# -- Done when 1: a Runner with the certificate in Maestro --------------------------------
def test_a_runner_with_a_certificate_starts_with_one_read_and_renews_with_an_assertion(
        sandbox, certified):
    sandbox.requests.clear()
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    assert sandbox.requests("identity") == []
    assert len(sandbox.requests("maestro", path_contains="/api/v2/credential")) == 1

    before = json.loads(newest_token(sandbox, LABEL))
    sandbox.force_expiry()
    sandbox.requests.clear()
    task, run = runner_run(sandbox)
    assert task.finish_status == "SUCCESS", run.stdout + run.stderr
    refreshes = sandbox.token_requests("refresh_token")
    assert len(refreshes) == 1 and signed_with_assertions(refreshes)
    after = json.loads(newest_token(sandbox, LABEL))
    assert ({e["secret"] for e in after["RefreshToken"].values()}
            != {e["secret"] for e in before["RefreshToken"].values()}), "rotated, written back"
    assert "client_secret" not in {i["key"] for i in sandbox.maestro.credentials[LABEL]}


# -- Done when 2: consent at the console, then unattended ---------------------------------
def test_console_consent_with_a_certificate_app_then_unattended_reuse(sandbox, tmp_path):
    made = sandbox.add_certificate()
    (tmp_path / "key.pem").write_text(made.key_pem)
    bot = script(tmp_path / "bot.py", f"""
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
service = MS365CredentialsPlugin(client_id={sandbox.app.client_id!r},
                                 client_certificate="key.pem",
                                 client_certificate_thumbprint={made.thumbprint.lower()!r})
service.authenticate(["basic", "message_send"])
print("user:", service.ms365_account.get_current_user_data().user_principal_name)
""")
    first = run_process(bot, bot_env(sandbox), cwd=tmp_path, answer=consent_answerer(sandbox))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Paste the address" in first.stdout
    assert signed_with_assertions(sandbox.token_requests())

    sandbox.force_expiry()
    (tmp_path / "o365_token.txt").write_text(
        __import__("botcity.plugins.ms365.sandbox", fromlist=["x"])
        .expire_token_text((tmp_path / "o365_token.txt").read_text()))
    sandbox.requests.clear()
    second = run_process(bot, bot_env(sandbox), cwd=tmp_path, stdin_closed=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"user: {sandbox.tenant.user.upn}" in second.stdout
    assert "Paste" not in second.stdout
    assert signed_with_assertions(sandbox.token_requests("refresh_token"))


@pytest.mark.parametrize("way", ["browser", "device_code"])
def test_browser_and_device_code_consent_with_a_certificate_app(sandbox, tmp_path, way):
    import threading

    from test_consent_ways import (
        AUTHORIZE,
        approve_device_codes,
        browser_page,
        headless_browser,
    )

    sandbox.app.public_client_flows = True
    sandbox.put_app_certificate(LABEL, sandbox.add_certificate().pem)
    env = bot_env(sandbox, MS365_CONSENT=way, MS365_CONSENT_TIMEOUT="30",
                  MAESTRO_SERVER=sandbox.maestro_url, MAESTRO_LOGIN=sandbox.maestro.login,
                  MAESTRO_KEY=sandbox.maestro.key)
    stop = threading.Event()
    if way == "browser":
        env["BROWSER"] = headless_browser(tmp_path)
    else:
        approve_device_codes(sandbox, stop)
    try:
        run = run_process(script(tmp_path / "authorize.py", AUTHORIZE), env, cwd=tmp_path)
    finally:
        stop.set()

    assert run.returncode == 0, run.stdout + run.stderr
    token = json.loads(newest_token(sandbox, LABEL))
    if way == "browser":
        assert "Signed in" in browser_page(tmp_path)
        assert signed_with_assertions(sandbox.token_requests("authorization_code"))
        assert token["botcity"]["client"] == "confidential"
    else:  # a public-client flow: nothing of the app's is sent
        polls = sandbox.token_requests("urn:ietf:params:oauth:grant-type:device_code")
        assert polls and polls[-1].status == 200
        assert not any({"client_assertion", "client_secret"} & set(p.form()) for p in polls)
        assert token["botcity"]["client"] == "public"


def test_login_from_the_command_line_with_a_certificate_app(sandbox, tmp_path):
    sandbox.put_app_certificate(LABEL, sandbox.add_certificate().pem)
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    run = run_process([sys.executable, "-m", "botcity.plugins.ms365.credentials", "login",
                       "--label", LABEL, "--scopes", "mail_send"], env, cwd=tmp_path,
                      answer=consent_answerer(sandbox))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Signed in as {sandbox.tenant.user.upn}" in run.stdout
    assert signed_with_assertions(sandbox.token_requests())
    assert json.loads(newest_token(sandbox, LABEL))["RefreshToken"]


# -- Done when 3: app-only across two expiries: test_consent_ways.py,
# test_app_only_survives_two_expiries_in_one_process[certificate]


# -- Done when 4: a certificate the app does not know ---------------------------------------
def test_a_wrong_certificate_names_it_and_alerts_once_on_a_runner(sandbox, maestro, certified):
    stranger = make_certificate()  # never uploaded to the app
    sandbox.put_app_certificate(LABEL, stranger.pem)
    sandbox.force_expiry()

    task, run = runner_run(sandbox)

    assert task.finish_status == "FAILED", run.stdout + run.stderr
    assert f"certificate {stranger.thumbprint}: The key was not found" in task.finish_message
    assert "Certificates & secrets > Certificates" in task.finish_message
    [alert] = sandbox.maestro.alerts
    assert "AADSTS700027" in alert["message"] and stranger.thumbprint in alert["message"]


def test_an_expired_registered_certificate_says_so(sandbox, maestro):
    old = sandbox.add_certificate(days=-1)
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=old.pem,
                                    tenant_id=sandbox.tenant.tenant_id, auth_flow="app")
    with pytest.raises(AuthorizationError, match="The key used is expired"):
        plugin.authenticate()


# -- Done when 5: bad configuration, each a ConfigurationError naming the fix ---------------
def test_both_a_secret_and_a_certificate_in_maestro(sandbox, maestro):
    made = sandbox.add_certificate()
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.put_secret(LABEL, "client_certificate", made.pem)
    with pytest.raises(ConfigurationError) as caught:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    text = str(caught.value)
    assert f"Maestro credential '{LABEL}'" in text
    assert "both client_secret and client_certificate are set" in text
    assert made.key_pem.splitlines()[1] not in text


def test_both_in_the_environment_and_neither_with_a_client_id(sandbox, monkeypatch):
    made = sandbox.add_certificate()
    monkeypatch.setenv("MS365_CLIENT_ID", sandbox.app.client_id)
    monkeypatch.setenv("MS365_CLIENT_SECRET", sandbox.app.secret)
    monkeypatch.setenv("MS365_CLIENT_CERTIFICATE", made.pem)
    with pytest.raises(ConfigurationError, match=r"MS365_CLIENT_SECRET and "
                       r"MS365_CLIENT_CERTIFICATE are set"):
        MS365CredentialsPlugin()
    monkeypatch.delenv("MS365_CLIENT_SECRET")
    monkeypatch.delenv("MS365_CLIENT_CERTIFICATE")
    with pytest.raises(ConfigurationError, match=r"MS365_CLIENT_ID is set but "
                       r"MS365_CLIENT_SECRET or MS365_CLIENT_CERTIFICATE is missing"):
        MS365CredentialsPlugin()


def test_a_pem_without_a_private_key(sandbox):
    made = sandbox.add_certificate()
    with pytest.raises(ConfigurationError, match="holds no private key.*the certificate "
                       "alone is what you upload to Azure"):
        MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.certificate_pem)


def test_an_encrypted_key_needs_its_password_and_the_right_one(sandbox, tmp_path):
    made = make_certificate(password="correct horse")
    path = tmp_path / "key.pem"
    path.write_text(made.pem)
    client_id = sandbox.app.client_id
    with pytest.raises(ConfigurationError, match="the private key is encrypted: give its "
                       "password"):
        MS365CredentialsPlugin(client_id, client_certificate=path)
    with pytest.raises(ConfigurationError, match="the password does not decrypt") as caught:
        MS365CredentialsPlugin(client_id, client_certificate=path,
                               client_certificate_password="wrong")
    assert "wrong" not in str(caught.value).replace("(wrong client_certificate_password)", "")
    ok = MS365CredentialsPlugin(client_id, client_certificate=path,
                                client_certificate_password="correct horse")
    assert ok.ms365_account is not None


@pytest.mark.parametrize("thumbprint, problem", [
    ("12:34", "not a SHA-1 thumbprint"),
    ("A" * 40, "is not this certificate's"),
])
def test_a_thumbprint_that_cannot_be_right(sandbox, thumbprint, problem):
    made = sandbox.add_certificate()
    with pytest.raises(ConfigurationError, match=problem):
        MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.pem,
                               client_certificate_thumbprint=thumbprint)


def test_a_key_alone_needs_the_thumbprint_and_takes_it_as_the_portal_shows_it(sandbox):
    made = sandbox.add_certificate()
    with pytest.raises(ConfigurationError, match="set client_certificate_thumbprint"):
        MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.key_pem)
    spaced = " ".join(made.thumbprint[i:i + 2] for i in range(0, 40, 2)).lower()
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.key_pem,
                                    client_certificate_thumbprint=spaced,
                                    tenant_id=sandbox.tenant.tenant_id, auth_flow="app")
    plugin.authenticate()
    assert signed_with_assertions(sandbox.token_requests("client_credentials"))


def test_a_missing_file(sandbox, tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=tmp_path / "nope.pem")


def test_a_pfx_as_windows_exports_it(sandbox, tmp_path):
    """Export-PfxCertificate writes PKCS#12 with a password; the bot takes its path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    made = sandbox.add_certificate()
    key = serialization.load_pem_private_key(made.key_pem.encode(), None)
    cert = x509.load_pem_x509_certificate(made.certificate_pem.encode())
    pfx = tmp_path / "bot.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"bot", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")))
    client_id, tenant = sandbox.app.client_id, sandbox.tenant.tenant_id
    with pytest.raises(ConfigurationError, match="the .pfx cannot be opened: give its password"):
        MS365CredentialsPlugin(client_id, client_certificate=pfx)
    with pytest.raises(ConfigurationError, match="wrong client_certificate_password"):
        MS365CredentialsPlugin(client_id, client_certificate=pfx,
                               client_certificate_password="nope")
    plugin = MS365CredentialsPlugin(client_id, client_certificate=pfx, tenant_id=tenant,
                                    client_certificate_password="pfx-pass", auth_flow="app")
    plugin.authenticate()
    assert signed_with_assertions(sandbox.token_requests("client_credentials"))


# -- Done when 6: status shows the certificate and warns before it expires -----------------
@pytest.mark.parametrize("days, warned", [(365, False), (20, True)])
def test_status_shows_the_certificate_and_warns_30_days_ahead(sandbox, maestro, tmp_path,
                                                               days, warned):
    made = sandbox.add_certificate(days=days)
    sandbox.put_app_certificate(LABEL, made.pem)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).sign_in(
        SCOPES, consent=sandbox.consent_redirect)
    sandbox.requests.clear()
    env = bot_env(sandbox, BOTCITY_SERVER=sandbox.maestro_url,
                  BOTCITY_LOGIN=sandbox.maestro.login, BOTCITY_KEY=sandbox.maestro.key)
    run = run_process([sys.executable, "-m", "botcity.plugins.ms365.credentials", "status",
                       "--label", LABEL], env, cwd=tmp_path, stdin_closed=True)
    assert run.returncode == 0, run.stdout + run.stderr
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).strftime("%Y-%m-%d")
    assert f"App credential: certificate {made.thumbprint}, expires " in run.stdout
    assert expires in run.stdout or str(int(expires[-2:]) - 1) in run.stdout
    assert ("warning: the app's certificate" in run.stderr) is warned
    assert len(sandbox.requests("maestro", path_contains="/api/v2/credential")) == 1


# -- the sandbox answers as Entra ID does -----------------------------------------------
def _assertion(sandbox, made, **claims):
    endpoint = f"{sandbox.authority_host}/{sandbox.tenant.tenant_id}/oauth2/v2.0/token"
    now = time.time()
    body = {"aud": endpoint, "iss": sandbox.app.client_id, "sub": sandbox.app.client_id,
            "exp": now + 600, "iat": now, "jti": "same-jti", **claims}
    import base64
    x5t = base64.urlsafe_b64encode(bytes.fromhex(made.thumbprint)).decode()
    return endpoint, jwt.encode(body, made.key_pem, algorithm="RS256", headers={"x5t": x5t})


@pytest.mark.parametrize("claims, code", [
    ({}, None),
    ({"exp": time.time() - 5}, "AADSTS700024"),
    ({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"}, "AADSTS700023"),
    ({"iss": "someone-else"}, "AADSTS700021"),
])
def test_the_sandbox_checks_assertions_as_entra_id_does(sandbox, claims, code):
    made = sandbox.add_certificate()
    endpoint, assertion = _assertion(sandbox, made, **claims)
    form = {"grant_type": "client_credentials", "client_id": sandbox.app.client_id,
            "scope": "https://graph.microsoft.com/.default", "client_assertion": assertion,
            "client_assertion_type": ASSERTION}
    answers = [requests.post(endpoint, data=form, verify=sandbox.ca_file, timeout=10)
               for _ in range(2)]  # the same jti twice: msal re-sends one for 9 minutes
    if code is None:
        assert [a.status_code for a in answers] == [200, 200]
    else:
        assert answers[0].status_code == 401
        assert answers[0].json()["error"] == "invalid_client"
        assert answers[0].json()["error_description"].startswith(code)
    both = requests.post(endpoint, data={**form, "client_secret": sandbox.app.secret},
                         verify=sandbox.ca_file, timeout=10)
    assert both.status_code == 400 and "AADSTS9002324" in both.json()["error_description"]


def test_a_certificate_rotated_in_maestro_is_used_and_an_unchanged_one_not_loaded_again(
        sandbox, maestro, certified, monkeypatch):
    """Every renewal reads the credential; only a changed one is loaded (decrypting a key
    on every read would be paid by every bot), and the operator's new one is then used."""
    import botcity.plugins.ms365.credentials.certificates as certificates

    loads: list[str] = []
    real = certificates.load_certificate

    def counting(value, **options):
        loads.append(options["where"])
        return real(value, **options)

    monkeypatch.setattr(certificates, "load_certificate", counting)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert len(loads) == 1
    for _ in range(3):  # the reads a bot makes while renewing
        assert plugin._vault.read(LABEL, max_age=0) is not None
    assert len(loads) == 1, "an unchanged certificate is not loaded again"

    # the operator uploads a new certificate and puts it in the credential
    new = sandbox.add_certificate()
    sandbox.put_app_certificate(LABEL, new.pem)
    sandbox.tenant.apps[sandbox.app.client_id].certificates[:1] = []  # the old one removed
    sandbox.force_expiry()
    plugin._vault.read(LABEL, max_age=0)
    assert len(loads) == 2
    assert plugin.ms365_account.get_current_user_data().user_principal_name
    assert sandbox.token_requests("refresh_token")[-1].status == 200
