"""Contestant (d) of ``benchmarks/costs.py``: the bot a BotCity developer writes without
the plugin, with O365 and botcity-maestro-sdk as their docs show them.

    python benchmarks/hand_written_bot.py <server> <task_id> <token> [<organization>]

It starts as a Runner starts a bot (``from_sys_args``), reads the Azure app's keys and
the user's token from the Maestro credential ``ms365`` (one ``get_credential`` each), and
gives O365 a token backend that loads that text and, after O365 refreshed the access
token, writes the whole msal cache back with ``update_credential``. No coordination: each
bot refreshes when Graph answers 401 on an expired access token, as O365 does.

Only ``sandbox_options`` is not what a bot against Microsoft writes: O365 2.1
hard-codes ``login.microsoftonline.com`` and Graph's address, so, when the sandbox's
variables are set, Graph's URL, the authority and the tenant come from them. That costs
nothing at a warm start (msal's client is built only for a refresh).
"""

from __future__ import annotations

import os

from botcity.maestro import BotMaestroSDK
from O365 import Account
from O365.utils import BaseTokenBackend

LABEL = "ms365"


class MaestroTokenBackend(BaseTokenBackend):
    """O365's token cache kept in a Maestro credential (``label``/``key``)."""

    def __init__(self, maestro: BotMaestroSDK, label: str, text: str, key: str = "token"):
        super().__init__()
        self.maestro, self.label, self.key, self.text = maestro, label, key, text

    def load_token(self) -> bool:
        if not self.text:
            return False
        self._cache = self.deserialize(self.text)
        return True

    def save_token(self, force: bool = False) -> bool:
        if not self._cache:
            return False
        if not force and not self._has_state_changed:
            return True
        self.text = self.serialize()
        self.maestro.update_credential(self.label, self.key, self.text)
        return True

    def check_token(self) -> bool:
        return bool(self.text)

    def delete_token(self) -> bool:
        self.maestro.update_credential(self.label, self.key, "")
        self.text = ""
        return True


def sandbox_options() -> dict:
    """Sandbox only (empty against Microsoft): Graph's URL, the authority and the tenant
    from the sandbox's variables, since O365 2.1 hard-codes Microsoft's."""
    if not os.environ.get("MS365_AUTHORITY_HOST"):
        return {}
    from msal import ConfidentialClientApplication
    from O365.connection import Connection, MSGraphProtocol

    class SandboxGraph(MSGraphProtocol):
        _protocol_url = os.environ["MS365_GRAPH_URL"].rstrip("/") + "/"

    class SandboxConnection(Connection):
        @property
        def msal_client(self):
            if self._msal_client is None:  # as O365 builds it, with another authority
                self._msal_client = ConfidentialClientApplication(
                    self.auth[0], client_credential=self.auth[1], token_cache=self.token_backend,
                    authority=f"{os.environ['MS365_AUTHORITY_HOST'].rstrip('/')}/{self.tenant_id}",
                    instance_discovery=False, proxies=self.proxy, verify=self.verify_ssl,
                    timeout=self.timeout)
            return self._msal_client

    class SandboxAccount(Account):
        connection_constructor = SandboxConnection

    return {"account": SandboxAccount, "protocol": SandboxGraph(),
            "tenant_id": os.environ["MS365_TENANT_ID"]}


def account_from(maestro: BotMaestroSDK, label: str = LABEL) -> Account:
    client_id = maestro.get_credential(label, "client_id")
    client_secret = maestro.get_credential(label, "client_secret")
    backend = MaestroTokenBackend(maestro, label, maestro.get_credential(label, "token"))
    options = sandbox_options()
    account_class = options.pop("account", Account)
    return account_class((client_id, client_secret), token_backend=backend, **options)


def main() -> None:
    account = account_from(BotMaestroSDK.from_sys_args())
    assert account.get_current_user_data().user_principal_name


if __name__ == "__main__":
    main()
