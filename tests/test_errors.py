"""What each of Azure AD's error answers becomes: the plugin's exception, the meaning and
the fix, without Microsoft's trace lines (unit tests: no server)."""

from __future__ import annotations

import pytest

from botcity.plugins.ms365.credentials import (
    AuthorizationError,
    AuthorizationRequired,
    ConfigurationError,
    ServiceUnavailable,
)
from botcity.plugins.ms365.credentials.errors import AADSTS, explain, microsoft_text

KINDS = {"sign_in": AuthorizationRequired, "refused": AuthorizationError,
         "config": ConfigurationError, "throttled": ServiceUnavailable}


def answer(code: str, error: str = "invalid_grant", separator: str = "\r\n", **extra):
    """An error answer as Azure AD writes it (older answers separate the trace lines with
    CRLF, newer ones with spaces)."""
    return {"error": error,
            "error_description": f"{code}: Microsoft's text.{separator}Trace ID: 1{separator}"
                                 f"Correlation ID: 2{separator}Timestamp: 2026-12-01 03:25:09Z",
            "error_codes": [int(code.removeprefix("AADSTS"))], **extra}


COMMAND = "botcity-ms365 login --label ms365 --scopes basic (with BOTCITY_SERVER set)"


@pytest.mark.parametrize("code", sorted(AADSTS))
def test_every_known_code_becomes_its_exception_with_meaning_and_fix(code):
    known = AADSTS[code]
    error = explain(answer(code), "refreshing the access token")
    assert type(error) is KINDS[known.kind]
    assert code in str(error) and known.meaning in str(error)
    if isinstance(error, AuthorizationRequired):  # its command, once the plugin says it
        assert str(error.complete(COMMAND)) == (
            f"Microsoft refused refreshing the access token: invalid_grant ({code}: "
            f"{known.meaning}). " + known.fix.replace("{command}", COMMAND)).strip()
    else:
        assert "{command}" not in known.fix
        assert known.fix in str(error) or not known.fix
    if isinstance(error, AuthorizationError):
        assert error.code == code and error.meaning == known.meaning


def test_only_a_sign_in_names_the_command_and_it_names_it_once():
    for code, known in AADSTS.items():
        assert known.fix.count("{command}") == (known.kind == "sign_in" and code != "AADSTS53003")
        assert "botcity-ms365 login" not in known.fix, code  # the whole command, not a part


@pytest.mark.parametrize("separator", ["\r\n", " "])
def test_the_trace_lines_are_dropped_whatever_separates_them(separator):
    text = answer("AADSTS9999999", separator=separator)["error_description"]
    assert microsoft_text(text) == "AADSTS9999999: Microsoft's text."
    error = explain(answer("AADSTS9999999", separator=separator), "doing it")
    assert "Microsoft's text" in str(error) and "Trace" not in str(error)


@pytest.mark.parametrize("error", ["invalid_grant", "interaction_required"])
def test_conditional_access_is_a_sign_in_whichever_error_microsoft_names(error):
    claims = '{"access_token":{"capolids":{"essential":true,"values":["p"]}}}'
    got = explain(answer("AADSTS53003", error, suberror="message_only", claims=claims), "x")
    assert isinstance(got, AuthorizationRequired)
    assert got.claims == claims and got.error == error
    assert "administrator" in str(got)


def test_an_unknown_refusal_of_the_token_asks_for_a_sign_in():
    got = explain(answer("AADSTS9999999"), "refreshing the access token")
    assert isinstance(got, AuthorizationRequired) and got.code == "AADSTS9999999"


def test_a_request_loop_is_throttling_not_a_dead_token():
    got = explain(answer("AADSTS50196"), "refreshing the access token")
    assert isinstance(got, ServiceUnavailable) and got.code == "AADSTS50196"
    assert "sign in" not in str(got).lower()
