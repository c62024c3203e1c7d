"""What counts as a secret: names on the lists and matching the pattern (with array and case variants), and
values shaped like credentials -- without taking request ids, trace ids or ordinary text for credentials."""

from __future__ import annotations

import base64
import json
import secrets

import pytest

from authz_ledger.record.redact import RedactionRules, Redactor
from authz_ledger.record.secrets import DEFAULT_NAME_PATTERN, NameRules, canonical_name, value_shape

RULES = NameRules(frozenset({"access_token", "x-api-key"}), DEFAULT_NAME_PATTERN)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        pytest.param("access_token", True, id="a listed name"),
        pytest.param("Access-Token", True, id="a listed name in another case and separator"),
        pytest.param("access_token[]", True, id="the PHP / Rails array form"),
        pytest.param("access_token[2]", True, id="an indexed array form"),
        pytest.param("X_API_KEY", True, id="a listed header with underscores"),
        pytest.param("user_password", True, id="a name containing password"),
        pytest.param("x-amz-security-token", True, id="a name containing token"),
        pytest.param("client_secret", True, id="a name containing secret"),
        pytest.param("x-hub-signature-256", True, id="a signature"),
        pytest.param("PHPSESSID", False, id="a session cookie name the pattern does not know is left to the lists"),
        pytest.param("x-session-id", True, id="a session id"),
        pytest.param("page", False, id="an ordinary parameter"),
        pytest.param("x-request-id", False, id="the request id stays readable"),
        pytest.param("x-authz-user", False, id="a policy's injected header stays readable"),
        pytest.param("www-authenticate", False, id="a challenge header is not a credential"),
    ],
)
def test_names_that_mark_a_secret(name: str, secret: bool) -> None:
    assert RULES.is_secret(name) is secret


def test_canonical_names_drop_case_separators_and_array_suffixes() -> None:
    assert canonical_name("Refresh-Token[][]") == "refresh_token"


def _jwt() -> str:
    return (
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    )


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        pytest.param("Bearer " + secrets.token_hex(16), "bearer", id="a bearer token"),
        pytest.param("Basic dXNlcjpwYXNzd29yZA==", "bearer", id="basic credentials"),
        pytest.param(_jwt(), "jwt", id="a JWT"),
        pytest.param("token=" + _jwt(), "jwt", id="a JWT inside a longer value"),
        pytest.param("ghp_" + "Ab1" + secrets.token_urlsafe(30), "entropy", id="a GitHub-style token"),
        pytest.param("AKIA" + "Zx9" + secrets.token_urlsafe(33), "entropy", id="a random key of mixed case"),
        pytest.param("0af7651916cd43dd8448eb211c80319c", "", id="a hex trace id"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", id="a traceparent"),
        pytest.param("0190d1d8-7a2b-7cde-8f01-23456789abcd", "", id="a UUID request id"),
        pytest.param("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0", "", id="a user agent"),
        pytest.param("/api/items/customer-orders-and-invoices-2024-archive", "", id="a long path"),
        pytest.param("application/json; charset=utf-8", "", id="a content type"),
        pytest.param("alice", "", id="a short value"),
    ],
)
def test_values_shaped_like_credentials(value: str, shape: str) -> None:
    assert value_shape(value) == shape


def test_a_shaped_value_is_digested_with_a_marker_saying_why() -> None:
    r = Redactor(RedactionRules(), b"k" * 32)
    doc = {"attributes": {"request": {"http": {"headers": {"x-innocent": _jwt(), "x-request-id": "abc-123"}}}}}
    headers = r.redact_input(doc)["attributes"]["request"]["http"]["headers"]
    assert headers["x-innocent"].startswith("hmac-sha256+jwt:")
    assert headers["x-request-id"] == "abc-123"


def test_value_detection_can_be_turned_off() -> None:
    r = Redactor(RedactionRules(detect_values=False), b"k" * 32)
    doc = {"attributes": {"request": {"http": {"headers": {"x-innocent": _jwt()}}}}}
    assert r.redact_input(doc)["attributes"]["request"]["http"]["headers"]["x-innocent"] == _jwt()


JWT = _jwt()
RAW_BASIC = base64.b64encode(b"Basic dXNlcjpw").decode()


@pytest.mark.parametrize(
    ("http", "secret"),
    [
        pytest.param({"path": f"/cb?{JWT}"}, JWT, id="a parameter that is itself a credential"),
        pytest.param({"path": f"/reset/{JWT}/confirm"}, JWT, id="a credential as a path segment"),
        pytest.param({"path": "/cb#access_token=frag-secret-1&x=1"}, "frag-secret-1", id="a token in a fragment"),
        pytest.param({"headers": {"x-forwarded-uri": "/r?password=hunter2-x"}}, "hunter2-x",
                     id="a forward-auth proxy's original URL"),
        pytest.param({"headers": {"referer": "https://a/#access_token=ref-secret-2"}}, "ref-secret-2",
                     id="a referer's fragment"),
        pytest.param({"headerMap": {"headers": [{"key": "x-c", "rawValue": RAW_BASIC}]}}, RAW_BASIC,
                     id="a raw header value, judged decoded"),
    ],
)  # fmt: skip
def test_secrets_outside_the_usual_places_are_digested(http: dict[str, object], secret: str) -> None:
    r = Redactor(RedactionRules(), b"k" * 32)
    path = str(http.get("path", "")).partition("?")[0].partition("#")[0]
    doc = {"attributes": {"request": {"http": http}}, "parsed_path": path.split("/")[1:]}
    assert secret not in json.dumps(r.redact_input(doc))


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"allowed": True, "headers": {"x-up": ["Bearer abcdefghijklmnop", JWT]}}, id="a header's list"),
        pytest.param({"allowed": True, "query_parameters_to_set": {"redirect": JWT}}, id="a parameter to set"),
        pytest.param({"allowed": True, "query_parameters_to_set": [JWT]}, id="parameters of the wrong shape"),
    ],
)
def test_credential_shaped_values_in_a_result_are_digested(result: dict[str, object]) -> None:
    stored = json.dumps(Redactor(RedactionRules(), b"k" * 32).redact_result(result))
    assert JWT not in stored and "abcdefghijklmnop" not in stored
