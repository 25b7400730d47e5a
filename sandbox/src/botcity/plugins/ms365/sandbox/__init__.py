"""botcity-ms365-sandbox: a local Microsoft identity platform, Microsoft Graph and BotCity
Maestro, to test a bot that uses botcity-ms365-credentials-plugin with nobody and nothing
real: real HTTPS servers on 127.0.0.1, driven by the real O365, msal and
botcity-maestro-sdk.

The layers, each importing only the ones above it:

- the servers, which import nothing of the plugin: :mod:`._http`, :mod:`._tls`,
  :mod:`.distance` (a delaying proxy in front of one),
  :mod:`.client_assertions`, :mod:`.identity`, :mod:`.graph`, :mod:`.maestro`;
- :class:`Sandbox` (:mod:`.sandbox`): the three together, and what a client needs;
- what drives the plugin: :class:`MS365Sandbox` (:mod:`.fixture`, what the
  ``ms365_sandbox`` pytest fixture of :mod:`.pytest_plugin` yields),
  ``Sandbox.authorize``, and the ``botcity-ms365 sandbox`` and ``botcity-ms365 demo``
  subcommands (:mod:`.subcommands`, :mod:`.command`, :mod:`.demo`).

The plugin imports nothing of this package.
"""

from .fixture import MS365Sandbox
from .sandbox import Request, Sandbox, accept_sign_in, expire_token_text

__version__ = "1.0.0"

__all__ = ["MS365Sandbox", "Request", "Sandbox", "__version__", "accept_sign_in",
           "expire_token_text"]
