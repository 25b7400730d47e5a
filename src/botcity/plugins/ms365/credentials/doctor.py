"""``botcity-ms365 doctor``: check, on a real Runner, what the shared-token protocol
assumes about BotCity Maestro and Microsoft's identity platform.

Each check is a small function that takes what it needs and returns a :class:`Check`: a
name, the measured value, a verdict (``ok``, ``warn``, ``fail``; ``skipped`` when an
earlier failure leaves nothing to measure) and, on warn or fail, one line of advice.
:func:`run` makes them in order; the command prints them (this module prints nothing).

What it assumes and checks:

- Maestro is 3.0.0 or newer (every eighth renewal, and ``logout``, change existing keys);
- a credential read is quick (the median of :data:`READS` reads);
- the Maestro login may add keys to the credential (as claims and renewed tokens are
  written), a key added is visible to the next read, and Maestro lists keys in the order
  they were added (the first claim renews; the first renewal of a token is the next):
  two probe keys (:data:`PROBE_KEY` and :data:`SECOND_PROBE_KEY`, random values) are
  added to the token's credential and removed again over a read made right before, so
  every other key stays as it was;
- this machine's clock agrees with Microsoft's (``Date`` of the discovery answer);
- the identity platform answers: its discovery, and its token endpoint (a request with
  no grant, which Microsoft refuses with 400: no token is issued);
- the app's certificate is not expired or about to (a secret's expiry is not readable
  without Graph application permissions);
- the stored token is there and readable (it is not refreshed).

No secret appears in a check: not the client secret, the tokens, the Maestro key, nor
the probe's value.
"""

from __future__ import annotations

import calendar
import email.utils
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import requests

from . import tokens
from ._clock import Clock
from ._maestro import WRITES_NEED, MaestroVault, edits_keys
from ._o365 import DEFAULT_AUTHORITY_HOST
from ._transport import RetryingSession
from .app_credentials import AppCredentials, find_app_credentials
from .certificates import WARN_DAYS
from .errors import MS365CredentialsError, StoreError, TokenFormatError
from .settings import Settings, https_url

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"

#: The keys the write check adds to the token's credential, in this order, and removes.
PROBE_KEY = "doctor-probe"
SECOND_PROBE_KEY = "doctor-probe-2"
#: Reads of the credential whose median is Maestro's round trip.
READS = 5
#: A median read slower than this is a warning (each bot's start and renewal reads).
SLOW_MAESTRO = 1.0
#: How long a written value may take to be read back before the check fails.
VISIBLE_WITHIN = 10.0
#: Seconds between two reads that wait for the probe.
READ_SPACING = 0.25
#: Clock skew against Microsoft: a warning above, a failure above.
SKEW_WARN, SKEW_FAIL = 60.0, 300.0
#: An identity platform answer slower than this is a warning.
SLOW_IDENTITY = 2.0
#: A refresh token unused this many days is close to its 90-day end.
ROTATION_WARN_DAYS = 80

Timer = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table. ``measured`` is the number behind ``value`` when
    there is one (seconds, days), for ``--json``."""

    name: str
    value: str
    verdict: str
    advice: str = ""
    measured: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def failed(checks: list[Check]) -> bool:
    return any(check.verdict == FAIL for check in checks)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in version)


# -- Maestro ------------------------------------------------------------------------------
def maestro_version(version: str | None, server: str) -> Check:
    """Maestro's version (its ``GET /api/v2/maestro/version``): the token writes need
    :data:`~._maestro.WRITES_NEED`."""
    name = "maestro version"
    need = _version_text(WRITES_NEED)
    if not version:
        return Check(name, "unknown", FAIL, f"Maestro at {server} did not say its version: "
                     "check the server address (it must be Maestro's API)")
    if not edits_keys(version):
        return Check(name, version, FAIL, f"the plugin folds renewed tokens into the token's "
                     f"key every eighth renewal, which needs Maestro {need} or newer: "
                     f"upgrade Maestro at {server} to {need} or newer")
    return Check(name, version, OK)


def maestro_round_trip(read: Callable[[], Any], *, reads: int = READS,
                       timer: Timer = time.monotonic) -> tuple[Check, Any]:
    """The median of ``reads`` reads of the credential (``read()``), and the last read's
    answer (None when a read failed)."""
    name = "maestro round trip"
    spent: list[float] = []
    answer: Any = None
    for _ in range(reads):
        start = timer()
        try:
            answer = read()
        except StoreError as exc:
            return Check(name, f"failed after {len(spent)} of {reads} reads", FAIL,
                         str(exc)), None
        spent.append(timer() - start)
    median = statistics.median(spent)
    value = f"{_seconds(median)} (median of {reads} reads)"
    if median > SLOW_MAESTRO:
        return Check(name, value, WARN, f"reads slower than {SLOW_MAESTRO:g} s slow every "
                     "bot's start and renewal: check the network between this Runner and "
                     "Maestro", median), answer
    return Check(name, value, OK, measured=median), answer


def _wait_for(vault: MaestroVault, label: str, seen: Callable[[dict[str, str] | None], bool],
              *, within: float, spacing: float, timer: Timer,
              sleep: Sleep) -> tuple[int, float | None]:
    """Read ``label`` until ``seen(values)``, at most ``within`` seconds: the reads made,
    and the seconds it took (None: not seen)."""
    start = timer()
    count = 0
    while True:
        count += 1
        values = vault.read(label, max_age=0)
        if seen(values):
            return count, timer() - start
        if timer() - start + spacing > within:
            return count, None
        sleep(spacing)


def write_probe(vault: MaestroVault, label: str, *, timer: Timer = time.monotonic,
                sleep: Sleep = time.sleep, within: float = VISIBLE_WITHIN,
                spacing: float = READ_SPACING) -> list[Check]:
    """Add :data:`PROBE_KEY` and then :data:`SECOND_PROBE_KEY` (random values) to
    ``label`` with Maestro's add-key request, as bots add claims and renewed tokens, read
    them back, remove them: whether the login may write, after how long an added key is
    visible, whether keys are listed in the order they were added, and whether the
    probes are gone. Nothing else of the credential is sent, but by the removal, which is
    made over a read made right before it."""
    where = f"credential '{label}'"
    value, second = secrets.token_hex(16), secrets.token_hex(16)
    added = False
    try:
        left = vault.read(label, max_age=0) or {}
        if PROBE_KEY in left or SECOND_PROBE_KEY in left:  # an earlier run's, interrupted
            vault.remove(label, PROBE_KEY, also=SECOND_PROBE_KEY.__eq__)
        vault.add(label, PROBE_KEY, value)
        added = True
        vault.add(label, SECOND_PROBE_KEY, second)
    except StoreError as exc:
        if getattr(exc, "status", None) in (401, 403):
            advice = (f"this login cannot write {where}: the plugin cannot store renewed "
                      "tokens; give the login write access to the credential (Maestro > "
                      "Credentials) or use a key that has it")
            value_text = f"refused (HTTP {exc.status})"
        else:
            advice, value_text = str(exc), "failed"
        unwritten = _unwritten()
        if added:  # the first probe was: it goes
            unwritten[-1] = _remove_probe(vault, label, within=within, spacing=spacing,
                                          timer=timer, sleep=sleep)
        return [Check("maestro write", value_text, FAIL, advice), *unwritten]
    checks = [Check("maestro write", f"added keys '{PROBE_KEY}', '{SECOND_PROBE_KEY}' to "
                    f"{where}", OK)]
    listed: list[str] = []

    def both(values: dict[str, str] | None) -> bool:
        listed[:] = [k for k in (values or {}) if k in (PROBE_KEY, SECOND_PROBE_KEY)]
        return (values or {}).get(PROBE_KEY) == value and (
            (values or {}).get(SECOND_PROBE_KEY) == second)

    try:
        reads, delay = _wait_for(vault, label, both, within=within, spacing=spacing,
                                 timer=timer, sleep=sleep)
    except StoreError as exc:
        reads, delay = 0, None
        checks.append(Check("write visible", "a read failed", FAIL, str(exc)))
    else:
        if delay is None:
            checks.append(Check(
                "write visible", f"not after {within:g} s ({reads} reads)", FAIL,
                "Maestro does not show a write to the next reads: bots would not see each "
                "other's renewed tokens and renew again and again; report it to BotCity",
                within))
        elif reads == 1:
            checks.append(Check("write visible", "at the next read", OK, measured=delay))
        else:
            checks.append(Check(
                "write visible", f"after {_seconds(delay)} ({reads} reads)", WARN,
                "bots that read within that time of a renewal see the previous token and "
                "may renew again: harmless, but each costs a request to Microsoft", delay))
    if delay is None:
        checks.append(Check("key order", "not measured", SKIPPED, "the probes were not seen"))
    elif listed == [PROBE_KEY, SECOND_PROBE_KEY]:
        checks.append(Check("key order", "in the order added", OK))
    else:
        checks.append(Check(
            "key order", "not in the order added", WARN, "bots starting together on an "
            "expired token may each renew it (a token request more each, nothing lost): "
            "report it to BotCity"))
    checks.append(_remove_probe(vault, label, within=within, spacing=spacing, timer=timer,
                                sleep=sleep))
    return checks


def _remove_probe(vault: MaestroVault, label: str, *, within: float, spacing: float,
                  timer: Timer, sleep: Sleep) -> Check:
    name = "probe removed"
    advice = (f"remove keys '{PROBE_KEY}' and '{SECOND_PROBE_KEY}' of credential '{label}' "
              "in Maestro (Orchestrator > Credentials); the other keys are as they were")
    try:
        # over a read made right before it
        vault.remove(label, PROBE_KEY, also=SECOND_PROBE_KEY.__eq__)
        _, gone = _wait_for(vault, label, lambda v: not {PROBE_KEY, SECOND_PROBE_KEY} & set(
            v or {}), within=within, spacing=spacing, timer=timer, sleep=sleep)
    except StoreError as exc:
        return Check(name, "failed", FAIL, f"{exc} Then {advice}.")
    if gone is None:
        return Check(name, f"still there after {within:g} s", FAIL, advice)
    return Check(name, "both removed", OK)


# -- Microsoft's identity platform -----------------------------------------------------------
def clock_skew(date_header: str | None, local: float) -> Check:
    """This machine's clock (``local``, when the answer came) against a ``Date`` header
    of Microsoft's."""
    name = "clock skew"
    try:
        server = email.utils.parsedate_to_datetime(date_header or "").timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return Check(name, "unknown (no Date header from Microsoft)", WARN,
                     "the skew could not be measured: check this machine's clock by hand")
    skew = local - server
    side = "ahead of" if skew > 0 else "behind"
    value = (f"{skew:+.0f} s (this machine is {side} Microsoft)" if abs(skew) >= 1
             else "under 1 s")
    fix = ("synchronize this machine's clock (NTP; Windows: w32tm /resync): the plugin "
           "corrects its token times for it, but certificates' sign-ins and other tools "
           "do not")
    if abs(skew) > SKEW_FAIL:
        return Check(name, value, FAIL, fix, skew)
    if abs(skew) > SKEW_WARN:
        return Check(name, value, WARN, fix, skew)
    return Check(name, value, OK, measured=skew)


def identity_platform(session: requests.Session, authority_host: str, tenant: str, *,
                      timer: Timer = time.monotonic,
                      wall: Timer = time.time) -> list[Check]:
    """Discovery (``<authority>/<tenant>/v2.0/.well-known/openid-configuration``), the
    clock skew against its ``Date``, and the token endpoint's round trip (a POST with no
    grant: Microsoft answers 400 and issues nothing)."""
    where = f"{authority_host}/{tenant}"
    url = f"{where}/v2.0/.well-known/openid-configuration"
    token_endpoint = f"{where}/oauth2/v2.0/token"
    checks: list[Check] = []
    before, start = wall(), timer()
    try:
        answer = session.get(url)
    except (requests.RequestException, MS365CredentialsError) as exc:
        return [Check("identity discovery", f"unreachable ({type(exc).__name__})", FAIL,
                      f"{authority_host} did not answer: check this Runner's network and "
                      "proxy (HTTPS to Microsoft)"),
                Check("clock skew", "not measured", SKIPPED, "discovery did not answer"),
                Check("token endpoint", "not measured", SKIPPED, "discovery did not answer")]
    spent, local = timer() - start, (before + wall()) / 2
    body: Any = None
    try:
        body = answer.json()
    except ValueError:
        pass
    if answer.status_code == 200 and isinstance(body, dict) and body.get("token_endpoint"):
        token_endpoint = str(body["token_endpoint"])
        value = f"answered in {_seconds(spent)}"
        checks.append(Check("identity discovery", value, WARN if spent > SLOW_IDENTITY else OK,
                            f"slower than {SLOW_IDENTITY:g} s: check the network to "
                            f"{authority_host}" if spent > SLOW_IDENTITY else "", spent))
    else:
        codes = body.get("error_codes") if isinstance(body, dict) else None
        code = f", AADSTS{codes[0]}" if isinstance(codes, list) and codes else ""
        checks.append(Check("identity discovery", f"HTTP {answer.status_code}{code}", FAIL,
                            f"tenant '{tenant}' is not known to {authority_host}: check the "
                            "credential's tenant_id (the Azure portal's Directory (tenant) "
                            "ID)" if answer.status_code == 400 else
                            f"{authority_host} is failing: try again later"))
    checks.append(clock_skew(answer.headers.get("Date"), local))
    start = timer()
    try:
        refused = session.post(token_endpoint, data={})
    except (requests.RequestException, MS365CredentialsError) as exc:
        checks.append(Check("token endpoint", f"unreachable ({type(exc).__name__})", FAIL,
                            "bots could not renew their token: check this Runner's network "
                            "and proxy"))
        return checks
    spent = timer() - start
    value = f"HTTP {refused.status_code} in {_seconds(spent)}"
    if refused.status_code >= 500:
        checks.append(Check("token endpoint", value, FAIL, "Microsoft's token endpoint is "
                            "failing: renewals would wait and retry; try again later", spent))
    elif spent > SLOW_IDENTITY:
        checks.append(Check("token endpoint", value, WARN, f"slower than {SLOW_IDENTITY:g} "
                            f"s: check the network to {authority_host}", spent))
    else:
        checks.append(Check("token endpoint", value, OK, measured=spent))
    return checks


# -- the app's credential and the stored token -------------------------------------------------
def app_credential(found: AppCredentials | list[str] | MS365CredentialsError) -> Check:
    """What the app signs in with, and how long it lasts when that is known."""
    name = "app credential"
    if isinstance(found, MS365CredentialsError):
        return Check(name, "unusable", FAIL, str(found))
    if isinstance(found, list):
        return Check(name, "not found", FAIL, "no client id and credential for the Azure "
                     "app: searched " + "; ".join(found))
    if found.certificate is None:
        return Check(name, "client secret, expiry unknown", OK,
                     "its expiry is readable only with Graph application permissions: "
                     "see Certificates & secrets in the Azure portal")
    days = found.certificate.days_left()
    if days is None:
        return Check(name, f"{found.describe()}", OK)
    renew = "make a new one, upload it to the app and put it in the credential"
    if days <= 0:
        return Check(name, found.describe(), FAIL, f"the certificate has expired: {renew}",
                     days)
    if days <= WARN_DAYS:
        return Check(name, f"{found.describe()} (in {days:.0f} days)", WARN,
                     f"{renew} before then", days)
    return Check(name, f"{found.describe()} (in {days:.0f} days)", OK, measured=days)


def stored_token(text: str | None, where: str, now: float, *, label: str,
                 client_id: str | None = None) -> Check:
    """The stored token: present, readable, its generation, the access token's expiry and
    the refresh token's last rotation (``now``: Microsoft's time). Not refreshed."""
    name = "stored token"
    if not text or not text.strip():
        return Check(name, "none", FAIL, f"no token in {where}: sign in once with "
                     f"'botcity-ms365 login --label {label}'")
    try:
        data = tokens.parse_token(text, where, fix="remove the key")
    except TokenFormatError as exc:
        return Check(name, "unreadable", FAIL, str(exc))
    summary = tokens.summarize(data, tokens.client_type(data), now=now,
                               generation=tokens.generation(data))
    parts = [f"generation {summary['generation']}"]
    expires = summary["access_token_expires_on"]
    if expires:
        left = expires - now
        parts.append(f"access token {'expires in' if left > 0 else 'expired'} "
                     f"{abs(left) / 60:.0f} min{'' if left > 0 else ' ago'}")
    rotated = summary["refresh_token_rotated_at"]
    idle_days = None
    if rotated:
        idle_days = (now - calendar.timegm(time.strptime(rotated, "%Y-%m-%dT%H:%M:%SZ"))
                     ) / 86400
        parts.append(f"refresh token rotated {idle_days:.0f} days ago" if idle_days >= 1
                     else f"refresh token rotated {max(idle_days, 0) * 24:.0f} h ago")
    value = "; ".join(parts)
    if client_id and summary["client_id"] and summary["client_id"] != client_id:
        return Check(name, value, FAIL, f"the token was issued to app {summary['client_id']}, "
                     f"but the credential's client_id is {client_id}: sign in again with "
                     f"'botcity-ms365 login --label {label}'")
    if not summary["has_refresh_token"]:
        return Check(name, value + "; no refresh token", WARN, "a person must sign in again "
                     f"when the access token expires: 'botcity-ms365 login --label {label}'")
    limit = tokens.REFRESH_TOKEN_INACTIVITY_DAYS
    if idle_days is not None and idle_days >= limit:
        return Check(name, value, FAIL, f"unused for {idle_days:.0f} days, Microsoft has "
                     f"ended the refresh token: 'botcity-ms365 login --label {label}'",
                     idle_days)
    if idle_days is not None and idle_days >= ROTATION_WARN_DAYS:
        return Check(name, value, WARN, f"unused for {idle_days:.0f} days: it ends at "
                     f"{limit}; run a bot (or 'botcity-ms365 status --check') before then",
                     idle_days)
    return Check(name, value, OK, measured=idle_days)


class _Unused(Clock):
    """The session's clock: the doctor measures the skew itself and corrects nothing."""

    def learn(self, date_header: str | None) -> None:
        return


def _not_probed(verdict: str, why: str) -> list[Check]:
    """The write check's rows when nothing was written."""
    return [Check("maestro write", "not tried", verdict, why),
            *_unwritten()]


def _unwritten() -> list[Check]:
    """The rows of what the probe would have measured."""
    return [Check(name, value, SKIPPED, "the probe was not written") for name, value in (
        ("write visible", "not measured"), ("key order", "not measured"),
        ("probe removed", "nothing to remove"))]


# -- all of them ---------------------------------------------------------------------------------
def run(vault: MaestroVault, *, label: str | None, token_label: str, token_key: str,
        tenant_id: str | None = None, settings: Settings | None = None,
        session: requests.Session | None = None, timer: Timer = time.monotonic,
        sleep: Sleep = time.sleep) -> list[Check]:
    """Every check, in order, against Maestro (``vault``: credential ``token_label``,
    key ``token_key``; the app's keys in ``label``) and Microsoft."""
    settings = settings or Settings.from_environ()
    checks = [maestro_version(vault.version, vault.server)]
    trip, values = maestro_round_trip(lambda: vault.read(token_label, max_age=0),
                                      timer=timer)
    checks.append(trip)
    where = f"Maestro credential '{token_label}' key '{token_key}'"
    if trip.verdict == FAIL:
        checks.extend(_not_probed(SKIPPED, "Maestro could not be read"))
    elif values is None:
        checks.extend(_not_probed(FAIL, f"credential '{token_label}' does not exist: create "
                                  "it in Maestro (Orchestrator > Credentials) with client_id "
                                  "and client_secret"))
    elif not edits_keys(vault.version):
        checks.extend(_not_probed(SKIPPED, f"needs Maestro {_version_text(WRITES_NEED)} to "
                                  "remove the probe key again"))
    else:
        checks.extend(write_probe(vault, token_label, timer=timer, sleep=sleep))

    try:
        found: AppCredentials | list[str] | MS365CredentialsError = find_app_credentials(
            None, None, tenant_id, vault=vault if trip.verdict != FAIL else None,
            label=label, env=settings.app)
    except MS365CredentialsError as exc:
        found = exc
    tenant = (found.tenant_id if isinstance(found, AppCredentials)
              else tenant_id or settings.app.tenant_id or "common")
    authority = https_url(settings.authority_host or DEFAULT_AUTHORITY_HOST,
                          "MS365_AUTHORITY_HOST", allow_local_http=False)
    own = session is None
    session = session or RetryingSession(budget=0, timeout=settings.http_timeout,
                                         clock=_Unused())
    try:
        identity = identity_platform(session, authority, tenant, timer=timer)
    finally:
        if own:
            session.close()
    checks.extend(identity)
    skew = next((c.measured for c in identity if c.name == "clock skew"), None)
    checks.append(app_credential(found))

    if trip.verdict == FAIL:
        checks.append(Check("stored token", "not read", SKIPPED, "Maestro could not be read"))
    else:
        client_id = found.client_id if isinstance(found, AppCredentials) else None
        checks.append(stored_token((values or {}).get(token_key), where,
                                   time.time() - (skew or 0.0), label=label or token_label,
                                   client_id=client_id))
    return checks
