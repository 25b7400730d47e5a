"""No secret (client secret, access/refresh/id token, authorization code, Maestro key or
token) appears in any log record at any level, in repr(), or in exception text."""

from __future__ import annotations

import json
import logging
import os

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    MS365CredentialsError,
    MS365CredentialsPlugin,
    Scopes,
    ServiceUnavailable,
)
from botcity.plugins.ms365.credentials._o365 import redact

LABEL = "ms365"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def every_log():
    """Every logger (O365, msal, requests, urllib3, the SDK, the plugin) at DEBUG."""
    capture = Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in
              ["", *logging.root.manager.loggerDict]}
    root.addHandler(capture)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def secrets_seen(sandbox, maestro) -> set[str]:
    found = {sandbox.app.secret, sandbox.maestro.key, maestro.access_token}
    found |= set(sandbox.tenant.access_tokens) | set(sandbox.tenant.refresh_tokens)
    for request in sandbox.requests("identity"):
        form = request.form()
        for key in ("client_secret", "code", "refresh_token", "code_verifier", "device_code"):
            if form.get(key):
                found.add(form[key])
    for request in sandbox.requests("maestro"):
        if request.headers.get("token"):
            found.add(request.headers["token"])
    stored = sandbox.maestro.secret(LABEL, "token")
    if stored and stored.startswith("{"):
        for section in ("AccessToken", "RefreshToken", "IdToken"):
            for entry in json.loads(stored).get(section, {}).values():
                found.add(entry["secret"])
    return {s for s in found if s and len(s) >= 8}


def test_no_secret_in_logs_repr_or_errors(sandbox, maestro, every_log):
    errors: list[BaseException] = []
    reprs: list[str] = []

    def attempt(action):
        try:
            action()
        except MS365CredentialsError as exc:
            errors.append(exc)

    sandbox.put_app_credentials(LABEL)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate([Scopes.MAIL_READ], consent=sandbox.consent_redirect)
    plugin.ms365_account.get_current_user_data()
    reprs += [repr(plugin), repr(plugin.ms365_account), repr(plugin.ms365_account.con
                                                             .token_backend)]

    # refresh with write-back
    sandbox.force_expiry()
    refreshed = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    refreshed.ms365_account.get_current_user_data()
    # Maestro fails while the rotated token is saved: kept locally, pushed at next start
    sandbox.force_expiry()
    failing = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{LABEL}", method="POST",
                              times=2)  # the claim on the expired token, then the save
    failing.ms365_account.get_current_user_data()
    assert any("will be written to Maestro at the next start" in t for t in every_log.texts)
    pushed = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert pushed.is_authenticated
    # Microsoft throttles, then recovers
    sandbox.force_expiry()
    sandbox.identity.fail_next(429, retry_after=0.2, path_contains="/token",
                               body={"error": "temporarily_unavailable",
                                     "error_description": "AADSTS50196: throttled."})
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL
                           ).ms365_account.get_current_user_data()
    # Microsoft is down for longer than the retry budget
    sandbox.force_expiry()
    sandbox.identity.fail_next(503, path_contains="/token", times=50, body={
        "error": "temporarily_unavailable", "error_description": "AADSTS90033: transient."})
    os.environ["MS365_RETRY_SECONDS"] = "1"
    try:
        attempt(MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL
                                       ).ms365_account.get_current_user_data)
    finally:
        del os.environ["MS365_RETRY_SECONDS"]
    sandbox.identity.clear_faults()
    # the client secret is wrong
    sandbox.force_expiry()
    wrong = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret[::-1],
                                   maestro=maestro, token_label=LABEL)
    attempt(wrong.ms365_account.get_current_user_data)
    # the refresh token is revoked
    sandbox.force_expiry()
    sandbox.tenant.kill_refresh_tokens("password_reset")
    dead = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    assert dead.is_authenticated is False
    attempt(lambda: dead.authenticate(consent="none"))
    # Maestro refuses the bot
    sandbox.maestro.fail_next(401, path_contains="/api/v2/credential/")
    attempt(lambda: MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL))
    reprs += [repr(dead), repr(wrong)]
    secrets = secrets_seen(sandbox, maestro)

    assert len(errors) == 4, errors
    assert any(isinstance(e, ServiceUnavailable) for e in errors)
    assert any(isinstance(e, AuthorizationRequired) and e.code == "AADSTS50173" for e in errors)
    texts = [*every_log.texts, *reprs, *(str(e) for e in errors),
             *(repr(e) for e in errors)]
    assert any(t.startswith("O365.connection DEBUG Session default headers") for t in texts)
    assert any(t.startswith("urllib3.connectionpool DEBUG") for t in texts)
    assert len(every_log.texts) > 50
    assert len(secrets) >= 10
    leaks = [(s[:6] + "...", t[:120]) for t in texts for s in secrets if s in t]
    assert leaks == []
    # msal's discovery answers saved with the token: GET answers only, after token
    # requests that failed in every way msal's own HTTP cache remembers (400, 429, 5xx)
    saved = json.loads(sandbox.maestro.secret(LABEL, "token"))["botcity"]["discovery"]
    assert [url.rsplit("/", 2)[-2:] for url in saved] == [
        [".well-known", "openid-configuration"]]
    assert [s[:6] for s in secrets if s in json.dumps(saved)] == []


def test_o365s_bearer_header_log_is_redacted(sandbox, every_log):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)
    plugin.ms365_account.get_current_user_data()

    headers = [t for t in every_log.texts if "Session default headers" in t]
    assert headers and all("Bearer <redacted>" in t for t in headers)


@pytest.mark.parametrize(
    "text",
    [
        "{'Authorization': 'Bearer eyJ0eXAiOiJKV1Qi.abc-def_ghi'}",
        '{"access_token": "eyJ0eXAiOiJKV1Qi", "expires_in": 3599}',
        "refresh_token=0.AXcAabc-def&client_secret=s3cr3t~value&grant_type=refresh_token",
        "'id_token': 'a.b.c'",
        '{\n    "code": "M.C507_abc",\n    "code_verifier": "xQ9-verifier"\n}',
        "device_code=DAQABAAEAAA&secret=hunter2-long",
    ],
)
def test_redact_removes_token_values(text):
    cleaned = redact(text)
    for secret in ("eyJ0eXAiOiJKV1Qi", "0.AXcAabc-def", "s3cr3t~value", "a.b.c", "M.C507_abc",
                   "xQ9-verifier", "DAQABAAEAAA", "hunter2-long"):
        assert secret not in cleaned
    assert "<redacted>" in cleaned


def test_no_certificate_key_password_or_assertion_in_logs_repr_or_errors(sandbox, maestro,
                                                                          every_log, tmp_path):
    from botcity.plugins.ms365.sandbox.client_assertions import make_certificate

    password = "pem-password-" + "x" * 8
    made = make_certificate(password=password)
    sandbox.tenant.upload_certificate(sandbox.app, made.certificate_pem)
    sandbox.put_app_certificate(LABEL, made.pem, password=password)
    errors: list[BaseException] = []
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate([Scopes.MAIL_READ], consent=sandbox.consent_redirect)
    sandbox.force_expiry()
    renewed = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    renewed.ms365_account.get_current_user_data()
    app_only = MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.pem,
                                      client_certificate_password=password,
                                      tenant_id=sandbox.tenant.tenant_id, auth_flow="app")
    app_only.authenticate()
    # a certificate the app does not know, and a wrong password
    stranger = make_certificate()
    sandbox.put_app_certificate(LABEL, stranger.pem)
    sandbox.force_expiry()
    try:
        MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL
                               ).ms365_account.get_current_user_data()
    except MS365CredentialsError as exc:
        errors.append(exc)
    try:
        MS365CredentialsPlugin(sandbox.app.client_id, client_certificate=made.pem,
                               client_certificate_password="not-the-" + password)
    except MS365CredentialsError as exc:
        errors.append(exc)
    reprs = [repr(plugin), repr(renewed), repr(app_only), repr(plugin._app),
             repr(plugin._app.certificate)]

    key_lines = {line for pem in (made.key_pem, stranger.key_pem,
                                  plugin._app.certificate.private_key_pem)
                 for line in pem.splitlines() if "-----" not in line and len(line) >= 16}
    assertions = {r.form()["client_assertion"] for r in sandbox.requests("identity")
                  if r.form().get("client_assertion")}
    signatures = {a.rsplit(".", 1)[1] for a in assertions}
    secrets = key_lines | assertions | signatures | {password, "not-the-" + password}
    secrets |= secrets_seen(sandbox, maestro) - {sandbox.app.secret}
    assert len(errors) == 2 and len(assertions) >= 3
    texts = [*every_log.texts, *reprs, *(str(e) for e in errors), *(repr(e) for e in errors),
             *(a["message"] for a in sandbox.maestro.alerts)]
    assert any(t.startswith("msal.") for t in every_log.texts), "msal's DEBUG logs were seen"
    assert len(every_log.texts) > 50
    leaks = [(s[:6] + "...", t[:120]) for t in texts for s in secrets if s in t]
    assert leaks == []
