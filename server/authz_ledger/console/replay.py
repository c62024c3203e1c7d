"""Impact analysis: re-evaluate recorded decisions with a candidate policy and report every one that would change.

Each recorded entry carries the input document the policy saw (after redaction), so the candidate policy is
evaluated on exactly that document, by the same engine and result contract as ``serve`` (OPA's Go engine,
check.result's mapping of the decision document to allow / deny and an HTTP status). A decision "changes" when
its outcome (allow, deny, error) or its HTTP status differs from what was recorded.

What it cannot see: values the ledger stores only as keyed digests (``hmac-sha256:…``: bearer tokens, cookies,
listed secrets) are digests in the replayed input too, so a policy that reads them (``io.jwt.decode`` of the
Authorization header) decides differently here than it would on the live request. The report counts the entries
whose input holds a digest (``redacted_inputs``), so a reader knows how much of it that caveat touches. Entries
recorded without an input document (a Check whose request did not parse) cannot be replayed and are counted.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from authz_ledger.check.result import check_response
from authz_ledger.console.facts import Facts, facts_from, matches
from authz_ledger.console.index import path_pattern
from authz_ledger.console.query import Query
from authz_ledger.errors import PolicyError
from authz_ledger.ledger.store import Store
from authz_ledger.policy import PolicyEngine
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.readside.values import EntryFilter

_REDACTED = b"hmac-sha256"


@dataclass(frozen=True)
class Change:
    index: int
    decision_id: str
    time_ns: int
    method: str
    path: str
    principal: str
    was: str
    """``allow 200`` / ``deny 403`` / ``error``: the recorded outcome and HTTP status."""
    now: str
    error: str = ""
    """The candidate policy's error, when ``now`` is ``error``."""

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "decision_id": self.decision_id,
            "time_unix_nano": self.time_ns,
            "method": self.method,
            "path": self.path,
            "principal": self.principal,
            "was": self.was,
            "now": self.now,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class Report:
    policy_version: str
    replayed: int = 0
    unchanged: int = 0
    not_replayable: int = 0
    redacted_inputs: int = 0
    changes: list[Change] = field(default_factory=list)
    by_path: Counter[str] = field(default_factory=Counter)
    """Changes by path pattern (ids as ``*``) and direction, ``"/admin/users/* allow 200 -> deny 403"``."""
    by_principal: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "replayed": self.replayed,
            "changed": len(self.changes),
            "unchanged": self.unchanged,
            "not_replayable": self.not_replayable,
            "redacted_inputs": self.redacted_inputs,
            "by_path": dict(self.by_path.most_common()),
            "by_principal": dict(self.by_principal.most_common()),
            "changes": [c.as_json() for c in self.changes],
        }


def recorded(f: Facts) -> str:
    return "error" if f.outcome == "error" else f"{f.outcome} {f.status}"


def decide(engine: PolicyEngine, input_json: bytes) -> tuple[str, str]:
    """What ``serve`` would answer now: ``(outcome and status, error message)``."""
    try:
        evaluation = engine.evaluate(input_json)
        outcome = check_response(evaluation.result, decision_id="", dry_run=False)
    except PolicyError as e:
        return "error", str(e)
    return ("allow 200" if outcome.allowed else f"deny {outcome.http_status}"), ""


def _entries(store: Store, q: Query) -> Iterator[Facts]:
    reader = LedgerReader(store)
    for e in reader.list_entries(filter=EntryFilter(since_unix_nano=q.since_ns, until_unix_nano=q.until_ns)):
        f = facts_from(e.index, e.message)
        if f.message is not None and matches(q, f):
            yield f


def replay(store: Store, engine: PolicyEngine, q: Query, *, threads: int = 8) -> Report:
    """Re-evaluate every recorded decision matching ``q`` (seq order), ``threads`` evaluations in flight."""
    report = Report(engine.policy_version())
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="replay") as pool:
        for chunk in _chunks(_entries(store, q), CHUNK):
            # Each thread decides a share of the chunk in one task: a task per decision would cost more in the
            # pool's bookkeeping than the parent's side of an evaluation.
            shares = [chunk[i::threads] for i in range(threads)]
            decided = list(pool.map(functools.partial(_decide_all, engine), shares))
            for i, f in enumerate(chunk):
                _account(report, f, decided[i % threads][i // threads])
    return report


CHUNK = 2048
"""Entries read, then decided, at a time (bounded memory whatever the range)."""


def _chunks(entries: Iterable[Facts], size: int) -> Iterator[list[Facts]]:
    chunk: list[Facts] = []
    for f in entries:
        chunk.append(f)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decide_all(engine: PolicyEngine, share: list[Facts]) -> list[tuple[str, str]]:
    return [decide(engine, f.message.input_json) if f.message.input_json else ("", "") for f in share]


def _account(report: Report, f: Facts, decision: tuple[str, str]) -> None:
    if not f.message.input_json:
        report.not_replayable += 1
        return
    now, error = decision
    report.replayed += 1
    if _REDACTED in f.message.input_json:
        report.redacted_inputs += 1
    was = recorded(f)
    if now == was:
        report.unchanged += 1
        return
    report.changes.append(
        Change(f.seq, f.decision_id, f.time_ns, f.method, f.message.path, f.principal, was, now, error)
    )
    report.by_path[f"{path_pattern(f.path)} {was} -> {now}"] += 1
    report.by_principal[f"{f.principal or '(none)'} {was} -> {now}"] += 1
