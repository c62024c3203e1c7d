"""Offline verification of a whole ledger (or of everything after the last checkpoint, at start-up).

One sweep over the entries in sequence order recomputes, from the stored bytes alone:

1. every leaf hash (RFC 6962 §2.1: SHA-256(0x00 || entry bytes)) and every stored tree hash (sumdb tlog layout),
   compared with what is stored;
2. the hash chain: each batch record links to the previous record's hash, starts where the previous one ended,
   commits to its leaves (``leaves_digest``) and to the tree root at its end -- so every chained batch is proved
   to be in the tree, and the chain and the tree cannot disagree;
3. every stored checkpoint: a valid signature by a trusted key, origin, and a root equal to the recomputed tree
   hash at its size;
4. the head (size, root, last batch hash) and that nothing lies beyond it.

The first failure stops the sweep and names the first bad sequence number.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz_ledger.errors import LedgerCorruptError, NoteError
from authz_ledger.ledger.store import BatchRecord, Head, Store, from_u64, leaves_digest, u64
from authz_ledger.tlog import checkpoint, note, tree

Progress = Callable[[int, int], None]
"""Called now and then with (entries verified, total)."""


@dataclass
class VerifyReport:
    size: int = 0
    root: bytes = tree.EMPTY_ROOT
    entries: int = 0
    batches: int = 0
    checkpoints: int = 0
    start: int = 0
    latest_checkpoint: int | None = None
    checked_checkpoint_sizes: list[int] = field(default_factory=list)


class _Snapshot:
    """Every read of one verification from ONE read transaction: the writer may commit meanwhile (``verify`` is
    safe while the server runs), and head, checkpoints, batch records, entries and hashes must agree."""

    def __init__(self, store: Store, txn: Any) -> None:
        self.store = store
        self.txn = txn

    def head(self) -> Head:
        return self.store.head(self.txn)

    def checkpoints(self) -> Iterator[tuple[int, bytes]]:
        for k, v in self.txn.cursor(self.store.checkpoints):
            yield from_u64(k), bytes(v)

    def latest_checkpoint_size(self) -> int | None:
        cur = self.txn.cursor(self.store.checkpoints)
        return from_u64(cur.key()) if cur.last() else None

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        return self.store.read_hashes(indexes, self.txn)

    def batches(self, start: int) -> Iterator[tuple[BatchRecord, bytes]]:
        cur = self.txn.cursor(self.store.batches)
        if not cur.set_range(u64(start)):
            return
        for _, v in cur:
            raw = bytes(v)
            yield BatchRecord.decode(raw), raw

    def batch_record(self, number: int) -> bytes:
        return self.store.batch_record(number, self.txn)

    def batch_covering(self, seq: int) -> int:
        return self.store.batch_covering(seq, self.txn)


def _open_checkpoints(
    snap: _Snapshot, verifiers: Sequence[note.Verifier], origin: str | None, start: int
) -> dict[int, bytes]:
    """Signature-check every stored checkpoint of size >= start; return size -> root."""
    roots: dict[int, bytes] = {}
    for size, signed in snap.checkpoints():
        if size < start:
            continue
        try:
            cp, _ = checkpoint.open_checkpoint(signed, verifiers, origin=origin)
        except NoteError as e:
            raise LedgerCorruptError(
                f"checkpoint for size {size} does not verify: {e} (a checkpoint signed by a retired key verifies "
                "once its vkey is trusted: verify --vkey OLD, serve --verifier-key OLD)",
                _last_seq(size),
            ) from e
        if cp.size != size:
            raise LedgerCorruptError(
                f"checkpoint stored under size {size} says size {cp.size}", _last_seq(min(size, cp.size))
            )
        roots[size] = cp.root
    return roots


def _last_seq(size: int) -> int | None:
    return size - 1 if size > 0 else None


def verify_store(
    store: Store,
    verifiers: Sequence[note.Verifier],
    *,
    origin: str | None = None,
    from_latest_checkpoint: bool = False,
    check_ids: bool = True,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify ``store``; raise LedgerCorruptError naming the first bad sequence number.

    ``check_ids``: also check the decision-id index against every verified entry (and, after a full sweep,
    that it holds no other rows).
    """
    with store.env.begin(buffers=True) as txn:
        return _verify(_Snapshot(store, txn), verifiers, origin, from_latest_checkpoint, check_ids, progress)


def _verify(
    snap: _Snapshot,
    verifiers: Sequence[note.Verifier],
    origin: str | None,
    from_latest_checkpoint: bool,
    check_ids: bool,
    progress: Progress | None,
) -> VerifyReport:
    store, txn = snap.store, snap.txn
    head = snap.head()
    report = VerifyReport()
    start = 0
    frontier = tree.Frontier()
    batch_no = 0
    prev_batch_hash = b"\x00" * 32
    latest = snap.latest_checkpoint_size()
    if latest is not None:
        report.latest_checkpoint = latest
        if latest > head.size:
            raise LedgerCorruptError(
                f"a checkpoint for size {latest} exists but the ledger holds only {head.size} entries "
                "(entries were removed)",
                head.size,
            )
    if from_latest_checkpoint and latest is not None and latest > 0:
        start = latest
        frontier = tree.Frontier.from_stored(start, snap.read_hashes)
        batch_no = snap.batch_covering(start - 1) + 1
        prev_batch_hash = BatchRecord.hash_of(snap.batch_record(batch_no - 1))
    report.start = start
    checkpoint_roots = _open_checkpoints(snap, verifiers, origin, start)
    report.checkpoints = len(checkpoint_roots)
    if start in checkpoint_roots and frontier.root() != checkpoint_roots[start]:
        raise LedgerCorruptError(
            f"stored tree hashes at size {start} disagree with the signed checkpoint", _last_seq(start)
        )

    sha256 = hashlib.sha256
    size = start
    total = head.size
    hash_index = tree.stored_hash_count(start)
    # The decision-id index (decision id -> sequence number) is checked in the same sweep: a row pointing at
    # another entry would make `show --decision-id` and `receipt` answer with the wrong decision.
    ids = store.ids if check_ids else None
    ids_get = functools.partial(txn.get, db=store.ids)
    batch_leaves: list[bytes] = []
    batches = snap.batches(batch_no)
    record, raw = _next_batch(batches)
    pack = struct.Struct(">Q").pack  # store.u64 without the call overhead, in the per-entry loop
    batch_end = record.first_seq + record.count if record is not None else -1
    # Everything below reads the same snapshot (the transaction opened in verify_store).
    entries = txn.cursor(store.entries)
    hashes = txn.cursor(store.hashes)
    positioned = entries.set_range(u64(start))
    first_hash_index = hash_index
    hashes_positioned = hashes.set_range(u64(hash_index))
    if hashes_positioned and hashes.key() != u64(hash_index):
        raise LedgerCorruptError(f"stored tree hash {hash_index} is missing", start)
    # Values only: keys are unique and sorted, so the first key (checked above) and the last key (checked
    # after the loop) prove the run of stored hashes has no gap without decoding every key.
    stored_hashes = hashes.iternext(keys=False, values=True) if hashes_positioned else iter(())
    for key, value in entries if positioned else ():
        if key != pack(size):
            seq = from_u64(key)
            raise LedgerCorruptError(f"entry {size} is missing (next stored entry is {seq})", size)
        seq = size
        if seq >= total:
            raise LedgerCorruptError(f"entry {seq} lies beyond the committed head (size {total})", seq)
        leaf = sha256(b"\x00" + value).digest()
        for level, computed in enumerate(frontier.append(leaf)):
            stored = next(stored_hashes, None)
            if stored is None or stored != computed:
                raise _tree_mismatch(seq, level, hash_index)
            hash_index += 1
        if ids is not None:
            decision_key = _decision_key(value)
            if not decision_key or ids_get(decision_key) != key:
                raise _index_mismatch(snap, seq, value)
        batch_leaves.append(leaf)
        size += 1
        if size >= batch_end:
            if record is None or size > batch_end:
                raise LedgerCorruptError(f"entry {seq} is not covered by the batch chain", seq)
            _check_batch(record, raw, batch_no, prev_batch_hash, batch_leaves, frontier)
            prev_batch_hash = BatchRecord.hash_of(raw)
            batch_no += 1
            batch_leaves = []
            record, raw = _next_batch(batches)
            batch_end = record.first_seq + record.count if record is not None else -1
            report.batches += 1
        if size in checkpoint_roots:
            if frontier.root() != checkpoint_roots[size]:
                # Everything stored agrees with itself (entries, hashes and chain were all rewritten): only the
                # signature holds, and it vouches for the tree since the previous verified checkpoint.
                since = report.checked_checkpoint_sizes[-1] if report.checked_checkpoint_sizes else start
                raise LedgerCorruptError(
                    f"signed checkpoint for size {size} disagrees with the recomputed tree", since, last_seq=size - 1
                )
            report.checked_checkpoint_sizes.append(size)
        if progress is not None and size & 0xFFFF == 0:
            progress(size - start, total - start)
    if size < total:
        raise LedgerCorruptError(f"entry {size} is missing: the head says {total} entries", size)
    if ids is not None and txn.stat(ids)["entries"] != size:
        raise _extra_index_rows(snap, size)
    if hash_index > first_hash_index and hashes.key() != u64(hash_index - 1):
        raise LedgerCorruptError("the stored tree hashes have a gap", _last_seq(size))
    if next(stored_hashes, None) is not None:
        raise LedgerCorruptError("stored tree hashes extend beyond the head", _last_seq(size))
    if batch_leaves or record is not None:
        first = record.first_seq if record is not None else size - len(batch_leaves)
        raise LedgerCorruptError("the batch chain does not end at the head", first)
    if frontier.root() != head.root or prev_batch_hash != head.last_batch_hash or batch_no != head.batches:
        raise LedgerCorruptError("the head does not match the recomputed tree and chain", _last_seq(size))
    missing_cps = [s for s in checkpoint_roots if s > size]
    if missing_cps:
        raise LedgerCorruptError(f"checkpoint for size {max(missing_cps)} covers missing entries", size)
    if progress is not None:
        progress(size - start, total - start)
    report.size = size
    report.root = frontier.root()
    report.entries = size - start
    return report


def _next_batch(batches: Iterator[tuple[BatchRecord, bytes]]) -> tuple[BatchRecord | None, bytes]:
    try:
        record, raw = next(batches)
    except StopIteration:
        return None, b""
    return record, raw


def _check_batch(
    record: BatchRecord,
    raw: bytes,
    number: int,
    prev_hash: bytes,
    leaves: list[bytes],
    frontier: tree.Frontier,
) -> None:
    first = record.first_seq
    if record.number != number or record.prev_hash != prev_hash:
        raise LedgerCorruptError(f"batch {number} does not chain to batch {number - 1}", first)
    if record.count != len(leaves) or record.tree_size != frontier.size:
        raise LedgerCorruptError(f"batch {number} covers the wrong entries", first)
    # Every entry already matched its stored leaf hash and every complete subtree its stored hash: the entry
    # that changed (with its leaf hash) is somewhere in the batch, which is all this record can say.
    last = first + len(leaves) - 1
    if record.leaves_digest != leaves_digest(leaves):
        raise LedgerCorruptError(f"batch {number} does not commit to its entries", first, last_seq=last)
    if record.tree_root != frontier.root():
        raise LedgerCorruptError(f"batch {number} names a tree root that is not the tree's", first, last_seq=last)


def _tree_mismatch(seq: int, level: int, hash_index: int) -> LedgerCorruptError:
    """The stored hash at ``level`` over the subtree ending at ``seq`` is not the one its entries give.

    At level 0 the entry's own bytes disagree with its stored leaf hash: ``seq`` is exact. Higher up, every stored
    hash below already matched, so the entry and its leaf hash were rewritten together; the subtree's stored
    hash still commits to the original (RFC 6962 §2.1), but one hash over two children cannot say which child
    changed: the bad entry is one of the subtree's.
    """
    first = (seq >> level) << level
    if level == 0:
        return LedgerCorruptError(
            f"entry {seq} does not match the stored tree (its leaf hash, hash index {hash_index})", seq
        )
    return LedgerCorruptError(
        f"entries {first}..{seq} do not match the stored tree hash over them (hash index {hash_index}, level "
        f"{level}): an entry and its leaf hash were rewritten together",
        first,
        last_seq=seq,
    )


def _decision_key(entry: bytes | memoryview) -> bytes:
    """The decision-id index key of an entry: its ``decision_id`` (field 4, a UUID string) as 16 bytes.

    A hand-rolled walk over the first fields (sequence, schema, time: one-byte tags) instead of a full protobuf
    decode: the verifier reads every entry, and this is the only field it needs. b"" when it cannot be found.
    """
    data = bytes(entry[:96])
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            pos += 1
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length = data[pos]
                pos += 1
                if field == 4 and length == 36:
                    return bytes.fromhex(data[pos : pos + 36].replace(b"-", b"").decode("ascii"))
                pos += length
            elif wire == 5:
                pos += 4
            else:
                return b""
            if field >= 4:
                return b""
    except (IndexError, ValueError):
        return b""
    return b""


def _index_mismatch(snap: _Snapshot, seq: int, entry: bytes | memoryview) -> LedgerCorruptError:
    key = _decision_key(entry)
    row = snap.txn.get(key, db=snap.store.ids) if key else None
    if not key:
        what = "has no decision id the index can be checked against"
    elif row is None:
        what = "is missing from the decision-id index"
    else:
        what = f"is indexed as entry {from_u64(row)} (the index row was changed)"
    return LedgerCorruptError(f"entry {seq}'s decision id {what}", seq)


def _extra_index_rows(snap: _Snapshot, size: int) -> LedgerCorruptError:
    """Every entry's row was right, so the index holds more rows than entries: name the entry an extra row
    points at (or the first missing one, for a row beyond the head)."""
    for key, value in snap.txn.cursor(snap.store.ids):
        seq = from_u64(value)
        entry = snap.txn.get(u64(seq), db=snap.store.entries) if seq < size else None
        if entry is None:
            return LedgerCorruptError(f"the decision-id index has a row for entry {seq}, beyond the head", size)
        if _decision_key(entry) != bytes(key):
            return LedgerCorruptError(
                f"the decision-id index has an extra row pointing at entry {seq} for another decision id", seq
            )
    return LedgerCorruptError("the decision-id index holds more rows than the ledger has entries", None)
