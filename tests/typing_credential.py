"""Checked by mypy (pyproject.toml's ``[tool.mypy] files``), never run: ``service.credential``
is accepted where azure-core and Microsoft's Graph SDK expect a credential. mypy fails the
build when the credential's signatures stop matching azure-core's protocols."""

from __future__ import annotations

from azure.core.credentials import (
    AccessToken,
    AccessTokenInfo,
    SupportsTokenInfo,
    TokenCredential,
    TokenProvider,
)
from azure.core.credentials_async import AsyncTokenCredential

from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, MS365TokenCredential

GRAPH = "https://graph.microsoft.com/.default"


def token_credential(service: MS365CredentialsPlugin) -> TokenCredential:
    return service.credential


def supports_token_info(service: MS365CredentialsPlugin) -> SupportsTokenInfo:
    return service.credential


def token_provider(service: MS365CredentialsPlugin) -> TokenProvider:
    return service.credential


def graph_service_client_argument(
        service: MS365CredentialsPlugin) -> TokenCredential | AsyncTokenCredential:
    """What ``GraphServiceClient(credentials=...)`` is annotated to take."""
    return service.credential


def tokens(credential: MS365TokenCredential) -> tuple[AccessToken, AccessTokenInfo]:
    with credential as used:  # SupportsTokenInfo is a context manager
        return (used.get_token(GRAPH, claims=None, tenant_id=None, enable_cae=True),
                used.get_token_info(GRAPH, options={"claims": "{}", "enable_cae": True}))
