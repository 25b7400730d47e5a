"""Any bytes in the Maestro token value or the token file either load or raise the
plugin's own error, and a stored token is never replaced by an empty or broken one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botcity.plugins.ms365.credentials import (
    AuthorizationRequired,
    MS365CredentialsError,
    MS365CredentialsPlugin,
    TokenFormatError,
)
from botcity.plugins.ms365.credentials.tokens import parse_token

LABEL = "ms365"
EXAMPLES = 500
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=20)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=12)


@pytest.fixture
def real_token(sandbox, tmp_path) -> dict[str, Any]:
    """A real token, as the plugin stores it, from the sandbox."""
    MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                           token_path=tmp_path / "real.json").authenticate(
        ["mail_read"], consent=sandbox.consent_redirect)
    return json.loads((tmp_path / "real.json").read_text())


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    return found


def _mutated(data: st.DataObject, token: dict[str, Any]) -> str:
    """A real token with one part changed: a leaf replaced, a key dropped, or cut short."""
    doc = json.loads(json.dumps(token))
    kind = data.draw(st.sampled_from(["replace", "drop", "truncate", "retype"]))
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if kind == "replace":
        parent[path[-1]] = data.draw(json_value)
    elif kind == "retype":
        parent[path[-1]] = data.draw(st.sampled_from(["", "0", "-1", "999999999999", "x",
                                                      0, None, [], {}]))
    elif kind == "drop":
        del parent[path[-1]]
    text = json.dumps(doc, separators=(",", ":"))
    if kind == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    return text


def values(data: st.DataObject, token: dict[str, Any]) -> str:
    choice = data.draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "text"]))
    if choice == "mutated":
        return _mutated(data, token)
    if choice == "json":
        return json.dumps(data.draw(json_value))
    return data.draw(st.text(max_size=200))


def good_token(text: str | bytes | None) -> bool:
    try:
        data = parse_token(text or "", "test")
    except MS365CredentialsError:
        return False
    return bool(data.get("RefreshToken") or data.get("AccessToken"))


def exercise(plugin_factory) -> MS365CredentialsError | None:
    """What the plugin does with a stored token (load it, judge it, refresh it when its
    access token expired): the plugin's own error that came out, or None. Any other
    exception fails the test. (A token that loads but that Microsoft refuses is a later,
    separate matter: O365 reports Graph's 401.)"""
    try:
        plugin = plugin_factory()
        plugin.is_authenticated  # noqa: B018
        plugin.authenticate(["mail_read"])
    except MS365CredentialsError as exc:
        return exc
    return None


def blank(value: str | bytes) -> bool:
    """What the plugin takes for "no token stored"."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return not text.strip()


def check_outcome(error: MS365CredentialsError | None, value: str | bytes, place: str,
                  fix: str) -> None:
    """A blank value is no token: a person must sign in (the message says where the plugin
    looked and the command). A value that is not a token this version reads is refused as
    TokenFormatError, naming the place and the fix. A token that reads is used (or a
    person is asked for, with the command, when it cannot do)."""
    if not blank(value) and not readable(value):
        assert type(error) is TokenFormatError, repr(error)
        assert place in str(error), str(error)
        assert f"{fix} and authorize again" in str(error), str(error)
    elif blank(value) or error is not None:
        assert isinstance(error, AuthorizationRequired), repr(error)
        assert place in str(error) and "botcity-ms365 login" in str(error), str(error)


def credential_writes(sandbox) -> list:
    """The writes to Maestro's credentials the sandbox answered (alerts are not writes)."""
    return sandbox.requests("maestro", path_contains="/credential", method="POST")


def readable(value: str | bytes) -> bool:
    try:
        parse_token(value, "test")
    except MS365CredentialsError:
        return False
    return True


@SETTINGS
@given(data=st.data())
def test_any_maestro_value(sandbox, maestro, real_token, data):
    value = values(data, real_token)
    sandbox.maestro.put_secret(LABEL, "client_id", sandbox.app.client_id)
    sandbox.maestro.put_secret(LABEL, "client_secret", sandbox.app.secret)
    sandbox.maestro.put_secret(LABEL, "token", value)
    sandbox.requests.clear()

    error = exercise(lambda: MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL,
                                                    consent="none"))

    check_outcome(error, value, f"Maestro credential '{LABEL}' key 'token'",
                  f"delete key 'token' of the Maestro credential '{LABEL}'")
    after = sandbox.maestro.secret(LABEL, "token")
    if error is not None:
        assert after == value, "nothing was written"
        assert credential_writes(sandbox) == [], "nothing was written"
    else:
        assert after == value or good_token(after)


@SETTINGS
@given(data=st.data())
def test_any_file_bytes(sandbox, real_token, tmp_path, data):
    raw = data.draw(st.sampled_from(["bytes", "value"]))
    content = (data.draw(st.binary(max_size=300)) if raw == "bytes"
               else values(data, real_token).encode("utf-8", "surrogatepass"))
    path = tmp_path / "o365_token.txt"
    path.write_bytes(content)

    error = exercise(lambda: MS365CredentialsPlugin(sandbox.app.client_id, sandbox.app.secret,
                                                    consent="none"))

    check_outcome(error, content, str(path), f"delete {path}")
    after = path.read_bytes()
    if error is not None:
        assert after == content, "nothing was written"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["o365_token.txt", "real.json"], (
            "nothing was written")
    else:
        assert after == content or good_token(after)


#: Times Azure AD never issues: before 2000 or after 2200, twenty or four thousand digits,
#: negative. (tokens.py's bounds: 946684800 to 7258118400.)
absurd_time = st.one_of(
    st.integers(-10**30, 946_684_799), st.integers(7_258_118_401, 10**30),
    st.sampled_from([10**19, 10**20 - 1, int("9" * 4000)]))
#: Generations and claim times that are not JSON numbers below 2**53, or negative.
absurd_count = st.one_of(
    st.integers(-10**30, -1), st.integers(2**53, 10**30),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: f != f or abs(f) > 2**53
                                                          or f < 0),
    st.sampled_from(["7", None, [], {}, True]))


@SETTINGS
@given(data=st.data())
def test_out_of_range_numbers_are_refused_and_left_as_they_are(sandbox, maestro, real_token,
                                                               data):
    doc = json.loads(json.dumps(real_token))
    where = data.draw(st.sampled_from(["AccessToken", "RefreshToken", "lifetime",
                                       "generation", "renewing"]))
    [access] = doc["AccessToken"].values()
    if where == "generation":
        number = data.draw(absurd_count.filter(lambda v: not isinstance(v, bool)))
        doc["botcity"]["generation"] = number
    elif where == "renewing":
        number = data.draw(absurd_count)
        doc["botcity"]["renewing"] = {"by": "someone", "until": number}
    elif where == "lifetime":  # an access token said to live more than two days, or < 0
        number = data.draw(st.one_of(st.integers(2 * 86400 + 1, 10**8),
                                     st.integers(-10**6, -1)))
        access["expires_on"] = str(int(access["cached_at"]) + number)
    else:
        number = data.draw(absurd_time)
        entry = access if where == "AccessToken" else next(iter(doc[where].values()))
        field = data.draw(st.sampled_from(
            ["expires_on", "cached_at", "extended_expires_on"] if where == "AccessToken"
            else ["last_modification_time"]))
        entry[field] = str(number)
    value = json.dumps(doc, separators=(",", ":"))
    sandbox.maestro.put_secret(LABEL, "client_id", sandbox.app.client_id)
    sandbox.maestro.put_secret(LABEL, "client_secret", sandbox.app.secret)
    sandbox.maestro.put_secret(LABEL, "token", value)
    sandbox.requests.clear()

    error = exercise(lambda: MS365CredentialsPlugin(maestro=maestro, credential_label=LABEL,
                                                    consent="none"))

    assert not readable(value), ("refused as unreadable", where, number)
    assert type(error) is TokenFormatError, repr(error)
    assert f"Maestro credential '{LABEL}' key 'token'" in str(error)
    if where in ("generation", "renewing"):
        assert "has a malformed 'botcity' entry" in str(error), str(error)
    else:
        section = "RefreshToken" if where == "RefreshToken" else "AccessToken"
        assert f"has a malformed {section} entry (or times Azure AD does not issue)" in (
            str(error)), str(error)
    assert f"delete key 'token' of the Maestro credential '{LABEL}' and authorize again" in (
        str(error))
    assert sandbox.maestro.secret(LABEL, "token") == value, "left as it is"
    assert credential_writes(sandbox) == [], "nothing was written"
