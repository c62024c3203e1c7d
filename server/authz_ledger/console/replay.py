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
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authz_ledger.check.result import check_response
from authz_ledger.console.facts import Facts, facts_from, matches
from authz_ledger.console.index import path_pattern
from authz_ledger.console.query import Query
from authz_ledger.errors import ConfigError, PolicyError, PolicyTimeoutError
from authz_ledger.ledger.store import Store
from authz_ledger.policy import DEFAULT_DECISION_PATH, PolicyEngine
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.readside.values import EntryFilter

if TYPE_CHECKING:
    from authz_ledger.policy.embedded import EmbeddedEngine
    from authz_ledger.policy.embedded.inprocess import InProcessEngine

_REDACTED = b"hmac-sha256"

DECISION_TIMEOUT_MS = 1000
"""How long one re-evaluation may take (``replay --timeout-ms`` default, and the console's bound)."""

IN_PROCESS, PROCESSES = "in-process", "processes"
"""Where the candidate is evaluated: OPA's engine loaded into the replaying process, or evaluator processes."""


def open_engine(
    policy: str | os.PathLike[str],
    *,
    where: str = PROCESSES,
    workers: int,
    timeout_ms: int = DECISION_TIMEOUT_MS,
    decision_path: str = DEFAULT_DECISION_PATH,
    data_files: Sequence[str | os.PathLike[str]] = (),
    on_overrun: Callable[[PolicyTimeoutError], None] | None = None,
) -> EmbeddedEngine | InProcessEngine:
    """The engine a replay evaluates the candidate with: OPA's Go engine as ``serve`` runs it (same loading,
    strictness and result contract), so the CLI and the console's replay page decide alike. Close it when the
    replay ends: it holds a Go runtime (its processes', or this process's memory).

    ``PROCESSES``: ``workers`` evaluator processes, as ``serve`` has them; a re-evaluation past the timeout is
    killed and reported as an ``error`` decision, and the replay goes on. The console uses these: it may live
    inside ``serve``. ``IN_PROCESS``: ``workers`` threads evaluating in this process, without a hand-off per
    decision (the faster, bench/RESULTS.md part 11); a re-evaluation past the timeout cannot be stopped, so
    ``on_overrun`` is called and must end the process (the CLI exits with the error).
    """
    if where == IN_PROCESS:
        from authz_ledger.policy.embedded.inprocess import InProcessEngine  # loads Go into this process

        if on_overrun is None:
            raise ConfigError("the in-process engine needs on_overrun: an evaluation it cannot stop ends the process")
        return InProcessEngine(
            policy,
            decision_path,
            on_overrun=on_overrun,
            threads=workers,
            timeout=timeout_ms / 1000,
            data_files=data_files,
        )
    from authz_ledger.policy.embedded import EmbeddedEngine  # spawns processes: only when a replay runs

    return EmbeddedEngine(
        policy, decision_path=decision_path, workers=workers, timeout=timeout_ms / 1000, data_files=data_files
    )


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


def _entries(store: Store, q: Query, end: int | None, is_active: Callable[[], bool] | None) -> Iterator[Facts]:
    reader = LedgerReader(store)
    only = EntryFilter(since_unix_nano=q.since_ns, until_unix_nano=q.until_ns)
    for e in reader.list_entries(end=end, filter=only, is_active=is_active):
        f = facts_from(e.index, e.message)
        if f.message is not None and matches(q, f):
            yield f


def replay(
    store: Store,
    engine: PolicyEngine,
    q: Query,
    *,
    threads: int = 8,
    end: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    is_active: Callable[[], bool] | None = None,
) -> Report:
    """Re-evaluate every recorded decision matching ``q`` (seq order), ``threads`` evaluations in flight.

    ``end``: only entries before it (the ledger's size when the replay began, so a report describes a fixed
    range while ``serve`` appends). ``progress(decisions done, last index reached)`` is called after each chunk;
    when ``is_active`` turns false the scan stops and the report covers what was read until then.
    """
    report = Report(engine.policy_version())
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="replay") as pool:
        for chunk in _chunks(_entries(store, q, end, is_active), CHUNK):
            # Each thread decides a share of the chunk in one task: a task per decision would cost more in the
            # pool's bookkeeping than the parent's side of an evaluation.
            shares = [chunk[i::threads] for i in range(threads)]
            decided = list(pool.map(functools.partial(_decide_all, engine), shares))
            for i, f in enumerate(chunk):
                _account(report, f, decided[i % threads][i // threads])
            if progress is not None:
                progress(report.replayed + report.not_replayable, chunk[-1].seq)
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
