"""A write to a Maestro credential never replaces what a failed read could not see
(issue 25, item 4)."""

from __future__ import annotations

import pytest

from botcity.plugins.ms365.credentials import StoreUnavailable
from botcity.plugins.ms365.credentials._maestro import MaestroVault
from botcity.plugins.ms365.credentials.persistence import MaestroText

LABEL = "ms365"


def test_a_5xx_on_the_read_before_a_write_writes_nothing(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(500, path_contains=f"/credential/{LABEL}", method="GET")
    sandbox.requests.clear()

    with pytest.raises(StoreUnavailable) as caught:
        MaestroText(MaestroVault(maestro), LABEL).save('{"a": "token"}')

    assert "HTTP 500" in str(caught.value) and "Nothing was written" in str(caught.value)
    assert sandbox.maestro.secret(LABEL, "client_id") == sandbox.app.client_id
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret
    assert sandbox.maestro.secret(LABEL, "tenant_id") == sandbox.tenant.tenant_id
    assert sandbox.maestro.secret(LABEL, "token") is None
    writes = sandbox.requests("maestro", path_contains="/credential", method="POST")
    assert writes == [], "no create or edit was even tried"


def test_a_write_after_maestro_recovers_keeps_the_other_keys(sandbox, maestro):
    sandbox.put_app_credentials(LABEL)
    sandbox.maestro.fail_next(503, path_contains=f"/credential/{LABEL}", method="GET")
    text = MaestroText(MaestroVault(maestro), LABEL)
    with pytest.raises(StoreUnavailable):
        text.save('{"a": "token"}')

    text.save('{"a": "token"}')

    assert sandbox.maestro.secret(LABEL, "token") == '{"a": "token"}'
    assert sandbox.maestro.secret(LABEL, "client_secret") == sandbox.app.secret
