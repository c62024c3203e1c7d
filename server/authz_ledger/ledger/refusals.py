"""What the ledger says about the Checks it refused: backpressure summaries and corrections.

A Check denied because the queue was full cannot have an entry of its own (there is no room for one), so it is
counted, and the next batch carries one summary entry saying how many were denied and when. A ``sync`` Check
denied because its commit timed out already has an entry on its way, recording the policy's answer: that entry
is rewritten while still queued, or else followed by a correction entry. The writer adds these entries itself
and keeps them until a commit holding them succeeds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from authz_ledger.ledger.queue import NUDGE, BatchQueue, Pending
from authz_ledger.record.entry import OUTCOME_ERROR, DecisionRecord
from authz_ledger.record.ids import new_decision_id

if TYPE_CHECKING:
    from authz_ledger.ledger.writer import WriterOptions, WriterStats

# The writer's logger: these lines are the writer's, and operators find them under its name.
log = logging.getLogger("authz_ledger.ledger.writer")


class Refusals:
    """The refusal bookkeeping of one LedgerWriter: shared by the handler threads and the writer thread."""

    def __init__(self, queue: BatchQueue, stats: WriterStats, options: WriterOptions) -> None:
        self._queue = queue
        self._stats = stats
        self._options = options
        self._lock = threading.Lock()
        self._count = 0
        self._first_ns = 0
        self._last_ns = 0
        self.unwritten: list[Pending] = []
        """Entries the writer added itself (corrections, backpressure summaries) whose commit has not succeeded
        yet: added to every batch until one commits (under _lock)."""
        self._sync_waiters = 0

    def sync_waiter_arrives(self) -> None:
        """Count a ``sync`` Check waiting for its commit: it may yet add a correction, so shutdown waits for it."""
        with self._lock:
            self._sync_waiters += 1

    def sync_waiter_leaves(self) -> None:
        with self._lock:
            self._sync_waiters -= 1

    def note_refused(self) -> None:
        """Count one Check denied without an entry of its own (it goes into the next summary entry)."""
        now = time.time_ns()
        with self._lock:
            self._stats.rejected_backpressure += 1
            if self._count == 0:
                self._first_ns = now
            self._count += 1
            self._last_ns = now

    def correct(self, pending: Pending, refused: bytes, *, writer_stopped: bool) -> None:
        """Make the ledger say that ``pending``'s Check was refused after its commit timed out."""
        decision = str(uuid.UUID(bytes=pending.decision_id))
        if writer_stopped:
            log.critical(
                "decision %s was denied after its commit timed out, but the ledger writer has stopped: its entry "
                "may say otherwise and nothing more can be written",
                decision,
            )
            return
        if self._queue.replace_body(pending, refused):
            log.warning("decision %s refused: commit timeout; its queued entry now records the refusal", decision)
            return
        if pending.done is not None and pending.done.is_set() and pending.error is not None:
            return  # its commit failed meanwhile: nothing in the ledger contradicts the refusal
        # The writer holds it in the commit under way (or has just committed it): that entry records the policy's
        # answer, so a correction entry follows it. The writer keeps it until a commit holding it succeeds.
        correction = self._own_entry(
            time.time_ns(),
            f"LedgerWriteError: decision {decision} was denied with HTTP {self._options.overload_http_status}: "
            f"its commit did not finish within {self._options.commit_timeout_s} s; the entry recorded for it "
            "(if that commit succeeded) holds the policy's answer, not what Envoy was told",
            {"refused_decision_id": decision},
        )
        correction_id = uuid.UUID(bytes=correction.decision_id)
        with self._lock:
            self.unwritten.append(correction)
        log.warning("decision %s refused: commit timeout; correction entry %s queued", decision, correction_id)
        self._queue.put(NUDGE, 0, force=True)

    def extra_entries(self, *, halted: bool) -> list[Pending]:
        """What the writer adds to a batch itself: its entries not yet committed (corrections, summaries whose
        commit failed) and a summary of the Checks refused since the last one."""
        summary = self._summary()
        with self._lock:
            extra = list(self.unwritten) if not halted else []
        return [*extra, summary] if summary is not None else extra

    def settle(self, extra: list[Pending], *, committed: bool) -> None:
        """After a commit of the writer's own ``extra``: those stay unwritten until a commit holds them."""
        with self._lock:
            if committed:
                self.unwritten = [e for e in self.unwritten if e not in extra]
            else:
                self.unwritten += [e for e in extra if e not in self.unwritten]

    def settled(self, *, halted: bool) -> bool:
        """No ``sync`` Check still waits (it could add a correction) and no entry of the writer's own is left to
        write (once halted, none can be)."""
        with self._lock:
            unwritten = len(self.unwritten) if not halted else 0
            return self._sync_waiters == 0 and not unwritten

    def _summary(self) -> Pending | None:
        """One entry standing for every Check denied by backpressure since the last summary."""
        with self._lock:
            count, first, last = self._count, self._first_ns, self._last_ns
            self._count = 0
        if count == 0:
            return None
        return self._own_entry(
            last,
            f"BackpressureError: {count} Checks denied with HTTP {self._options.overload_http_status} "
            f"because the ledger queue was full, first at {first} ns, last at {last} ns (Unix time)",
            {"refused": count, "first_unix_nano": first, "last_unix_nano": last},
        )

    def _own_entry(self, time_unix_nano: int, error: str, result: dict[str, Any]) -> Pending:
        """An entry the writer adds itself (a backpressure summary, a correction): Checks refused, as Envoy saw
        them (UNAVAILABLE, HTTP ``overload_http_status``), under a decision id of its own."""
        decision_id = new_decision_id()
        record = DecisionRecord(
            time_unix_nano=time_unix_nano,
            decision_id=str(decision_id),
            outcome=OUTCOME_ERROR,
            http_status=self._options.overload_http_status,
            grpc_code=14,
            error=error,
            result_json=json.dumps(result).encode(),
        )
        return Pending(record.encode(), decision_id.bytes, wait=False)
