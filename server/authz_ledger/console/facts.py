"""What the console searches by, read from one entry's stored bytes: the same extraction for the index and for
the final check of every row, so a row is shown only if the entry itself (not the index) meets the query.

The principal is the mTLS source principal when the caller had one; otherwise the first of the user headers
(``console.user_headers``: set by an authenticating proxy, ``x-user`` in the quickstart) that the request
carried. Headers are read from the recorded (redacted) input document: a digested value matches only its digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from authz_ledger.config import DEFAULT_USER_HEADERS
from authz_ledger.console.query import Query, words_of
from authz_ledger.errors import LedgerCorruptError
from authz_ledger.record import entry
from authz_ledger.record.redact import document_headers

UNDECODABLE = "undecodable"
"""The outcome the console gives an entry whose bytes are not a LedgerEntry (verification names it)."""


@dataclass(slots=True)
class Facts:
    """One entry as the console searches it."""

    seq: int
    time_ns: int = 0
    outcome: str = UNDECODABLE
    status: int = 0
    method: str = ""
    host: str = ""
    path: str = ""
    """Without the query string."""
    principal: str = ""
    version: str = ""
    decision_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    message: Any = None
    """The decoded LedgerEntry; None when the bytes do not decode."""

    @property
    def words(self) -> set[str]:
        return words_of(self.method, self.host, self.path, self.principal, self.decision_id)


def request_headers(input_doc: Any) -> dict[str, str]:
    """The recorded request's headers, names lower-cased, string values only."""
    return {str(k).lower(): v for k, v in document_headers(input_doc).items() if isinstance(v, str)}


def facts_of(seq: int, raw: bytes, user_headers: Sequence[str] = DEFAULT_USER_HEADERS) -> Facts:
    """Decode ``raw`` (the stored bytes) into Facts; an entry that does not decode gives Facts with no message."""
    try:
        msg = entry.decode(raw, seq)
    except LedgerCorruptError:
        return Facts(seq)
    return facts_from(seq, msg, user_headers)


def facts_from(seq: int, msg: Any, user_headers: Sequence[str] = DEFAULT_USER_HEADERS) -> Facts:
    """Facts of an entry already decoded (a LedgerEntry)."""
    headers: dict[str, str] = {}
    if msg.input_json:
        try:
            headers = request_headers(orjson.loads(msg.input_json))
        except orjson.JSONDecodeError:
            headers = {}
    principal = msg.source.principal
    if not principal:
        principal = next((headers[h] for h in user_headers if headers.get(h)), "")
    return Facts(
        seq=seq,
        time_ns=msg.time_unix_nano,
        outcome=entry.OUTCOME_NAMES.get(msg.outcome, "unspecified"),
        status=msg.http_status,
        method=msg.method.upper(),
        host=msg.host.lower(),
        path=msg.path.partition("?")[0],
        principal=principal,
        version=msg.policy_version,
        decision_id=msg.decision_id,
        headers=headers,
        message=msg,
    )


def matches(q: Query, f: Facts) -> bool:
    """Every condition of ``q`` holds for ``f`` (the final, exact check behind every row shown)."""
    if f.message is None:
        return q.is_empty
    return (
        (not q.user or f.principal == q.user)
        and (not q.outcome or f.outcome == q.outcome)
        and (not q.status or f.status == q.status)
        and (not q.method or f.method == q.method)
        and (not q.host or f.host == q.host)
        and (not q.path or _under(f.path, q.path))
        and (not q.version or f.version == q.version)
        and (not q.decision_id or f.decision_id == q.decision_id)
        and (not q.since_ns or f.time_ns >= q.since_ns)
        and (not q.until_ns or f.time_ns < q.until_ns)
        and all(f.headers.get(name) == value for name, value in q.headers)
        and (not q.words or set(q.words) <= f.words)
    )


def _under(path: str, prefix: str) -> bool:
    """``path:`` is a prefix of whole segments: /admin matches /admin and /admin/users, not /administrators."""
    p = prefix.rstrip("/")
    return not p or path == p or path.startswith(p + "/")
