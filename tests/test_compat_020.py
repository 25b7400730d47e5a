"""Code written against 0.2.0 runs unchanged. The snippets are the ways people call it:
keyword and positional credentials, ``token_path=``, ``authenticate(scopes=[...])`` with
repeated members, ``authenticate()`` with no scopes, ``.credentials``, and
``ms365_account.is_authenticated``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import botcity.plugins.ms365.credentials as package
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes
from conftest import bot_env, consent_answerer, run_process, script

SNIPPETS = {
    "keywords_and_repeated_scopes": """
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes
import os

service = MS365CredentialsPlugin(
    client_id=os.environ["APP_ID"],
    client_secret=os.environ["APP_SECRET"],
)
scopes_list = [Scopes.BASIC, Scopes.FILES_READ_WRITE_ALL, Scopes.MAIL_READ_WRITE,
               Scopes.MAIL_READ_WRITE, Scopes.MAIL_SEND]
service.authenticate(scopes=scopes_list)
print("authenticated:", service.ms365_account.is_authenticated)
""",
    "token_path_and_sites": """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

service = MS365CredentialsPlugin(
    client_id=os.environ["APP_ID"],
    client_secret=os.environ["APP_SECRET"],
    token_path=os.environ["TOKEN_DIR"]
)
service.authenticate(scopes=[Scopes.BASIC, Scopes.FILES_READ_WRITE_ALL,
                             Scopes.SITES_READ_WRITE_ALL])
print("authenticated:", service.ms365_account.is_authenticated)
""",
    "positional_and_no_scopes": """
import os
from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

bot = MS365CredentialsPlugin(os.environ["APP_ID"], os.environ["APP_SECRET"])
bot.authenticate()
assert bot.credentials[0] == os.getenv("APP_ID")
assert bot.credentials[1] == os.getenv("APP_SECRET")
print("authenticated:", bot.ms365_account.is_authenticated)
""",
}

EXPECTED_PERMISSIONS = {
    "keywords_and_repeated_scopes": {"User.Read", "Files.ReadWrite.All", "Mail.ReadWrite",
                                     "Mail.Send"},
    "token_path_and_sites": {"User.Read", "Files.ReadWrite.All", "Sites.ReadWrite.All"},
    "positional_and_no_scopes": {"User.Read"},
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet_runs_unchanged(name, sandbox, tmp_path):
    token_dir = tmp_path / "tokens"
    token_dir.mkdir()
    env = bot_env(sandbox, APP_ID=sandbox.app.client_id, APP_SECRET=sandbox.app.secret,
                  TOKEN_DIR=str(token_dir))

    run = run_process(script(tmp_path / f"{name}.py", SNIPPETS[name]), env, cwd=tmp_path,
                      answer=consent_answerer(sandbox))

    assert run.returncode == 0, run.stdout + run.stderr
    assert "authenticated: True" in run.stdout
    [authorize] = sandbox.requests("identity", path_contains="/authorize")
    asked = {s.rsplit("/", 1)[-1] for s in authorize.query["scope"].split()}
    assert asked - {"openid", "profile", "offline_access"} == EXPECTED_PERMISSIONS[name]
    where = token_dir if name == "token_path_and_sites" else tmp_path
    assert (where / "o365_token.txt").exists()


def test_version_and_public_names():
    assert package.__version__ == "1.0.0"
    for name in ("BASIC", "FILES_READ", "FILES_READ_WRITE_ALL", "SITES_READ_ALL",
                 "SITES_READ_WRITE_ALL", "MAIL_READ", "MAIL_SEND", "MAIL_READ_WRITE"):
        assert isinstance(Scopes[name], str)


def test_authenticate_has_no_mutable_default(sandbox):
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    scopes = [Scopes.MAIL_READ]
    plugin.authenticate(scopes, consent=sandbox.consent_redirect)
    plugin.authenticate(consent="none")  # the default asks for BASIC only, which is held
    assert scopes == [Scopes.MAIL_READ], "the caller's list is not changed"
    assert MS365CredentialsPlugin.authenticate.__defaults__ == (None, None)


def test_an_o365_2_token_file_keeps_working(sandbox, tmp_path: Path):
    """A token file written by plain O365 2.1 (indented, no plugin metadata) loads."""
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)
    token_file = tmp_path / "o365_token.txt"
    cache = json.loads(token_file.read_text())
    del cache["botcity"]
    token_file.write_text(json.dumps(cache, indent=4))
    sandbox.requests.clear()

    again = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)

    assert again.is_authenticated
    assert again.ms365_account.get_current_user_data().user_principal_name == (
        sandbox.tenant.user.upn
    )
    assert sandbox.requests("identity") == []


def test_a_plugin_token_file_loads_in_plain_o365(sandbox, tmp_path: Path):
    from O365 import Account, FileSystemTokenBackend

    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret)
    plugin.authenticate(consent=sandbox.consent_redirect)

    backend = FileSystemTokenBackend(token_path=tmp_path, token_filename="o365_token.txt")
    account = Account((sandbox.app.client_id, sandbox.app.secret), token_backend=backend)
    assert account.is_authenticated
    assert account.username == sandbox.tenant.user.upn
