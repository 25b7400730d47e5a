"""The first consent in a process of its own: what :meth:`.sandbox.Sandbox.authorize`
runs, so that the process that asked keeps its environment. The plugin learns where the
sandbox is, and trusts its CA, from this process's environment (``REQUESTS_CA_BUNDLE`` is
the only way to have requests trust a CA whatever the caller's environment says); the
sandbox's servers play the person who signs in and accepts.

    python -m botcity.plugins.ms365.sandbox.first_consent '{"label": ..., "scopes": [...]}'

The request (JSON, first argument): ``label`` and ``scopes``; the sandbox Maestro's
connection is ``BOTCITY_SERVER``, ``BOTCITY_LOGIN`` and ``BOTCITY_KEY`` (not on the command
line). Exit 0 when the token is stored; 1 with the plugin's error as JSON
(``{"error": class name, "message": ...}``) on the last line of stdout.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    from botcity.maestro import BotMaestroSDK

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin
    from botcity.plugins.ms365.credentials.errors import MS365CredentialsError

    from .sandbox import accept_sign_in

    request = json.loads(argv[0])
    ca_file = os.environ["REQUESTS_CA_BUNDLE"]
    maestro = BotMaestroSDK(os.environ["BOTCITY_SERVER"], os.environ["BOTCITY_LOGIN"],
                            os.environ["BOTCITY_KEY"])
    maestro.login()
    try:
        MS365CredentialsPlugin(maestro=maestro, credential_label=request["label"]).sign_in(
            request["scopes"], consent=lambda url: accept_sign_in(url, ca_file))
    except MS365CredentialsError as exc:
        sys.stdout.write(json.dumps({"error": type(exc).__name__, "message": str(exc)}) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
