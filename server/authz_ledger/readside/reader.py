"""The ledger's read side, shared by the audit gRPC service and the CLI: entries, checkpoints, proofs, receipts.

Invariants:

* Readers only ever open LMDB *read* transactions, so they never take the writer's lock and never delay a
  commit. Every transaction is short: ranges are read in chunks of at most ``CHUNK`` entries, each chunk in its
  own transaction whose bytes are copied out before the caller sees them. A consumer that stops reading (a slow
  gRPC client, a paused ``tail -f``) therefore holds no snapshot, and LMDB can keep reusing freed pages.
* Every entry handed out carries its stored bytes exactly as hashed (RFC 9162 §2.1.1 leaf input).
* Nothing unverified leaves this module: an inclusion or consistency proof is checked against the roots it
  claims (RFC 9162 §2.1.3.2 / §2.1.4.2) before it is returned, a leaf hash is recomputed from the entry bytes,
  and a stored checkpoint whose root disagrees with the stored tree is reported as corruption (fail closed).
* Argument errors are errors of the one tree: InvalidRequestError / ProofError (malformed whatever the ledger
  holds), OutOfRangeError (beyond what the ledger or its latest checkpoint has reached: may succeed later),
  NotFoundError (no such entry or checkpoint).
* A tree size left out (None) means the latest signed checkpoint's size: proofs against it can be checked with
  a signed root. An explicit size may be anything up to the committed head.
* lmdb errors are converted here, where this module opens its transactions (as store.py does for its own).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from authz_ledger.errors import (
    InvalidRequestError,
    LedgerCorruptError,
    NotFoundError,
    OutOfRangeError,
    ProofError,
)
from authz_ledger.ledger.store import Head, Store, from_u64, u64
from authz_ledger.readside.values import (
    NO_FILTER,
    ConsistencyProof,
    EntryFilter,
    InclusionProof,
    IssuedReceipt,
    SignedCheckpoint,
    StoredEntry,
    WaitForSize,
    check_checkpoint_root,
    parse_stored_checkpoint,
)
from authz_ledger.record import entry
from authz_ledger.tlog import proof, receipt, tree

CHUNK = 256
"""Entries read per read transaction: large enough to amortise the transaction, small enough to be brief."""
LISTED_MAX = 1 << 16
"""At most this many entries found by the time index are read one by one (a bounded list of seqs); beyond it
the reader scans the span of seqs that holds them all, filtering as it goes."""


class LedgerReader:
    """Read-only view of one Store; safe from any number of threads, next to the writer or in another process."""

    def __init__(self, store: Store, *, chunk: int = CHUNK, listed_max: int = LISTED_MAX) -> None:
        self.store = store
        self.chunk = chunk
        self.listed_max = listed_max

    def _txn(self) -> AbstractContextManager[Any]:
        return self.store.read_txn()

    def head(self) -> Head:
        with self._txn() as txn:
            return self.store.head(txn)

    def size(self) -> int:
        """The committed tree size (entries 0 .. size-1 exist)."""
        return self.head().size

    # --- entries ---

    def get_entry(self, *, index: int | None = None, decision_id: str | None = None) -> StoredEntry:
        """One entry by sequence number or by decision id (exactly one of them)."""
        if (index is None) == (decision_id is None):
            raise InvalidRequestError("give exactly one of an index or a decision id")
        with self._txn() as txn:
            if decision_id is not None:
                index = self._seq_of(txn, decision_id)
            assert index is not None
            if index < 0:
                raise InvalidRequestError(f"index must be non-negative, got {index}")
            raw = txn.get(u64(index), db=self.store.entries)
            if raw is None:
                size = self.store.head(txn).size
                raise NotFoundError(f"no entry {index}: the ledger holds {size} entries (0 .. {size - 1})")
            data = bytes(raw)
        found = StoredEntry(index, data, entry.decode(data, index))
        if decision_id is not None:
            check_decision_id(found, decision_id)
        return found

    def _seq_of(self, txn: Any, decision_id: str) -> int:
        try:
            key = uuid.UUID(decision_id).bytes
        except ValueError:
            raise InvalidRequestError(f"decision id {decision_id!r} is not a UUID") from None
        seq = txn.get(key, db=self.store.ids)
        if seq is None:
            raise NotFoundError(f"no decision with id {decision_id} in the ledger")
        return from_u64(seq)

    def index_of(self, decision_id: str) -> int:
        """The sequence number of a decision; NotFoundError if it was never recorded."""
        return self.get_entry(decision_id=decision_id).index

    def list_entries(
        self,
        start: int = 0,
        end: int | None = None,
        limit: int | None = None,
        filter: EntryFilter = NO_FILTER,
        *,
        is_active: Callable[[], bool] | None = None,
    ) -> Iterator[StoredEntry]:
        """Entries ``start <= index < end`` (end None: the size now) that match ``filter``, at most ``limit``.

        Arguments are checked now, before anything is read; entries are then read lazily, ``chunk`` per read
        transaction, so any range streams in constant memory. ``is_active`` is polled once per chunk so a
        cancelled caller stops a long filtered scan promptly.
        """
        if start < 0:
            raise InvalidRequestError(f"start index must be non-negative, got {start}")
        if end is not None and end < 0:
            raise InvalidRequestError(f"end index must be non-negative, got {end}")
        if end is not None and end < start:
            raise InvalidRequestError(f"end index {end} is before start index {start}")
        if limit is not None and limit < 0:
            raise InvalidRequestError(f"limit must be non-negative, got {limit}")
        filter.validate()
        size = self.size()
        if start > size:
            raise OutOfRangeError(f"start index {start} is beyond the ledger's {size} entries")
        if end is not None and end > size:
            raise OutOfRangeError(f"end index {end} is beyond the ledger's {size} entries")
        return self._scan(start, size if end is None else end, limit, filter, is_active)

    def _scan(
        self,
        start: int,
        end: int,
        limit: int | None,
        flt: EntryFilter,
        is_active: Callable[[], bool] | None,
    ) -> Iterator[StoredEntry]:
        sent = 0
        match_all = flt.is_empty
        if limit == 0:
            return
        for chunk in self._chunks(start, end, flt, is_active or (lambda: True)):
            for index, data in chunk:
                msg = entry.decode(data, index)
                if match_all or flt.matches(msg):
                    yield StoredEntry(index, data, msg)
                    sent += 1
                    if limit is not None and sent >= limit:
                        return

    def _chunks(
        self, start: int, end: int, flt: EntryFilter, is_active: Callable[[], bool]
    ) -> Iterator[list[tuple[int, bytes]]]:
        """The entries of [start, end) that may match ``flt``, in seq order, one short transaction per chunk;
        ``is_active`` is polled before each read.

        With a time bound the time index names the candidates (store.seqs_in_time_range): the entries whose
        time is in range, read by seq, or, when they are many, the span of seqs holding them all. The caller
        applies the whole filter to each entry, so the answer is the scan's: same entries, same order. Without
        a usable index (a ledger opened read-only before it was built, a range it does not cover yet, or one
        too short to be worth it), every entry of the range is read.
        """
        if (flt.since_unix_nano or flt.until_unix_nano) and end - start > self.chunk:
            found = self.store.seqs_in_time_range(
                flt.since_unix_nano,
                flt.until_unix_nano,
                start,
                end,
                max_keys=end - start,
                max_listed=self.listed_max,
                begin=self._txn,
            )
            if found is not None and found.seqs is not None:
                for i in range(0, len(found.seqs), self.chunk):
                    if not is_active():
                        return
                    yield self._read_listed(found.seqs[i : i + self.chunk])
                return
            if found is not None:
                if found.empty:
                    return
                start, end = found.first, found.last + 1
        pos = start
        while pos < end:
            if not is_active():
                return
            chunk = self._read_chunk(pos, min(end, pos + self.chunk))
            yield chunk
            pos += len(chunk)

    def _read_listed(self, seqs: Sequence[int]) -> list[tuple[int, bytes]]:
        """The entries ``seqs`` in one short transaction, copied out; they must all exist."""
        out: list[tuple[int, bytes]] = []
        with self._txn() as txn:
            for seq in seqs:
                raw = txn.get(u64(seq), db=self.store.entries)
                if raw is None:
                    raise LedgerCorruptError(f"entry {seq} is missing below the committed head", seq)
                out.append((seq, bytes(raw)))
        return out

    def _read_chunk(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Entries [start, stop) in one short transaction, copied out; they must all exist (no gaps)."""
        out: list[tuple[int, bytes]] = []
        with self._txn() as txn:
            cur = txn.cursor(db=self.store.entries)
            if cur.set_key(u64(start)):
                for k, v in cur:
                    seq = from_u64(k)
                    if seq >= stop:
                        break
                    if seq != start + len(out):
                        break
                    out.append((seq, bytes(v)))
        if len(out) != stop - start:
            missing = start + len(out)
            raise LedgerCorruptError(f"entry {missing} is missing below the committed head", missing)
        return out

    def follow(
        self,
        start: int | None,
        filter: EntryFilter,
        wait: WaitForSize,
        is_active: Callable[[], bool],
        *,
        poll_seconds: float = 0.25,
        position: list[int] | None = None,
    ) -> Iterator[StoredEntry]:
        """Entries from ``start`` (None: from the current end) that match ``filter``, then every new one.

        Waits with ``wait`` (the writer's commit notification, or :func:`poll_store`) between commits and ends
        when ``is_active()`` turns false, checked at least every ``poll_seconds``. ``position``: see _follow.
        """
        filter.validate()
        size = self.size()
        if start is None:
            start = size
        if start < 0:
            raise InvalidRequestError(f"start index must be non-negative, got {start}")
        if start > size:
            raise OutOfRangeError(f"start index {start} is beyond the ledger's {size} entries")
        return self._follow(start, filter, wait, is_active, poll_seconds, position)

    def _follow(
        self,
        pos: int,
        flt: EntryFilter,
        wait: WaitForSize,
        is_active: Callable[[], bool],
        poll_seconds: float,
        position: list[int] | None,
    ) -> Iterator[StoredEntry]:
        """``position``, if given, holds the first index not yet scanned whenever the loop checks in."""
        while is_active():
            if position is not None:
                position[:] = [pos]
            size = self.size()
            if pos < size:
                yield from self._scan(pos, size, None, flt, is_active)
                if not is_active():
                    break  # the scan may have stopped short: only a completed one moves the position
                pos = size
                continue
            wait(pos, poll_seconds)
        if position is not None:
            position[:] = [pos]

    # --- checkpoints ---

    def checkpoint(self, size: int | None = None, *, cosigned: bool = False) -> SignedCheckpoint:
        """The checkpoint published at ``size``, or the latest one (None).

        With ``cosigned``, the form carrying witness cosignatures when one is stored: at ``size``, or, for
        the latest, the largest witnessed checkpoint (witnesses lag the log by up to one submission).
        Otherwise the plain checkpoint, whose signature lines show what it carries.
        """
        if size is not None and size < 0:
            raise InvalidRequestError(f"tree size must be non-negative, got {size}")
        with self._txn() as txn:
            found = None
            if cosigned:
                found = _checkpoint_in(txn, self.store.cosigned, size)
            if found is None:
                found = _checkpoint_in(txn, self.store.checkpoints, size)
        if found is None:
            if size is None:
                raise NotFoundError("no checkpoint has been published yet")
            raise NotFoundError(f"no checkpoint was published at tree size {size}")
        return parse_stored_checkpoint(*found)

    def checkpoint_covering(self, size: int) -> SignedCheckpoint:
        """The first checkpoint published at a tree size of at least ``size`` (the one that first committed
        entry ``size - 1``), in its cosigned form when witnesses cosigned it. OutOfRangeError if none yet."""
        with self._txn() as txn:
            cur = txn.cursor(db=self.store.checkpoints)
            found = (from_u64(cur.key()), bytes(cur.value())) if cur.set_range(u64(size)) else None
            if found is not None:
                found = _checkpoint_in(txn, self.store.cosigned, found[0]) or found
        if found is None:
            raise OutOfRangeError(
                f"entries up to {size - 1} are not covered by a signed checkpoint yet; ask again after the next one"
            )
        return parse_stored_checkpoint(*found)

    def _latest_checkpoint_size(self) -> int:
        with self._txn() as txn:
            found = _checkpoint_in(txn, self.store.checkpoints, None)
        if found is None:
            raise NotFoundError("no checkpoint has been published yet, and no tree size was given")
        return found[0]

    # --- proofs ---

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """PATH(index, D[tree_size]) (RFC 9162 §2.1.3.1); tree_size None = the latest checkpoint's size."""
        if index < 0:
            raise ProofError(f"leaf index must be non-negative, got {index}")
        if tree_size is None:
            tree_size = self._latest_checkpoint_size()
            if index >= tree_size:
                raise OutOfRangeError(
                    f"entry {index} is not covered by the latest checkpoint (tree size {tree_size}) yet"
                )
        elif tree_size < 0:
            raise ProofError(f"tree size must be non-negative, got {tree_size}")
        elif index >= tree_size:
            raise ProofError(f"leaf index {index} is not in a tree of {tree_size} leaves")
        with self._txn() as txn:
            head_size = self.store.head(txn).size
            if tree_size > head_size:
                raise OutOfRangeError(f"tree size {tree_size} is beyond the ledger's {head_size} entries")
            read = functools.partial(self.store.read_hashes, txn=txn)
            hashes = proof.inclusion_proof(index, tree_size, read)
            root = tree.tree_hash(tree_size, read)
            stored_leaf = read([tree.stored_hash_index(0, index)])[0]
            raw = txn.get(u64(index), db=self.store.entries)
            if raw is None:
                raise LedgerCorruptError(f"entry {index} is missing below the committed head", index)
            data = bytes(raw)
            published = txn.get(u64(tree_size), db=self.store.checkpoints)
            signed = None if published is None else bytes(published)
        leaf = tree.leaf_hash(data)
        if leaf != stored_leaf:
            raise LedgerCorruptError(f"entry {index} does not hash to its stored leaf hash", index)
        _verified_inclusion(index, tree_size, leaf, hashes, root)
        if signed is not None:
            check_checkpoint_root(parse_stored_checkpoint(tree_size, signed), root)
        return InclusionProof(index, tree_size, data, leaf, root, tuple(hashes), signed)

    def consistency_proof(self, size1: int, size2: int | None = None) -> ConsistencyProof:
        """PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1); size2 None = the latest checkpoint's size.

        size1 == 0 gives the empty proof and the empty tree's root: every tree extends the empty tree, which
        is what C2SP tlog-witness sends for an old size of 0.
        """
        if size1 < 0:
            raise ProofError(f"tree size must be non-negative, got size1={size1}")
        if size2 is None:
            size2 = self._latest_checkpoint_size()
            if size1 > size2:
                raise OutOfRangeError(f"size1 {size1} is beyond the latest checkpoint's tree size {size2}")
        elif size2 < 0:
            raise ProofError(f"tree size must be non-negative, got size2={size2}")
        elif size1 > size2:
            raise ProofError(f"size1 {size1} is larger than size2 {size2}: a log only grows")
        with self._txn() as txn:
            head_size = self.store.head(txn).size
            if size2 > head_size:
                raise OutOfRangeError(f"tree size {size2} is beyond the ledger's {head_size} entries")
            read = functools.partial(self.store.read_hashes, txn=txn)
            hashes = proof.consistency_proof(size1, size2, read)
            root1 = tree.tree_hash(size1, read)
            root2 = tree.tree_hash(size2, read)
        if 0 < size1 < size2:
            try:
                proof.verify_consistency(size1, size2, root1, root2, hashes)
            except ProofError as e:
                raise LedgerCorruptError(f"stored tree hashes give a bad consistency proof: {e}") from e
        return ConsistencyProof(size1, root1, size2, root2, tuple(hashes))

    # --- receipts ---

    def receipt(self, *, index: int | None = None, decision_id: str | None = None) -> IssuedReceipt:
        """A C2SP tlog-proof receipt for one entry, against the best checkpoint covering it.

        That is the largest witness-cosigned checkpoint covering the entry if there is one, else the latest
        checkpoint. OutOfRangeError while no checkpoint covers the entry yet (the next one will).
        """
        found = self.get_entry(index=index, decision_id=decision_id)
        with self._txn() as txn:
            signed = _checkpoint_in(txn, self.store.cosigned, None)
            if signed is None or signed[0] <= found.index:
                signed = _checkpoint_in(txn, self.store.checkpoints, None)
        if signed is None or signed[0] <= found.index:
            latest = "none yet" if signed is None else f"tree size {signed[0]}"
            raise OutOfRangeError(
                f"entry {found.index} is not covered by a signed checkpoint yet (latest: {latest}); "
                "ask again after the next checkpoint"
            )
        cp = parse_stored_checkpoint(*signed)
        proof = self.inclusion_proof(found.index, cp.size)
        check_checkpoint_root(cp, proof.root)
        text = receipt.build_receipt(found.index, proof.hashes, cp.note)
        return IssuedReceipt(text, found, cp)


# --- Helpers ----------------------------------------------------------------------------------------------


def poll_store(reader: LedgerReader, interval: float = 0.1) -> WaitForSize:
    """A :data:`WaitForSize` for readers without the writer's notification (another process): poll the head."""

    def wait(size: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            now = reader.size()
            remaining = deadline - time.monotonic()
            if now > size or remaining <= 0:
                return now
            time.sleep(min(interval, remaining))

    return wait


def _checkpoint_in(txn: Any, db: Any, size: int | None) -> tuple[int, bytes] | None:
    if size is not None:
        v = txn.get(u64(size), db=db)
        return None if v is None else (size, bytes(v))
    cur = txn.cursor(db=db)
    if not cur.last():
        return None
    return from_u64(cur.key()), bytes(cur.value())


def _verified_inclusion(index: int, size: int, leaf: bytes, hashes: Sequence[bytes], root: bytes) -> None:
    try:
        proof.verify_inclusion(index, size, leaf, hashes, root)
    except ProofError as e:
        raise LedgerCorruptError(f"stored tree hashes give a bad inclusion proof for entry {index}: {e}", index) from e


def check_decision_id(found: StoredEntry, decision_id: str) -> None:
    """The decision-id index is a lookup aid, not evidence: the entry it leads to must record that decision, or
    the answer would be another decision's (fail closed: an error, never a wrong entry)."""
    asked = str(uuid.UUID(decision_id))
    if found.message.decision_id != asked:
        raise LedgerCorruptError(
            f"the decision-id index leads decision {asked} to entry {found.index}, which records decision "
            f"{found.message.decision_id or '(none)'}: the index was altered (run authz-ledger verify)",
            found.index,
        )
