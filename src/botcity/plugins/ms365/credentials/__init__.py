"""Microsoft 365 credentials for BotCity bots.

The Azure app's client id and secret and the user's token live in a BotCity Maestro
credential (or a local file), so an unattended Runner gets an authenticated
``O365.Account`` without a person::

    from botcity.plugins.ms365.credentials import MS365CredentialsPlugin, Scopes

    service = MS365CredentialsPlugin(maestro=maestro, credential_label="ms365")
    service.authenticate([Scopes.MAIL_READ_WRITE])
    account = service.ms365_account
"""

from ._maestro import task_execution
from .azure_credential import MS365TokenCredential
from .errors import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    MS365CredentialsError,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    TokenFormatError,
)
from .plugin import MS365CredentialsPlugin
from .scopes import Scopes
from .stores import FileTokenStore, MaestroTokenStore

__version__ = "1.0.0"

# Other distributions' folders of this package on sys.path join it (an editable install of
# botcity-ms365-sandbox ships the deprecated ``.sandbox`` alias there); imports nothing.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__all__ = [
    "AuthorizationError",
    "AuthorizationRequired",
    "ConfigurationError",
    "FileTokenStore",
    "MS365CredentialsError",
    "MS365CredentialsPlugin",
    "MS365TokenCredential",
    "MaestroTokenStore",
    "Scopes",
    "ServiceUnavailable",
    "StoreError",
    "StoreUnavailable",
    "TokenFormatError",
    "__version__",
    "task_execution",
]
