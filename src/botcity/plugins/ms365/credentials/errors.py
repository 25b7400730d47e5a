"""The plugin's exceptions, and what Microsoft's answers mean.

One base class, and a subclass for each thing a user fixes differently. Every message says
one cause, then one next step (a command, when there is one, complete with its ``--label``);
none holds a secret. The messages a user meets most are in :data:`MESSAGES`, each with
when it appears (the documentation's table is made from it).

    MS365CredentialsError
    ├── ConfigurationError      arguments, labels, tenant or app credentials are missing or wrong
    ├── StoreError              Maestro or the token file could not be read or written
    │   ├── StoreUnavailable    ... because Maestro is unreachable or failing (try later)
    │   └── TokenFormatError    the stored token is not one this plugin can load
    ├── ServiceUnavailable      Microsoft's identity platform throttled or failed too long
    └── AuthorizationError      Microsoft refused (wrong or expired secret, refused consent, ...)
        └── AuthorizationRequired   a person must sign in and consent before the bot can go on

:data:`AADSTS` is the table of Azure AD error codes users meet: what each means and what
fixes it, in this plugin's words. :func:`explain` turns one of Microsoft's error answers
into the right exception.

A message whose next step is a sign-in says so with the placeholder ``{command}``; the
plugin, which knows where the token lives and what the bot asks for, puts the whole
``botcity-ms365 login`` command there (:meth:`AuthorizationRequired.complete`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple


class MS365CredentialsError(Exception):
    """Base class of every error this plugin raises on purpose."""


class ConfigurationError(MS365CredentialsError):
    """Arguments, Maestro labels, the tenant or the app's client id/secret are missing or
    malformed."""


class StoreError(MS365CredentialsError):
    """A credential or token store (BotCity Maestro, a local file) failed. ``status`` is
    the HTTP status Maestro answered, when that is what failed (401/403: it refused the
    login's access)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError):
    """Maestro did not answer, or answered 5xx or something that is not Maestro's: a
    passing problem, not a setting. ``status`` is the HTTP status Maestro answered, if
    it answered."""


class ServiceUnavailable(MS365CredentialsError):
    """Microsoft's identity platform answered 429 or 5xx (or was unreachable), or throttled
    a request loop (AADSTS50196), for longer than the retry budget
    (``MS365_RETRY_SECONDS``). ``code`` is the AADSTS code when Microsoft gave one."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


class TokenFormatError(StoreError):
    """The stored token is unreadable (not JSON, truncated) or in a format this version
    cannot load. The stored value is left as it was."""


class AuthorizationError(MS365CredentialsError):
    """Microsoft's identity platform refused a request. ``error`` is the OAuth error
    (``invalid_grant``, ...), ``code`` the AADSTS code when Microsoft gave one."""

    def __init__(self, message: str, *, error: str | None = None, code: str | None = None):
        super().__init__(message)
        self.error = error
        self.code = code

    @property
    def meaning(self) -> str | None:
        known = AADSTS.get(self.code or "")
        return known.meaning if known else None


class AuthorizationRequired(AuthorizationError):
    """No usable token: a person must authorize the app before the bot can use Microsoft
    365. The message says why (``cause``), then what a person must do (``step``), with the
    command that fixes it. ``claims`` is Microsoft's conditional-access challenge, when it
    sent one: the next sign-in passes it on."""

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        missing_permissions: tuple[str, ...] = (),
        error: str | None = None,
        code: str | None = None,
        claims: str | None = None,
    ):
        #: what was wrong, and what to do (``{command}``: the sign-in command, in full once
        #: :meth:`complete` was called)
        self.cause, self.step = message, step
        super().__init__(_sentences(message, step.replace(COMMAND, LOGIN)), error=error,
                         code=code)
        self.missing_permissions = missing_permissions
        self.claims = claims

    def complete(self, command: str) -> AuthorizationRequired:
        """Put ``command`` (``botcity-ms365 login --label ...``) where the next step names
        the sign-in; return this error. A step without a command is left as it is."""
        if COMMAND in self.step:
            self.step = self.step.replace(COMMAND, command)
            self.args = (_sentences(self.cause, self.step),)
        return self

    @classmethod
    def told(cls, name: str, *, missing_permissions: tuple[str, ...] = (),
             error: str | None = None, code: str | None = None, claims: str | None = None,
             **values: object) -> AuthorizationRequired:
        """The error of :data:`MESSAGES` ``name``, with ``values`` in its text."""
        said = MESSAGES[name]
        assert said.raised_as is cls, name
        return cls(said.cause.format(**values), step=said.step.format(
            command=COMMAND, **values), missing_permissions=missing_permissions, error=error,
            code=code, claims=claims)


def _sentences(*parts: str) -> str:
    return " ".join(part for part in parts if part)


# -- the sign-in command -------------------------------------------------------------------
#: The command a person runs to sign in, as a message says it before the plugin knows the
#: rest (its --label or --token-path, its --scopes).
LOGIN = "botcity-ms365 login"
#: Where a message's next step names that command (see :meth:`AuthorizationRequired.complete`).
COMMAND = "{command}"
#: Where the Maestro connection's address comes from.
_SERVER = "BOTCITY_SERVER, or the server the Runner is set up with"


def login_command(*, label: str | None = None, token_label: str | None = None,
                  token_key: str = "token", token_path: str | None = None,  # noqa: S107
                  scopes: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> str:
    """``botcity-ms365 login`` with what it needs to sign in for a token in Maestro
    credential ``label`` (``token_label``, ``token_key``: where the token goes when
    elsewhere) or in the file ``token_path``, for ``scopes`` (and the options ``extra``);
    and what must be set for it."""
    words = [LOGIN]
    if label or token_label:
        words += ["--label", str(label or token_label)]
        if token_label and token_label != (label or token_label):
            words += ["--token-label", token_label]
        if token_key != "token":  # noqa: S105 - a key's name
            words += ["--token-key", token_key]
        then = "(with BOTCITY_SERVER, BOTCITY_LOGIN and BOTCITY_KEY of this workspace set)"
    else:
        words += ["--token-path", token_path or "."]
        then = "(with MS365_CLIENT_ID and MS365_CLIENT_SECRET set)"
    if scopes:
        words += ["--scopes", *scopes]
    return " ".join([*words, *extra, then])


# -- the messages users meet ----------------------------------------------------------------
class Told(NamedTuple):
    """One message: ``cause`` (one sentence: what is wrong) and ``step`` (one sentence: the
    thing to do; ``{command}``, the whole sign-in command), with ``{names}`` for what
    varies; ``raised_as``, its exception; ``when``, when it appears (for the docs)."""

    raised_as: type[MS365CredentialsError]
    cause: str
    step: str
    when: str


#: The next step of a token that a person must renew (``{command}``: the sign-in).
SIGN_IN_AGAIN = "A person must sign in again, on a machine with a browser: {command}."
_SIGN_IN = SIGN_IN_AGAIN

#: Every message of this table is raised by the plugin, word for word (tests/test_messages.py
#: makes each happen; docs/troubleshooting.md shows the table).
MESSAGES: dict[str, Told] = {
    # -- the Maestro credential and the app's keys
    "no-such-label": Told(
        ConfigurationError,
        "Maestro credential '{label}' does not exist at {server} (is the label mistyped?).",
        "To create it with the app's keys and a token, run on a machine with a browser: "
        "{command}.",
        "The bot, or a command, names a credential label the workspace does not have (a "
        "typo, another workspace), whether or not the app's keys are also set on this "
        "machine (MS365_CLIENT_ID, MS365_CLIENT_SECRET)."),
    "label-without-app-keys": Told(
        ConfigurationError,
        "Maestro credential '{label}' at {server} has no app keys (client_id, and "
        "client_secret or client_certificate): it holds {keys}.",
        "Add client_id and client_secret (the Value of one of the app's client secrets, not "
        "its ID) to it in Maestro (Credentials), then run the bot again.",
        "The credential holds only a token (signed in with the app's keys of a developer's "
        "environment, which a Runner does not have), or nothing yet."),
    "no-app-keys": Told(
        ConfigurationError,
        "No client id and credential for the Azure app: not in {searched}.",
        "Set MS365_CLIENT_ID and MS365_CLIENT_SECRET (the app's Application (client) ID and "
        "the Value of one of its client secrets), or pass client_id and client_secret.",
        "Neither the plugin's arguments, nor a Maestro credential, nor the environment holds "
        "the app's keys."),
    "login-needs-app-keys": Told(
        ConfigurationError,
        "Maestro credential '{label}' at {server} {state}, and this machine has no app keys "
        "to write into it (MS365_CLIENT_ID with MS365_CLIENT_SECRET or "
        "MS365_CLIENT_CERTIFICATE, or --client-id).",
        "Put client_id, client_secret and tenant_id in it in Maestro (Credentials), then "
        "run again: {command}.",
        "`botcity-ms365 login --label` on a credential without the app's keys: a token alone "
        "there would be of no use to a Runner, so the command stops."),
    "login-declined-app-keys": Told(
        ConfigurationError,
        "Maestro credential '{label}' at {server} {state}, and nothing was written (a Runner "
        "could not use a token there without the app's keys).",
        "To write the app's keys of {source} into it, run again with --write-app-keys: "
        "{command}.",
        "`botcity-ms365 login --label` on a credential without the app's keys, when nobody "
        "answered yes to writing them (or nobody could: no terminal)."),
    # -- the token
    "no-token": Told(
        AuthorizationRequired,
        "No token is stored in {location} yet.",
        "A person must sign in once, on a machine with a browser: {command}.",
        "Nobody has signed in for this credential (or token file) yet, or someone logged "
        "out."),
    "token-lacks-permissions": Told(
        AuthorizationRequired,
        "The token in {location} lacks the permissions {missing}.",
        "A person must sign in again to consent to them, on a machine with a browser: "
        "{command}.",
        "The bot asks for more than the person consented to."),
    "token-replaced": Told(
        AuthorizationRequired,
        "The token in {location} is to be replaced (force=True), and nobody is here to sign "
        "in (an unattended run).",
        "A person must sign in, on a machine with a browser: {command}.",
        "authenticate(force=True) on a Runner."),
    "token-expired-no-refresh": Told(
        AuthorizationRequired,
        "The token in {location} has expired and holds no refresh token.",
        _SIGN_IN,
        "A token stored without its refresh token (copied by hand, or from a sign-in without "
        "offline_access) has expired."),
    "no-refresh-token": Told(
        AuthorizationRequired,
        "The token in {location} holds no refresh token for the signed-in account.",
        _SIGN_IN,
        "The stored token's account and refresh token do not match (edited by hand)."),
    "refused-for-another-bot": Told(
        AuthorizationRequired,
        "Microsoft refused another bot's renewal of the token in {location} ({reason}): a "
        "person must sign in (that bot alerted the operator).",
        _SIGN_IN,
        "Many bots share the token, and the one that renewed it for all was told by "
        "Microsoft that a person must sign in (its message has Microsoft's reason)."),
    "graph-refused-renewed": Told(
        AuthorizationRequired,
        "Microsoft Graph refused the access token of {location} even after it was renewed "
        "(HTTP 401, {why}): the account may be disabled, or its sessions revoked.",
        "Check the account in the Entra admin center (Users), then a person signs in again, "
        "on a machine with a browser: {command}.",
        "Graph refuses even a fresh access token: the account was disabled, its sessions "
        "revoked, or the token was moved between tenants or sandboxes."),
    "sign-in-unattended": Told(
        AuthorizationRequired,
        "A sign-in was asked for (sign_in()), but nobody is here to consent (an unattended "
        "run).",
        "A person must sign in, on a machine with a browser: {command}.",
        "sign_in() on a Runner, or with MS365_CONSENT=none."),
    "consent-timeout": Told(
        AuthorizationRequired,
        "No one answered the consent prompt within {timeout} s (MS365_CONSENT_TIMEOUT).",
        "Sign in again and paste the address within that time: {command}.",
        "The console waited for the pasted address (an IDE's Run window counts as a "
        "person)."),
    "console-without-stdin": Told(
        ConfigurationError,
        "consent='console' needs a person at the keyboard, but stdin is closed (a service, a "
        "scheduler, or input redirected from nothing).",
        "Sign in at a terminal, on a machine with a browser: {command}.",
        "The console way was chosen (consent='console', MS365_CONSENT=console, or "
        "botcity-ms365 login's default) where nobody can type."),
    "consent-stdin-ended": Told(
        AuthorizationRequired,
        "No one answered the consent prompt (stdin ended).",
        "A person must sign in at a terminal: {command}.",
        "The console prompt read the end of stdin (a pipe that closed)."),
    # -- BotCity Maestro
    "maestro-refused-connection": Told(
        StoreUnavailable,
        "BotCity Maestro at {server} refused the connection: nothing answers at that "
        "address and port.",
        "Check the address (" + _SERVER + ") and that Maestro is running, then run again.",
        "A wrong port, a Maestro that is stopped, or a firewall that rejects the "
        "connection."),
    "maestro-unknown-host": Told(
        StoreUnavailable,
        "The host name of BotCity Maestro at {server} does not resolve.",
        "Check the address (" + _SERVER + ") and this machine's DNS, then run again.",
        "A mistyped host name, or a machine without DNS."),
    "maestro-untrusted": Told(
        StoreError,
        "BotCity Maestro at {server} presented a TLS certificate this machine does not "
        "trust.",
        "Point REQUESTS_CA_BUNDLE at the file of the CA that issued it (a company proxy's, "
        "or your own Maestro's), then run again.",
        "A self-hosted Maestro, or a company proxy that inspects HTTPS."),
    "maestro-dropped": Told(
        StoreUnavailable,
        "BotCity Maestro at {server} dropped the connection ({error}).",
        "Try again in a few minutes; if it keeps happening, check this machine's network and "
        "proxy (HTTPS_PROXY).",
        "The connection broke before Maestro answered."),
    "maestro-slow": Told(
        StoreUnavailable,
        "BotCity Maestro at {server} did not finish answering {doing} within {seconds} s.",
        "Try again in a few minutes; on a slow network, raise MS365_HTTP_TIMEOUT (seconds).",
        "Maestro, or the network to it, is slow (each request is bounded as a whole by "
        "MS365_HTTP_TIMEOUT)."),
    "maestro-failing": Told(
        StoreUnavailable,
        "BotCity Maestro at {server} answered HTTP {status} to {doing}: it is failing or "
        "overloaded.",
        "Try again in a few minutes; if it keeps answering {status}, ask your BotCity "
        "administrator to check Maestro.",
        "Maestro answered 5xx (or 429) to the login, a write, an alert or a task."),
    "maestro-failing-read": Told(
        StoreUnavailable,
        "BotCity Maestro at {server} answered HTTP {status} to the read of credential "
        "'{label}': it is failing, or it answers so for a credential that does not exist.",
        "Check that credential '{label}' exists in Maestro (Credentials); if it does, try "
        "again in a few minutes.",
        "Maestro answered 5xx to a credential read (Maestro's answer for a label that does "
        "not exist is not documented: 400 and 404 are taken for no such label)."),
    "maestro-refused-login": Told(
        StoreError,
        "BotCity Maestro at {server} refused the login '{user}' (HTTP {status}): the login or "
        "the key is wrong.",
        "Copy both from Maestro's Dev. Environment page into BOTCITY_LOGIN and BOTCITY_KEY, "
        "then run again.",
        "botcity-ms365 (or BotMaestroSDK.login()) with a wrong login or key."),
    "maestro-refused-key": Told(
        StoreError,
        "BotCity Maestro at {server} refused the access of login '{user}' to {doing} (HTTP "
        "{status}).",
        "Log in again with the login and key of Maestro's Dev. Environment page (BOTCITY_LOGIN, "
        "BOTCITY_KEY), then run again.",
        "Maestro answered 401 or 403 to a logged-in BotMaestroSDK: its access token expired, "
        "the key was changed, or the workspace may not use that credential."),
    "maestro-refused-runner": Told(
        StoreError,
        "BotCity Maestro at {server} refused the token of task {task} to {doing} (HTTP "
        "{status}): the task has ended, or its token expired.",
        "Start the task again in Maestro.",
        "Maestro answered 401 or 403 to a bot a Runner started."),
    "maestro-not-maestro": Told(
        StoreUnavailable,
        "The server at {server} answered {doing} with something that is not BotCity "
        "Maestro's ({what}).",
        "Check the address (" + _SERVER + ") and this machine's proxy, then run again.",
        "The address is not Maestro's, or a proxy or gateway answers for it."),
    "maestro-not-logged-in": Told(
        StoreError,
        "The BotMaestroSDK given to the plugin is not logged in to BotCity Maestro, so it "
        "cannot make {doing} ({error}).",
        "Log it in before making the plugin: maestro.login(), or "
        "BotMaestroSDK.from_sys_args() on a Runner.",
        "A BotMaestroSDK that was never logged in, or whose token was set by hand."),
    "maestro-too-old": Told(
        StoreError,
        "BotCity Maestro at {server} is version {version}; changing an existing credential "
        "key needs Maestro 3.0.0 or newer.",
        "Upgrade Maestro, or delete key '{key}' of credential '{label}' so the plugin can "
        "add it again.",
        "A renewed token is written over the stored one on a Maestro older than 3.0.0."),
    "maestro-no-task": Told(
        StoreError,
        "BotCity Maestro at {server} has no task {task}.",
        "Run the bot from a task of this workspace (a Runner passes the task's id as the "
        "bot's second argument).",
        "task_execution() with a task id Maestro does not know."),
}


def told(name: str, **values: object) -> str:
    """The message ``name`` of :data:`MESSAGES`, with ``values`` in its text: its cause,
    then its next step."""
    said = MESSAGES[name]
    return _sentences(said.cause.format(**values), said.step.format(**values))


# -- Microsoft's answers ------------------------------------------------------------------
_PORTAL = "In the Azure portal (entra.microsoft.com), App registrations > your app > "
_NEW_SECRET = (_PORTAL + "Certificates & secrets > New client secret; put its Value (not "
               "its Secret ID) into the credential's client_secret (or MS365_CLIENT_SECRET).")
_SIGN_IN_AGAIN = _SIGN_IN
_CONDITIONAL = ("The person's own sign-in works, but a conditional access policy of the "
                "tenant refuses the sign-in from where the bot runs (a Runner's network or "
                "device). Ask the tenant's administrator to exclude the Runner's network (a "
                "trusted named location) or the bot's account from the policy, or use "
                "app-only access (auth_flow='app'). ")


class Known(NamedTuple):
    """An Azure AD error code: what it means, what fixes it, and how the plugin treats it:
    ``"sign_in"`` (a person must sign in: :class:`AuthorizationRequired`), ``"refused"``
    (the app's registration or secret: :class:`AuthorizationError`), ``"config"``
    (:class:`ConfigurationError`) or ``"throttled"`` (:class:`ServiceUnavailable`)."""

    meaning: str
    fix: str = ""
    kind: str = "refused"


#: Azure AD error codes users meet (Microsoft's error-code reference), in plain words.
AADSTS: dict[str, Known] = {
    "AADSTS50011": Known("the redirect URI is not registered for the app",
                         _PORTAL + "Authentication > Web: add "
                         "https://login.microsoftonline.com/common/oauth2/nativeclient "
                         "(console sign-in) and http://localhost (browser sign-in)."),
    "AADSTS50057": Known("the user account is disabled",
                         "An administrator must enable it (Entra admin center > Users > the "
                         "account > Account status), then a person signs in again, on a "
                         "machine with a browser: {command}.", "sign_in"),
    "AADSTS50076": Known("conditional access requires multi-factor authentication for this "
                         "sign-in", _CONDITIONAL + "Then a person signs in once more, "
                         "with MFA: {command}.", "sign_in"),
    "AADSTS50079": Known("conditional access requires the account to register for "
                         "multi-factor authentication", "The account's owner must register "
                         "MFA (https://aka.ms/mfasetup), then sign in, on a machine with a "
                         "browser: {command}. " + _CONDITIONAL.rstrip(), "sign_in"),
    "AADSTS53003": Known("access was blocked by a conditional access policy",
                         _CONDITIONAL + "Signing in again does not help until the policy "
                         "allows the bot.", "sign_in"),
    "AADSTS50173": Known("the grant was revoked: an administrator revoked the user's "
                         "sessions, or the user changed or reset their password",
                         _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS50194": Known("the app is single-tenant, so it cannot sign in through the "
                         "'common' endpoint",
                         "Set tenant_id (or MS365_TENANT_ID, or the key tenant_id of the "
                         "Maestro credential) to the Directory (tenant) ID shown on the app's "
                         "Overview page in the Azure portal.", "config"),
    "AADSTS50196": Known("Microsoft detected a request loop (too many identical token "
                         "requests in a short time) and is throttling them; the token is "
                         "fine", "Back off and try again in a few minutes.", "throttled"),
    "AADSTS54005": Known("the authorization code was already used",
                         "Start the sign-in again.", "refused"),
    "AADSTS65001": Known("the user or an administrator has not consented to (or revoked "
                         "consent for) the permissions the app asks for",
                         "A person must sign in and consent again (an administrator may "
                         "have to grant consent first), on a machine with a browser: "
                         "{command}.", "sign_in"),
    "AADSTS65004": Known("the user declined to consent", "", "refused"),
    "AADSTS70008": Known("the refresh token expired or was revoked", _SIGN_IN_AGAIN,
                         "sign_in"),
    "AADSTS70011": Known("a requested permission does not exist",
                         "Check the scopes the bot asks for."),
    "AADSTS70043": Known("the tenant's conditional access (sign-in frequency) requires a "
                         "fresh sign-in", _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS700016": Known("no app with this client id exists in the tenant",
                          "Check client_id (the Application (client) ID on the app's "
                          "Overview page) and tenant_id."),
    "AADSTS700025": Known("the redirect URI is registered as a public client (Mobile and "
                          "desktop applications), so Microsoft refuses the client secret",
                          _PORTAL + "Authentication: remove the redirect URIs from 'Mobile "
                          "and desktop applications' and add them under 'Web' "
                          "(https://login.microsoftonline.com/common/oauth2/nativeclient and "
                          "http://localhost), or sign in with consent='device_code'."),
    "AADSTS700024": Known("the certificate's signed request (client assertion) is outside "
                          "its valid time range, which happens when this machine's clock is "
                          "wrong", "Set the machine's clock right (Windows: Settings > Time > "
                          "Sync now), then run again."),
    "AADSTS700027": Known("Microsoft does not accept the app's certificate",
                          _PORTAL + "Certificates & secrets > Certificates lists the "
                          "certificates registered on the app: upload the certificate the bot "
                          "uses (its public part: .cer, .pem or .crt), or, when it has "
                          "expired, make a new one, upload it and put it in the credential's "
                          "client_certificate."),
    "AADSTS700082": Known("the refresh token expired after 90 days without use",
                          _SIGN_IN_AGAIN, "sign_in"),
    "AADSTS7000215": Known("the client secret is wrong (or it is the secret's ID instead "
                           "of its Value)", _NEW_SECRET),
    "AADSTS7000218": Known("the app registration does not allow public client flows",
                           _PORTAL + "Authentication: set 'Allow public client flows' to "
                           "Yes (needed for device code sign-in)."),
    "AADSTS7000222": Known("the client secret has expired", _NEW_SECRET),
    "AADSTS90002": Known("the tenant does not exist (in this cloud)",
                         "Set tenant_id to your Directory (tenant) ID or domain (the app's "
                         "Overview page in the Azure portal).", "config"),
}

_CODE = re.compile(r"AADSTS\d+")
#: Azure AD ends its descriptions with lines for its support: "Trace ID: ...".
_TRACE = re.compile(r"[\r\n ]+Trace ID:.*", re.DOTALL)


def aadsts_code(text: str | None) -> str | None:
    """The first ``AADSTSnnnn`` code in Microsoft's error description, if any."""
    match = _CODE.search(text or "")
    return match.group(0) if match else None


def microsoft_text(description: str | None) -> str:
    """Microsoft's error description without its trace, correlation and time lines."""
    return _TRACE.sub("", description or "").strip()


def explain(answer: Mapping[str, Any], doing: str) -> MS365CredentialsError:
    """The plugin's exception for an error answer of Microsoft's identity platform (a token
    or devicecode endpoint answer, as msal returns it), saying what it means and what to
    do. ``doing`` says what the plugin was doing, for the message."""
    error = str(answer.get("error") or "unknown_error")
    code = aadsts_code(str(answer.get("error_description") or ""))
    known = AADSTS.get(code or "")
    if known is None:
        told = f" ({code}: {microsoft_text(str(answer.get('error_description')))})" if code \
            else ""
        if error in ("invalid_grant", "interaction_required", "consent_required"):
            return AuthorizationRequired(
                f"Microsoft refused the stored token while {doing}: {error}{told}.",
                step=_SIGN_IN_AGAIN.format(command=COMMAND), error=error, code=code,
                claims=_claims(answer))
        if error in ("authorization_declined", "access_denied"):
            return AuthorizationError(f"The person declined the sign-in while {doing}{told}.",
                                      error=error, code=code)
        if error == "expired_token":
            return AuthorizationError(f"The device code expired while {doing}; start again.",
                                      error=error, code=code)
        return AuthorizationError(f"Microsoft refused {doing}: {error}{told}.", error=error,
                                  code=code)
    meaning = known.meaning
    if code == "AADSTS700027":  # Microsoft says which certificate, and why
        description = str(answer.get("error_description") or "")
        reason = re.search(r"Reason - (.+?)[.,]", description)
        used = re.search(r"Thumbprint of key used by client: '([0-9A-Fa-f]+)'", description)
        meaning += (f" {used.group(1).upper()}" if used else "") + (
            f": {reason.group(1)}" if reason else "")
    cause = f"Microsoft refused {doing}: {error} ({code}: {meaning})."
    if known.kind == "sign_in":
        return AuthorizationRequired(cause, step=known.fix, error=error, code=code,
                                     claims=_claims(answer))
    message = _sentences(cause, known.fix)
    if known.kind == "throttled":
        return ServiceUnavailable(message, code=code)
    if known.kind == "config":
        return ConfigurationError(message)
    return AuthorizationError(message, error=error, code=code)


def _claims(answer: Mapping[str, Any]) -> str | None:
    claims = answer.get("claims")
    return claims if isinstance(claims, str) and claims.strip() else None
