"""The single ledger writer thread: group commit, hash chain, tree, checkpoints.

Invariants:

* Exactly one thread writes. Handlers only put encoded entries on a bounded queue; the writer assigns sequence
  numbers, so sequence numbers are the leaf indexes and have no gaps.
* Group commit: the writer takes whatever is queued as soon as its previous commit ends. It never waits to fill
  a batch while decisions are pending; ``batch_max_entries`` only caps a batch.
* One batch = one LMDB write transaction holding the entries, their decision-id index, the new RFC 6962 stored
  hashes (O(log n) per batch beyond the leaves, nothing proportional to the log), the batch record that chains to
  the previous one, and the new head. A crash leaves the whole batch or none of it.
* ``sync`` durability releases a Check only after the commit (fsync) holding its entry returned; ``async``
  releases at once. Both apply the same backpressure: a bounded wait for queue space, then BackpressureError
  (the Check is denied) -- never a silent drop, never unbounded memory. Checks refused that way cannot have
  an entry of their own (there is no room for one), so they are counted, and the next batch carries one
  summary entry saying how many were denied and when: the ledger shows the overload, in bounded space.
* Checkpoints are derived only from committed state (C2SP tlog-checkpoint in a signed note), published at most
  once per size, never for an unchanged tree, at an interval and at shutdown.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import lmdb

from authz_ledger.errors import BackpressureError, LedgerClosedError, LedgerError, LedgerMapFullError, LedgerWriteError
from authz_ledger.ledger.files import write_file_atomically
from authz_ledger.ledger.queue import NUDGE, STOP, BatchQueue, Pending
from authz_ledger.ledger.refusals import Refusals
from authz_ledger.ledger.store import BatchRecord, Head, Store, leaves_digest
from authz_ledger.record.entry import sequence_prefix
from authz_ledger.tlog import checkpoint, note, tree

log = logging.getLogger(__name__)


class Durability(Enum):
    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True, slots=True)
class WriterOptions:
    durability: Durability = Durability.SYNC
    queue_size: int = 8192
    enqueue_timeout_s: float = 0.05
    """Bounded wait for queue space before a Check is denied (backpressure)."""
    commit_timeout_s: float = 5.0
    """How long a ``sync`` Check waits for its commit before it is denied."""
    batch_max_entries: int = 512
    checkpoint_interval_s: float = 1.0
    map_max_size: int = 1 << 40
    """The LMDB map doubles on 'map full' up to this size; beyond it writes fail closed."""
    overload_http_status: int = 503
    """The status Checks refused by backpressure were denied with (recorded in the summary entry)."""


@dataclass(slots=True)
class WriterStats:
    """Counters read by metrics and the bench; written only by the writer thread (except rejected)."""

    committed_entries: int = 0
    committed_batches: int = 0
    failed_batches: int = 0
    rejected_backpressure: int = 0
    last_batch_size: int = 0
    last_commit_seconds: float = 0.0
    checkpoints_published: int = 0
    last_checkpoint_unix: float = 0.0


class LedgerWriter:
    """Owns every write to one Store. Thread-safe ``record``; everything else runs on the writer thread."""

    def __init__(
        self,
        store: Store,
        signers: Sequence[note.Signer],
        origin: str,
        options: WriterOptions,
        *,
        checkpoint_file: Path | None = None,
        on_checkpoint: Callable[[int, bytes], None] | None = None,
    ) -> None:
        if not signers:
            raise LedgerError("the ledger needs at least one signing key")
        self.store = store
        self.signers = list(signers)
        self.origin = origin
        self.options = options
        self.checkpoint_file = checkpoint_file
        self.on_checkpoint = on_checkpoint
        """Called on the writer thread with (size, signed note) after each checkpoint is stored: keep it quick."""
        self.stats = WriterStats()
        self._queue = BatchQueue(options.queue_size)
        self._closed = False
        self._close_lock = threading.Lock()
        self._committed = threading.Condition()
        self._halted: str | None = None
        """Set when the writer must not write again (its view of the store is wrong): every batch fails."""
        self._refusals = Refusals(self._queue, self.stats, options)
        """Checks refused (backpressure, commit timeouts) and the entries the writer adds itself to say so."""
        self.head: Head = store.head()
        self._frontier = tree.Frontier.from_stored(self.head.size, store.read_hashes)
        latest = store.checkpoint()
        # An empty tree needs no checkpoint: a new ledger publishes its first one after its first batch.
        self._checkpoint_size = latest[0] if latest else 0
        self._last_checkpoint_time = time.monotonic()
        self.failure: str | None = None
        """Why the last commit failed, None when healthy (health and metrics read it)."""
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)

    # --- handler side ---

    def start(self) -> None:
        self._thread.start()

    def record(self, body: bytes, decision_id: bytes, *, refused_body: Callable[[str], bytes] | None = None) -> int:
        """Queue one entry; in ``sync`` mode return its sequence number once it is durable, else -1.

        Raises BackpressureError, LedgerClosedError or LedgerWriteError: the caller must fail closed.
        ``refused_body(reason)``: the entry saying that this decision was refused, should its commit not finish
        within ``commit_timeout_s`` (the caller then denies the Check, so the ledger must say so too).
        """
        wait = self.options.durability is Durability.SYNC
        if wait:
            # Counted before the closed check: shutdown keeps writing until every waiter is done.
            self._refusals.sync_waiter_arrives()
        try:
            if self._closed:
                raise LedgerClosedError("the ledger is shutting down")
            if not wait and self.failure is not None:
                # async answers before the commit: while commits fail, an allow could rest on memory alone.
                raise LedgerWriteError(f"the ledger cannot write: {self.failure}")
            pending = Pending(body, decision_id, wait)
            if not self._queue.put(pending, self.options.enqueue_timeout_s):
                self.note_refused()
                raise BackpressureError(
                    f"ledger queue full ({self.options.queue_size} decisions) for "
                    f"{self.options.enqueue_timeout_s * 1000:.0f} ms"
                ) from None
            if pending.done is None:
                return -1
            if not pending.done.wait(self.options.commit_timeout_s):
                # The Check is denied now (nothing is allowed without a durable record), but its entry is still
                # queued or being committed: the ledger must not end up saying what the policy answered when
                # Envoy was told something else.
                reason = f"commit did not finish within {self.options.commit_timeout_s} s"
                if refused_body is not None:
                    try:
                        self._correct(pending, refused_body(f"LedgerWriteError: {reason}"))
                    except Exception:  # the Check must still be denied, not turned into a failed RPC
                        log.exception("could not record the refusal of a timed-out decision")
                raise LedgerWriteError(reason)
            if pending.error is not None:
                raise pending.error
            return pending.seq
        finally:
            if wait:
                self._refusals.sync_waiter_leaves()

    def _correct(self, pending: Pending, refused: bytes) -> None:
        """Make the ledger say that ``pending``'s Check was refused after its commit timed out."""
        stopped = self._halted is not None or not self._thread.is_alive()
        self._refusals.correct(pending, refused, writer_stopped=stopped)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking entries, commit everything queued, publish a final checkpoint, join the thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            # The sentinel must get in even if the queue is full: the writer is draining it.
            self._queue.put(STOP, 0, force=True)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("ledger writer did not stop within %.0f s", timeout)
        else:
            self._publish_checkpoint(force=True)

    def wait_for_size(self, size: int, timeout: float) -> int:
        """Block until the committed tree holds more than ``size`` entries (or timeout); the committed size.

        For readers that follow the ledger live (Tail): they wait here instead of polling LMDB.
        """
        with self._committed:
            if self.head.size <= size:
                self._committed.wait(timeout)
            return self.head.size

    def note_refused(self) -> None:
        """Count one Check denied without an entry of its own (it goes into the next summary entry)."""
        self._refusals.note_refused()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # --- writer thread ---

    def _run(self) -> None:
        max_batch = self.options.batch_max_entries
        while True:
            batch = self._queue.take(max_batch, self._until_checkpoint())
            stop = any(p is STOP for p in batch)
            batch = [p for p in batch if p is not STOP and p is not NUDGE]
            extra = self._refusals.extra_entries(halted=self._halted is not None)
            if not batch and not extra:
                self._publish_checkpoint()
                if stop:
                    break
                continue
            self._commit_with(batch, extra)
            if stop:
                break
            if self._checkpoint_due():
                self._publish_checkpoint()
        # Nothing but stragglers and the writer's own entries can follow STOP (record() refuses new entries once
        # closed); a sync Check still waiting may time out and add a correction, so write until none waits.
        # One batch at a time, as above: an entry still queued can then be rewritten in place, and a correction
        # never overtakes the entry it corrects.
        deadline = time.monotonic() + self.options.commit_timeout_s + 1.0
        while True:
            chunk = [p for p in self._queue.take(max_batch, 0) if p is not STOP and p is not NUDGE]
            extra = self._refusals.extra_entries(halted=self._halted is not None)
            if chunk or extra:
                if not self._commit_with(chunk, extra):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)  # the disk is failing: retry the writer's own entries calmly
                continue
            settled = self._refusals.settled(halted=self._halted is not None)
            if (settled and not len(self._queue)) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if self._refusals.unwritten:
            log.critical(
                "ledger writer stopped with %d of its own entries unwritten (corrections of decisions denied after "
                "a commit timeout, backpressure summaries): see the warnings naming those decisions above",
                len(self._refusals.unwritten),
            )
        self._publish_checkpoint(force=True)

    def _commit_with(self, batch: list[Pending], extra: list[Pending]) -> bool:
        """Commit ``batch`` and the writer's own ``extra``; those stay pending until a commit holds them."""
        ok = self._commit(batch + extra)
        self._refusals.settle(extra, committed=ok)
        return ok

    def _until_checkpoint(self) -> float | None:
        if self._refusals.unwritten and self._halted is None:
            return 1.0  # a correction whose commit failed: try again soon, not only when a Check arrives
        if self.head.size == self._checkpoint_size:
            return None  # nothing new to sign: sleep until an entry arrives
        remaining = self.options.checkpoint_interval_s - (time.monotonic() - self._last_checkpoint_time)
        return max(remaining, 0.0)

    def _checkpoint_due(self) -> bool:
        if self.head.size == self._checkpoint_size:
            return False
        if self._checkpoint_size == 0:
            # A new ledger's first checkpoint follows its first commit at once: until one exists nothing vouches
            # for the entries, and start-up refuses a non-empty ledger without one (ledger/trust.py).
            return True
        return time.monotonic() - self._last_checkpoint_time >= self.options.checkpoint_interval_s

    def _commit(self, batch: list[Pending]) -> bool:
        """Commit ``batch`` in one transaction; False if it failed (every waiting Check then gets the error)."""
        started = time.perf_counter()
        while True:
            try:
                if self._halted is not None:
                    raise LedgerWriteError(self._halted)
                seqs = self._append(batch)
                break
            except LedgerWriteError as e:
                if self._try_grow_map(e):
                    continue
                if isinstance(e, LedgerMapFullError):
                    e = LedgerMapFullError(
                        f"{e}; the map is at ledger.map_max_size_mb ({self.options.map_max_size >> 20} MiB): "
                        "raise ledger.map_max_size_mb (and make room on the disk) and restart; Checks are "
                        "denied until then"
                    )
                self.stats.failed_batches += 1
                self.failure = str(e)
                log.error("ledger commit of %d entries failed: %s", len(batch), e)
                self._reopen_store()
                if self.options.durability is Durability.SYNC or self._closed or self._halted is not None:
                    for p in batch:
                        p.error = e
                        if p.done is not None:
                            p.done.set()
                    if self._closed:
                        log.critical("%d queued decisions could not be written at shutdown", len(batch))
                    return False
                # async: these Checks were already answered; keep retrying (the queue fills up behind
                # us and backpressure then denies new Checks) rather than lose acknowledged entries.
                time.sleep(0.2)
        self.failure = None
        with self._committed:
            self._committed.notify_all()
        for p, seq in zip(batch, seqs, strict=True):
            p.seq = seq
            if p.done is not None:
                p.done.set()
        self.stats.committed_entries += len(batch)
        self.stats.committed_batches += 1
        self.stats.last_batch_size = len(batch)
        self.stats.last_commit_seconds = time.perf_counter() - started
        return True

    def _append(self, batch: list[Pending]) -> range:
        old = self.head
        frontier = self._frontier.copy()
        entries: list[bytes] = []
        leaves: list[bytes] = []
        new_hashes: list[bytes] = []
        seq = old.size
        sha256 = hashlib.sha256
        for p in batch:
            entry = sequence_prefix(seq) + p.body
            leaf = sha256(b"\x00" + entry).digest()  # RFC 6962 §2.1 leaf hash
            new_hashes.extend(frontier.append(leaf))
            entries.append(entry)
            leaves.append(leaf)
            seq += 1
        root = frontier.root()
        record = BatchRecord(
            number=old.batches,
            prev_hash=old.last_batch_hash,
            first_seq=old.size,
            count=len(batch),
            leaves_digest=leaves_digest(leaves),
            tree_size=frontier.size,
            tree_root=root,
            time_unix_nano=time.time_ns(),
        )
        head = Head(frontier.size, root, old.batches + 1, BatchRecord.hash_of(record.encode()))
        self.store.append_batch(entries, leaves, [p.decision_id for p in batch], new_hashes, record, head, old)
        self.head = head
        self._frontier = frontier
        return range(old.size, head.size)

    def _reopen_store(self) -> None:
        """After a failed write, start the next one on a fresh environment (see Store.reopen).

        The failed transaction committed nothing, so the stored head must still be ours; if it is not, the
        store changed under us and the writer stops writing (every later Check is denied) rather than guess.
        """
        try:
            self.store.reopen()
            stored = self.store.head()
        except (LedgerError, lmdb.Error) as e:
            log.error("cannot reopen the ledger after a failed write: %s", e)
            return
        if stored != self.head:
            self._halted = (
                f"ledger head changed under the writer (stored size {stored.size}, ours {self.head.size}); "
                "refusing to write: restart the service"
            )
            self.failure = self._halted
            log.critical("%s", self._halted)

    def _try_grow_map(self, error: LedgerWriteError) -> bool:
        if not isinstance(error, LedgerMapFullError):
            return False
        current = self.store.map_size()
        if current >= self.options.map_max_size:
            return False
        new_size = min(current * 2, self.options.map_max_size)
        log.warning("LMDB map full at %d bytes; growing to %d", current, new_size)
        try:
            self.store.grow_map(new_size)
        except LedgerWriteError as e:
            log.error("%s", e)
            return False
        return True

    def _publish_checkpoint(self, *, force: bool = False) -> None:
        """Sign the committed head (C2SP tlog-checkpoint), store it by size, and write the checkpoint file."""
        head = self.head
        if head.size == self._checkpoint_size:
            return
        if not force and not self._checkpoint_due():
            return
        cp = checkpoint.Checkpoint(self.origin, head.size, head.root)
        signed = checkpoint.sign_checkpoint(cp, self.signers)
        try:
            self.store.put_checkpoint(head.size, signed)
            if self.checkpoint_file is not None:
                write_file_atomically(self.checkpoint_file, signed)
        except (LedgerWriteError, OSError) as e:
            self.failure = f"checkpoint at size {head.size}: {e}"
            log.error("cannot publish checkpoint at size %d: %s", head.size, e)
            # Retry at the next interval, not at once: a disk that keeps failing must not turn the writer
            # into a busy loop of failing transactions and log lines.
            self._last_checkpoint_time = time.monotonic()
            if isinstance(e, LedgerWriteError):
                self._reopen_store()
            return
        self._checkpoint_size = head.size
        self._last_checkpoint_time = time.monotonic()
        self.stats.checkpoints_published += 1
        self.stats.last_checkpoint_unix = time.time()
        if self.on_checkpoint is not None:
            try:
                self.on_checkpoint(head.size, signed)
            except Exception:
                log.exception("checkpoint listener failed")
        log.debug("published checkpoint size=%d", head.size)
