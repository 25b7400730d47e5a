"""What a bot run costs in requests (the fast check of benchmarks/costs.py): counts, not
times. Every extra Maestro or token request is paid by every bot run."""

from __future__ import annotations

import pytest

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin

# counts, as the README table reports them:
#   warm start: 1 read; refresh during a run: 2 reads + 2 writes (lease) or 1 + 1 (no lease);
#   refresh right at start: 1 read + 2 writes (the start's read serves as the first look)

LABEL = "ms365"


def credential_requests(sandbox, method):
    return len(sandbox.requests("maestro", path_contains="/api/v2/credential", method=method))


@pytest.fixture
def stored(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL).authenticate(
        consent=sandbox.consent_redirect)
    return sandbox


def test_warm_start_is_one_maestro_read_and_no_token_request(stored, maestro):
    stored.requests.clear()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()
    plugin.ms365_account.get_current_user_data()

    assert credential_requests(stored, "GET") == 1
    assert credential_requests(stored, "POST") == 0
    assert stored.requests("identity") == []


@pytest.mark.parametrize(("lease", "reads", "writes"), [("1", 2, 2), ("0", 1, 1)],
                         ids=["with-lease", "without-lease"])
def test_a_refresh_during_a_run(stored, maestro, monkeypatch, lease, reads, writes):
    from botcity.plugins.ms365.credentials import coordination

    monkeypatch.setattr(coordination, "FRESH_READ_SECONDS", 0.0)  # the start was long ago
    monkeypatch.setenv("MS365_COORDINATE_REFRESH", lease)
    stored.force_expiry()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    stored.requests.clear()

    plugin.ms365_account.get_current_user_data()

    assert len(stored.token_requests()) == 1
    assert plugin.ms365_account.con.refresh_count == 1
    assert credential_requests(stored, "GET") == reads
    assert credential_requests(stored, "POST") == writes


def test_a_bot_starting_on_an_expired_token_reuses_its_start_read(stored, maestro):
    stored.force_expiry()
    stored.requests.clear()
    plugin = MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL)
    plugin.authenticate()  # at start: the token in Maestro has expired

    assert len(stored.token_requests()) == 1
    assert credential_requests(stored, "GET") == 2, "the start's read, then the verify"
    assert credential_requests(stored, "POST") == 2, "the lease, then the token"
