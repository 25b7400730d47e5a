"""The two token stores, through the real botcity-maestro-sdk and the file system."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from botcity.plugins.ms365.credentials import (
    FileTokenStore,
    MaestroTokenStore,
    MS365CredentialsPlugin,
    StoreError,
)
from botcity.plugins.ms365.credentials._maestro import MaestroVault
from botcity.plugins.ms365.credentials.stores import FOLD_AT
from conftest import newest_token

LABEL = "ms365"


def a_token(sandbox, tmp_path: Path) -> str:
    """A real token as the plugin stores it (obtained from the sandbox)."""
    plugin = MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                    token_path=tmp_path / "seed.txt")
    plugin.authenticate(consent=sandbox.consent_redirect)
    return (tmp_path / "seed.txt").read_text()


def loaded(store, text: str):
    store.deserialize(text)  # validates
    store._cache = store.deserialize(text)
    store._has_state_changed = True
    return store


# -- file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", "o365_token.txt"),
        ("existing_dir", "existing_dir/o365_token.txt"),
        ("new_dir", "new_dir/o365_token.txt"),
        ("new_file.json", "new_file.json"),
        ("existing_file", "existing_file"),
    ],
)
def test_file_path_rules(tmp_path, monkeypatch, given, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_dir").mkdir()
    (tmp_path / "existing_file").write_text("")
    assert FileTokenStore(given).path == Path(expected)


def test_file_write_is_atomic_and_private(sandbox, tmp_path):
    text = a_token(sandbox, tmp_path)
    target = tmp_path / "out" / "token.txt"
    target.parent.mkdir()
    target.write_text(text)  # an older token, readable by everyone
    os.chmod(target, 0o644)

    store = loaded(FileTokenStore(target), text)
    assert store.save_token() is True

    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["token.txt"]
    saved = json.loads(target.read_text())
    assert saved["RefreshToken"] and saved["botcity"]["account"] == sandbox.tenant.user.upn


def test_an_empty_cache_never_replaces_a_stored_token(sandbox, tmp_path):
    text = a_token(sandbox, tmp_path)
    target = tmp_path / "token.txt"
    target.write_text(text)
    store = FileTokenStore(target)
    assert store.save_token(force=True) is False
    store._cache = {"Account": {}, "AccessToken": {}, "RefreshToken": {}}
    assert store.save_token(force=True) is False
    assert target.read_text() == text


def test_file_that_cannot_be_written(sandbox, tmp_path):
    text = a_token(sandbox, tmp_path)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    store = loaded(FileTokenStore(tmp_path / "blocker" / "token.txt"), text)
    with pytest.raises(StoreError, match="Cannot (read|write) file"):
        store.save_token()


def test_delete_and_check(sandbox, tmp_path):
    text = a_token(sandbox, tmp_path)
    store = loaded(FileTokenStore(tmp_path / "t.txt"), text)
    assert store.check_token() is False
    store.save_token()
    assert store.check_token() is True
    assert store.delete_token() is True
    assert not (tmp_path / "t.txt").exists() and not store.has_data


# -- Maestro -------------------------------------------------------------------------------


def test_save_creates_the_label_when_absent(sandbox, maestro, tmp_path):
    text = a_token(sandbox, tmp_path)
    store = loaded(MaestroTokenStore(MaestroVault(maestro), "fresh-label"), text)
    assert store.load_token() is False  # nothing there yet
    store._cache = store.deserialize(text)
    store.save_token(force=True)
    assert [i["key"] for i in sandbox.maestro.credentials["fresh-label"]] == ["token"]
    assert json.loads(sandbox.maestro.secret("fresh-label", "token"))["RefreshToken"]


def test_save_adds_the_key_then_adds_renewals_beside_it_and_keeps_the_others(
        sandbox, maestro, tmp_path):
    text = a_token(sandbox, tmp_path)
    sandbox.put_app_credentials(LABEL, tenant_id="contoso")
    sandbox.maestro.put_secret(LABEL, "notes", "kept as is")
    vault = MaestroVault(maestro)
    store = loaded(MaestroTokenStore(vault, LABEL), text)

    store.save_token()  # adds the key
    first = json.loads(sandbox.maestro.secret(LABEL, "token"))
    store._has_state_changed = True
    sandbox.requests.clear()
    store.save_token()  # a renewal: added beside it, with no read and nothing else sent

    keys = [i["key"] for i in sandbox.maestro.credentials[LABEL]]
    assert keys[:5] == ["client_id", "client_secret", "tenant_id", "notes", "token"]
    [renewal] = keys[5:]
    assert renewal.startswith(f"token.next.{first['botcity']['generation']}.")
    assert json.loads(sandbox.maestro.secret(LABEL, "token")) == first, "left as it was"
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret
    assert sandbox.maestro.secret(LABEL, "notes") == "kept as is"
    newest = json.loads(newest_token(sandbox, LABEL))
    assert newest["botcity"]["generation"] == first["botcity"]["generation"] + 1
    assert newest["RefreshToken"] == first["RefreshToken"]
    [add] = sandbox.requests("maestro")
    assert (add.method, add.path) == ("POST", f"/api/v2/credential/{LABEL}/key")
    assert set(add.json()) == {"key", "value"}
    reader = MaestroTokenStore(MaestroVault(maestro), LABEL, read_only=True)
    assert reader.load_token() and reader.generation == newest["botcity"]["generation"]


def test_every_eighth_renewal_is_written_over_the_token_and_drops_the_renewals(
        sandbox, maestro, tmp_path):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.put_secret(LABEL, "token", a_token(sandbox, tmp_path))
    store = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert store.load_token()
    start = store.generation
    for _ in range(FOLD_AT - 1):
        store._has_state_changed = True
        store.save_token()
    keys = [i["key"] for i in sandbox.maestro.credentials[LABEL]]
    assert len([k for k in keys if k.startswith("token.next.")]) == FOLD_AT - 1
    sandbox.requests.clear()

    store._has_state_changed = True
    store.save_token()

    assert [(r.method, r.path) for r in sandbox.requests("maestro")] == [
        ("GET", f"/api/v2/credential/{LABEL}"), ("POST", f"/api/v2/credential/{LABEL}")
    ], "a read right before, then the credential written whole"
    keys = [i["key"] for i in sandbox.maestro.credentials[LABEL]]
    assert keys == ["client_id", "client_secret", "tenant_id", "token"], "the renewals folded in"
    written = json.loads(sandbox.maestro.secret(LABEL, "token"))
    assert written["botcity"]["generation"] == start + FOLD_AT
    assert newest_token(sandbox, LABEL) == sandbox.maestro.secret(LABEL, "token")


def test_a_renewal_of_a_token_that_was_logged_out_leads_nowhere(sandbox, maestro, tmp_path):
    """logout removes the token and every renewal beside it; a renewal a running bot adds
    after that names a token that is gone: no bot takes it (stays logged out)."""
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.put_secret(LABEL, "token", a_token(sandbox, tmp_path))
    running = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert running.load_token()
    running._has_state_changed = True
    running.save_token()
    logout = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert logout.load_token()
    sandbox.requests.clear()
    assert logout.delete_token()
    assert [r.method for r in sandbox.requests("maestro")] == ["GET", "POST"], (
        "one read (the removal is made over it), one write")
    assert [i["key"] for i in sandbox.maestro.credentials[LABEL]] == [
        "client_id", "client_secret", "tenant_id"], "the token and its renewal removed"

    running._has_state_changed = True
    running.save_token()  # a renewal under way when logout ran

    assert newest_token(sandbox, LABEL) is None
    assert MaestroTokenStore(MaestroVault(maestro), LABEL).load_token() is False


def test_a_token_removed_meanwhile_is_not_written_back(sandbox, maestro, tmp_path):
    """An operator deleted the label (or ran logout) while the bot ran: the bot's next
    save does not bring the token back."""
    text = a_token(sandbox, tmp_path)
    sandbox.maestro.put_secret(LABEL, "token", text)
    store = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert store.load_token() is True
    del sandbox.maestro.credentials[LABEL]
    store._has_state_changed = True
    store.save_token()
    assert LABEL not in sandbox.maestro.credentials
    assert store.save_renewed() == "not written (removed)"


def test_a_large_non_ascii_value_round_trips(sandbox, maestro, tmp_path):
    """Real tokens with many permissions run to several KB; account names can be UTF-8."""
    data = json.loads(a_token(sandbox, tmp_path))
    for entry in data["Account"].values():
        entry["username"] = "joão.ñandú@contoso.com.br"
    for entry in data["AccessToken"].values():
        entry["secret"] += "x" * (8300 - len(json.dumps(data, separators=(",", ":"))))
    text = json.dumps(data, separators=(",", ":"))
    assert len(text.encode()) >= 8192
    vault = MaestroVault(maestro)
    store = loaded(MaestroTokenStore(vault, LABEL), text)
    store.save_token()

    again = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert again.load_token() is True
    assert again._cache["AccessToken"] == data["AccessToken"]
    assert [a["username"] for a in again._cache["Account"].values()] == [
        "joão.ñandú@contoso.com.br"]
    # the SDK's by-key read gets the same bytes (text/plain; charset=UTF-8)
    assert json.loads(maestro.get_credential(LABEL, "token"))["Account"] == again._cache[
        "Account"]


def test_delete_token_removes_only_the_token_key(sandbox, maestro, tmp_path):
    text = a_token(sandbox, tmp_path)
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.put_secret(LABEL, "token", text)
    store = MaestroTokenStore(MaestroVault(maestro), LABEL)
    assert store.check_token() is True
    store.delete_token()
    assert [i["key"] for i in sandbox.maestro.credentials[LABEL]] == ["client_id",
                                                                      "client_secret",
                                                                      "tenant_id"]


def test_repr_names_the_place_not_the_token(sandbox, maestro, tmp_path):
    text = a_token(sandbox, tmp_path)
    store = loaded(MaestroTokenStore(MaestroVault(maestro), LABEL), text)
    assert repr(store) == (f"MaestroTokenStore(Maestro credential '{LABEL}' key 'token' at "
                           f"{sandbox.maestro_url})")
    assert text not in repr(store)


def test_the_sdk_read_the_vault_relies_on_is_still_there():
    """MaestroVault uses the SDK's private by-label read (one request for the whole set)."""
    import inspect

    from botcity.maestro import BotMaestroSDK

    parameters = inspect.signature(BotMaestroSDK._get_credential_by_label).parameters
    assert list(parameters)[:3] == ["self", "label", "raise_exception"]
    for name in ("_edit_credential_by_label", "_create_credential_by_label",
                 "create_credential", "remove_credential", "is_online"):
        assert hasattr(BotMaestroSDK, name), f"BotMaestroSDK.{name} is gone"


def test_the_store_in_use_is_logged_once_at_info_without_secrets(sandbox, maestro, caplog):
    import logging

    sandbox.put_app_credentials(LABEL)
    caplog.set_level(logging.DEBUG)
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate(consent=sandbox.consent_redirect)
    plugin.ms365_account.get_current_user_data()

    info = [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and "token in" in r.getMessage()
            and r.name.startswith("botcity.plugins")]
    assert info == [f"Microsoft 365 app credentials (client secret) from Maestro credential "
                    f"'{LABEL}'; token in Maestro credential '{LABEL}' key 'token' at "
                    f"{sandbox.maestro_url}"]
    assert sandbox.app.secret not in info[0]


def test_on_a_maestro_older_than_3_renewals_are_only_ever_added(sandbox, tmp_path):
    """Maestro before 3.0.0 cannot change a key, only add one: every renewal is added,
    and none tries to fold the others in (which would fail, keeping the token on the
    Runner instead)."""
    sandbox.maestro.version = "2.9.0"
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.put_secret(LABEL, "token", a_token(sandbox, tmp_path))
    store = MaestroTokenStore(MaestroVault(sandbox.maestro_sdk()), LABEL)
    assert store.load_token()
    start = store.generation
    for _ in range(FOLD_AT + 1):
        store._has_state_changed = True
        assert store.save_renewed() == "saved"
    keys = [i["key"] for i in sandbox.maestro.credentials[LABEL]]
    assert len([k for k in keys if k.startswith("token.next.")]) == FOLD_AT + 1
    newest = json.loads(newest_token(sandbox, LABEL))
    assert newest["botcity"]["generation"] == start + FOLD_AT + 1
