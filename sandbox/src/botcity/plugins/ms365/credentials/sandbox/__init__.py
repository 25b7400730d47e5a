"""Deprecated: the sandbox's old import path, ``botcity.plugins.ms365.credentials.sandbox``.

The sandbox is the distribution botcity-ms365-sandbox now, imported as
``botcity.plugins.ms365.sandbox``. This package, shipped by that distribution (the
plugin's own wheel has no sandbox), keeps the old path working until 1.2: it warns, then
gives the new package's names, and its submodules are the new modules (the same objects:
``credentials.sandbox.fixture.MS365Sandbox is sandbox.fixture.MS365Sandbox``).
``certificates`` is the new ``client_assertions``; ``herd`` moved to the repository's
benchmarks.
"""

import importlib
import sys
import warnings
from typing import Any

from botcity.plugins.ms365 import sandbox as _new
from botcity.plugins.ms365.sandbox import *  # noqa: F403 - the same names, from the new path

NEW = "botcity.plugins.ms365.sandbox"
#: old submodule -> new module
MOVED = {"fixture": "fixture", "certificates": "client_assertions", "identity": "identity",
         "graph": "graph", "maestro": "maestro", "command": "command", "demo": "demo",
         "_http": "_http", "_tls": "_tls"}

warnings.warn(f"{__name__} is deprecated and goes away in 1.2: import {NEW} (from the "
              "botcity-ms365-sandbox distribution) instead.", DeprecationWarning, stacklevel=2)

for _old, _module in MOVED.items():
    globals()[_old] = sys.modules[f"{__name__}.{_old}"] = importlib.import_module(
        f"{NEW}.{_module}")

__all__ = list(_new.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_new, name)
