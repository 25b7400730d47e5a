"""The ``ms365_sandbox`` pytest fixture (registered by botcity-ms365-sandbox's ``pytest11``
entry point ``botcity_ms365``, so installing that distribution is enough to use it).

    def test_my_bot(ms365_sandbox):
        ms365_sandbox.authorize("ms365", scopes=["basic", "mail_send"])
        ...

A test's marker sets the sandbox up at a distance, or with a slower Maestro (the keyword
arguments of :class:`~botcity.plugins.ms365.sandbox.Sandbox`)::

    @pytest.mark.ms365_sandbox(round_trip={"maestro": 0.040, "microsoft": 0.020},
                               maestro_latency=(0.05, 0.3))
    def test_my_bot_far_away(ms365_sandbox):
        ...

See :class:`~botcity.plugins.ms365.sandbox.fixture.MS365Sandbox`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .fixture import MS365Sandbox


MARKER = "ms365_sandbox"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**options): the ms365_sandbox fixture's Sandbox options "
        "(round_trip={'maestro': s, 'microsoft': s}, maestro_latency=(low, high), "
        "maestro_write_latency, maestro_visibility_delay, maestro_token_lifetime, "
        "maestro_tls, cae=False: a tenant without continuous access evaluation)")


@pytest.fixture
def ms365_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[MS365Sandbox]:
    """A Microsoft identity platform, Graph and BotCity Maestro on 127.0.0.1 for this test,
    stopped (ports closed, threads ended) when it ends. The test's own process is pointed
    at it (its :attr:`~MS365Sandbox.env` is set, other ``MS365_*``/``BOTCITY_*`` variables
    are removed), so a bot run in-process uses it too. A ``@pytest.mark.ms365_sandbox(...)``
    marker's keyword arguments go to :class:`~botcity.plugins.ms365.sandbox.Sandbox`."""
    from .fixture import MS365Sandbox
    from .sandbox import Sandbox

    folder = tmp_path_factory.mktemp("ms365_sandbox")
    marker = request.node.get_closest_marker(MARKER)
    with Sandbox(**(marker.kwargs if marker else {})) as sandbox:
        box = MS365Sandbox(sandbox, folder)
        for name in list(os.environ):
            if name.startswith(("MS365_", "BOTCITY_")):
                monkeypatch.delenv(name)
        for name, value in box.env.items():
            monkeypatch.setenv(name, value)
        yield box
