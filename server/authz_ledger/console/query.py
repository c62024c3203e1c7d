"""The console's query language: what an auditor types in the search box, parsed into one :class:`Query`.

    user:alice outcome:deny path:/admin since:1h   and free text: GET api.example.com /orders 0192f0c4-...

Every term is a condition and all must hold (AND). ``key:value`` terms (values may be double-quoted):

=================  ==================================================================================
``user:``          the decision's principal (mTLS source principal, else the first user header)
``outcome:``       ``allow``, ``deny`` or ``error``
``status:``        the HTTP status Envoy was told to answer (``403``)
``method:``        request method, case-insensitive
``host:``          request host (``:authority``), case-insensitive
``path:``          path prefix of whole segments (/admin: /admin, /admin/users; not /administrators)
``header:``        ``name=value``: a request header as recorded (after redaction)
``version:``       the policy version that decided
``id:``            a decision id
``since:``         ``15m`` / ``1h`` / ``7d`` / ``2w`` ago, or an ISO 8601 time (UTC unless it says otherwise)
``until:``         same forms; exclusive
=================  ==================================================================================

Free words match, case-insensitively, a whole word of the method, host, path segments, principal or decision
id. The parse is strict: an unknown key or a bad value is an InvalidRequestError naming it, never a silently
broader search. :meth:`Query.text` gives the canonical form, which is what shareable URLs carry.
"""

from __future__ import annotations

import datetime
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field, replace

from authz_ledger.errors import InvalidRequestError

OUTCOMES = ("allow", "deny", "error")
_DURATION = re.compile(r"(\d+)(s|m|h|d|w)")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
_WORD = re.compile(r"[\w.\-]+")
KEYS = ("user", "outcome", "status", "method", "host", "path", "header", "version", "id", "since", "until")
ALIASES = {"principal": "user", "policy": "version", "decision": "id"}


@dataclass(frozen=True)
class Query:
    """A parsed query. Empty strings / zero mean "no condition"; times are Unix nanoseconds (until exclusive)."""

    user: str = ""
    outcome: str = ""
    status: int = 0
    method: str = ""
    host: str = ""
    path: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    version: str = ""
    decision_id: str = ""
    since_ns: int = 0
    until_ns: int = 0
    words: tuple[str, ...] = ()
    source: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    """The terms as typed (``since: 1h`` stays ``1h``), for the canonical text."""

    @property
    def is_empty(self) -> bool:
        return self == Query()

    def text(self) -> str:
        """Canonical text: keys in a fixed order, then free words; parse(text()) == self (for relative times,
        up to the moment of parsing)."""
        parts: list[str] = []
        for key in KEYS:
            if key == "header":
                parts.extend(f"header:{quote(f'{n}={v}')}" for n, v in self.headers)
            elif key in self.source:
                parts.append(f"{key}:{quote(self.source[key])}")
        parts.extend(quote(w) for w in self.words)
        return " ".join(parts)


def quote(value: str) -> str:
    return value if value and re.fullmatch(r"[^\s\"']+", value) else '"' + value.replace('"', "") + '"'


def parse_time(value: str, *, now_ns: int | None = None) -> int:
    """``15m``-style durations ago, or ISO 8601 (naive means UTC); Unix nanoseconds."""
    m = _DURATION.fullmatch(value)
    if m:
        now = time.time_ns() if now_ns is None else now_ns
        return max(now - int(m.group(1)) * _UNIT_NS[m.group(2)], 1)
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"bad time {value!r}: want a duration ago (30s, 15m, 1h, 7d, 2w) or ISO 8601 (2026-12-05T10:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    seconds = int(when.timestamp())
    return seconds * 10**9 + when.microsecond * 1000


def parse(text: str, *, now_ns: int | None = None) -> Query:
    """Parse the search box; InvalidRequestError naming the first bad term."""
    try:
        terms = shlex.split(text, posix=True)
    except ValueError as e:
        raise InvalidRequestError(f"bad query: {e} (quote values with spaces in double quotes)") from None
    q = Query()
    source: dict[str, str] = {}
    words: list[str] = []
    headers: list[tuple[str, str]] = []
    for term in terms:
        key, sep, value = term.partition(":")
        key = ALIASES.get(key.lower(), key.lower())
        if not sep or key not in KEYS:
            if sep and re.fullmatch(r"[a-z_]+", key):
                raise InvalidRequestError(f"unknown search key {key!r}: use one of {', '.join(KEYS)}")
            for w in _WORD.findall(term):
                if _is_uuid(w) and "id" not in source:  # a pasted decision id: found through the id index
                    source["id"] = w
                    q = _with_term(q, "id", w, now_ns)
                else:
                    words.append(w.lower())
            continue
        if not value:
            raise InvalidRequestError(f"{key}: needs a value")
        if key == "header":
            name, eq, hv = value.partition("=")
            if not eq or not name:
                raise InvalidRequestError(f"header:{value}: want header:name=value")
            headers.append((name.lower(), hv))
            continue
        if key in source:
            raise InvalidRequestError(f"{key}: given twice (every term must hold, so give one)")
        source[key] = value
        q = _with_term(q, key, value, now_ns)
    if q.since_ns and q.until_ns and q.since_ns >= q.until_ns:
        raise InvalidRequestError("since: must be before until:")
    return replace(q, words=tuple(words), headers=tuple(headers), source=source)


def _with_term(q: Query, key: str, value: str, now_ns: int | None) -> Query:
    if key == "outcome":
        if value.lower() not in OUTCOMES:
            raise InvalidRequestError(f"outcome:{value}: want one of {', '.join(OUTCOMES)}")
        return replace(q, outcome=value.lower())
    if key == "status":
        if not value.isdigit() or not 100 <= int(value) <= 599:
            raise InvalidRequestError(f"status:{value}: want an HTTP status code (100-599)")
        return replace(q, status=int(value))
    if key == "path":
        if not value.startswith("/"):
            raise InvalidRequestError(f"path:{value}: a path prefix starts with /")
        return replace(q, path=value)
    if key == "id":
        try:
            return replace(q, decision_id=str(uuid.UUID(value)))
        except ValueError:
            raise InvalidRequestError(f"id:{value}: a decision id is a UUID") from None
    if key == "since":
        return replace(q, since_ns=parse_time(value, now_ns=now_ns))
    if key == "until":
        return replace(q, until_ns=parse_time(value, now_ns=now_ns))
    if key == "method":
        return replace(q, method=value.upper())
    if key == "host":
        return replace(q, host=value.lower())
    if key == "user":
        return replace(q, user=value)
    return replace(q, version=value)  # exact


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def words_of(*texts: str) -> set[str]:
    """The free-text words of an entry's fields: what a free word in the query is matched against."""
    found: set[str] = set()
    for t in texts:
        found.update(w.lower() for w in _WORD.findall(t))
    return found
