"""The console's query language: what the search box accepts, what it means, and what it refuses."""

from __future__ import annotations

import pytest

from authz_ledger.console import query
from authz_ledger.errors import InvalidRequestError

NOW = 1_790_000_000_000_000_000
DID = "01a2462d-c2a5-7344-ae16-43c02a7353e1"

PARSES = [
    ("an empty box matches everything", "", query.Query()),
    ("keys and free words together", "user:alice outcome:DENY path:/admin GET",
     query.Query(user="alice", outcome="deny", path="/admin", words=("get",))),
    ("aliases of user, version and id", f"principal:bob policy:r7 decision:{DID}",
     query.Query(user="bob", version="r7", decision_id=DID)),
    ("a quoted value keeps its spaces", 'user:"Alice Smith"', query.Query(user="Alice Smith")),
    ("method upper-cased, host lower-cased", "method:get host:API.Example.com",
     query.Query(method="GET", host="api.example.com")),
    ("headers repeat and keep their value's case", "header:X-Tenant=Acme header:x-user=bob",
     query.Query(headers=(("x-tenant", "Acme"), ("x-user", "bob")))),
    ("a relative time is measured back from now", "since:15m", query.Query(since_ns=NOW - 15 * 60 * 10**9)),
    ("an ISO 8601 time without a zone is UTC", "until:2026-09-21T10:00:00",
     query.Query(until_ns=1_789_984_800_000_000_000)),
    ("a pasted decision id becomes an id condition", f"{DID}", query.Query(decision_id=DID)),
    ("free words are split on punctuation", "/admin/users", query.Query(words=("admin", "users"))),
    ("an HTTP status", "status:403", query.Query(status=403)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "want"), [c[1:] for c in PARSES], ids=[c[0] for c in PARSES])
def test_a_query_parses_to_its_conditions(text: str, want: query.Query) -> None:
    got = query.parse(text, now_ns=NOW)
    assert got == want
    # The canonical text is what shareable URLs carry: it parses back to the same conditions.
    assert query.parse(got.text(), now_ns=NOW).text() == got.text()


REFUSED = [
    ("an unknown key", "usr:alice", "unknown search key 'usr'"),
    ("an outcome that does not exist", "outcome:maybe", "want one of allow, deny, error"),
    ("a status that is not a status", "status:42", "HTTP status code"),
    ("a path that is not a path", "path:admin", "starts with /"),
    ("a decision id that is not a UUID", "id:1234", "is a UUID"),
    ("a time that is neither form", "since:yesterday", "duration ago"),
    ("an empty value", "user:", "needs a value"),
    ("a header without a value part", "header:x-user", "header:name=value"),
    ("the same key twice", "user:a user:b", "given twice"),
    ("an empty time range", "since:1h until:2h", "before until"),
    ("an unclosed quote", 'user:"alice', "quote values"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_bad_query_is_refused_with_a_message_naming_the_term(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        query.parse(text, now_ns=NOW)
