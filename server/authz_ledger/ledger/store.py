"""The LMDB layout of one ledger, and nothing else.

One LMDB environment (a directory) holds named databases::

    entries      seq (u64 BE)                -> entry bytes, exactly as hashed (RFC 6962 leaf input)
    hashes       stored hash index (u64 BE)  -> 32-byte hash, golang.org/x/mod/sumdb/tlog layout (see tree.py):
                                                every complete subtree's hash, so any proof is O(log n) reads
    batches      batch number (u64 BE)       -> batch record (see BatchRecord): the hash chain
    checkpoints  tree size (u64 BE)          -> signed checkpoint note, every one ever published
    cosigned     tree size (u64 BE)          -> the same checkpoint with witness cosignatures added
    ids          decision id (16-byte UUID)  -> seq (u64 BE)
    times        time (u64 BE) || seq        -> b"": entries by decision time (time_index.py)
    meta         b"head"                     -> Head: tree size, root, last batch number and hash
                 b"time_index_size"          -> u64 BE: entries 0..n-1 have their ``times`` key

Invariants (checked by ``verify``): keys of entries are 0..size-1 without gaps; ``hashes`` holds exactly
``stored_hash_count(size)`` hashes; batch records chain by hash and cover 0..size-1 contiguously; every
checkpoint's root equals the tree hash at its size. All writes for one batch happen in ONE write transaction,
so a crash leaves either the whole batch or none of it.

LMDB readers never block the writer, so the CLI and audit readers may open the same directory while the server
runs (``readonly=True``). lmdb errors are converted to LedgerError subclasses here, at the boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from authz_ledger.errors import LedgerCorruptError, LedgerError, LedgerMapFullError, LedgerWriteError
from authz_ledger.ledger import integrity, time_index
from authz_ledger.tlog import tree

_U64 = struct.Struct(">Q")
FORMAT_VERSION = b"authz-ledger/1"


def u64(n: int) -> bytes:
    """Big-endian u64 key: byte order equals numeric order, which MDB_APPEND requires."""
    return _U64.pack(n)


def from_u64(b: bytes | memoryview) -> int:
    return int(_U64.unpack(b)[0])


@dataclass(frozen=True, slots=True)
class Head:
    """The committed tree head. Updated in the same transaction as the entries it covers."""

    size: int
    root: bytes
    batches: int
    """Number of batch records; the last one is ``batches - 1``."""
    last_batch_hash: bytes

    _STRUCT = struct.Struct(">Q32sQ32s")

    def encode(self) -> bytes:
        return self._STRUCT.pack(self.size, self.root, self.batches, self.last_batch_hash)

    @classmethod
    def decode(cls, data: bytes) -> Head:
        size, root, batches, last = cls._STRUCT.unpack(data)
        return cls(size, root, batches, last)


EMPTY_HEAD = Head(0, tree.EMPTY_ROOT, 0, b"\x00" * 32)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One link of the hash chain, written with the batch it describes.

    The record commits to its entries twice: through ``leaves_digest`` (SHA-256 over the batch's leaf hashes
    in order) and through ``tree_root`` (the RFC 6962 root of the whole tree after the batch). Verification
    recomputes both, so the chain and the tree cannot disagree -- the failure immudb's "linear-fake" bug showed.
    """

    number: int
    prev_hash: bytes
    first_seq: int
    count: int
    leaves_digest: bytes
    tree_size: int
    tree_root: bytes
    time_unix_nano: int

    _STRUCT = struct.Struct(">BQ32sQI32sQ32sQ")
    VERSION = 1

    def encode(self) -> bytes:
        return self._STRUCT.pack(
            self.VERSION,
            self.number,
            self.prev_hash,
            self.first_seq,
            self.count,
            self.leaves_digest,
            self.tree_size,
            self.tree_root,
            self.time_unix_nano,
        )

    @classmethod
    def decode(cls, data: bytes) -> BatchRecord:
        if len(data) != cls._STRUCT.size or data[0] != cls.VERSION:
            raise LedgerCorruptError(f"batch record has unknown version or length {len(data)}")
        _, number, prev, first, count, digest, size, root, t = cls._STRUCT.unpack(data)
        return cls(number, prev, first, count, digest, size, root, t)

    @staticmethod
    def hash_of(encoded: bytes) -> bytes:
        return hashlib.sha256(encoded).digest()


def leaves_digest(leaf_hashes: Sequence[bytes]) -> bytes:
    return hashlib.sha256(b"".join(leaf_hashes)).digest()


class Store:
    """An open ledger directory. One process may write (``readonly=False``); any number may read."""

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        map_size: int = 1 << 30,
        durable: bool = True,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self._map_size = map_size
        self._durable = durable
        if not readonly:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not (path / "data.mdb").exists():
            raise LedgerError(f"no ledger at {path} (data.mdb missing)")
        if not readonly:
            # The one writer (serve holds serve.lock) walks every page before its first write transaction: LMDB
            # allocates from the free list and reads meta, times and entries while it writes, so damage found
            # only later would already have been built upon.
            integrity.check_before_open(path, full=True)
        self._open()
        self.walked_at_open = not readonly
        """A writable open walked every page (integrity.check_before_open(full=True)) before writing."""
        if not readonly:
            try:
                self._init_format()
                self._backfill_time_index()
            except lmdb.Error as e:
                raise LedgerError(f"cannot prepare the ledger at {self.path}: {e}") from e

    def _open(self) -> None:
        readonly = self.readonly
        # LMDB maps data.mdb and trusts what it finds there: a truncated or overwritten file must be refused here,
        # as an error naming the file, before a read of it becomes SIGBUS / SIGSEGV.
        integrity.check_before_open(self.path)
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=self._map_size,
                max_dbs=16,
                readonly=readonly,
                lock=True,
                # metasync/sync give the fsync at commit that makes an acknowledged decision durable.
                # durable=False exists for benchmarks and tests; the service always opens durably.
                sync=self._durable,
                metasync=self._durable,
                subdir=True,
                max_readers=256,
                create=not readonly,
            )
            self.entries = self.env.open_db(b"entries", create=not readonly)
            self.hashes = self.env.open_db(b"hashes", create=not readonly)
            self.batches = self.env.open_db(b"batches", create=not readonly)
            self.checkpoints = self.env.open_db(b"checkpoints", create=not readonly)
            self.ids = self.env.open_db(b"ids", create=not readonly)
            self.cosigned = self.env.open_db(b"cosigned", create=not readonly)
            self.meta = self.env.open_db(b"meta", create=not readonly)
            self.times = self._open_time_index()
        except lmdb.Error as e:
            raise LedgerError(f"cannot open ledger at {self.path}: {e}") from e

    def reopen(self) -> None:
        """Close and reopen the environment: after a failed write LMDB may mark it fatal (MDB_PANIC) and refuse
        every later transaction although the disk works again. What is on disk is the last committed state, so a
        fresh environment simply continues from it. Readers mid-transaction in this process get an error."""
        with contextlib.suppress(lmdb.Error):  # a closed environment (an earlier reopen failed) has no info
            self._map_size = max(self._map_size, self.map_size())
        with contextlib.suppress(lmdb.Error):
            self.env.close()
        self._open()

    def _init_format(self) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            fmt = txn.get(b"format")
            if fmt is None:
                txn.put(b"format", FORMAT_VERSION)
            elif bytes(fmt) != FORMAT_VERSION:
                raise LedgerError(f"ledger at {self.path} has format {bytes(fmt)!r}, expected {FORMAT_VERSION!r}")

    def _open_time_index(self) -> Any:
        """The ``times`` database; None when a read-only open finds a ledger written before it (readers scan)."""
        try:
            return self.env.open_db(b"times", create=not self.readonly)
        except lmdb.NotFoundError:
            if not self.readonly:
                raise
            return None

    def _backfill_time_index(self) -> None:
        """Index the entries written without the time index (a ledger older than it); see time_index.backfill."""
        time_index.backfill(self.env, self.entries, self.meta, self.times, lambda txn: self.head(txn).size, self.path)

    @contextlib.contextmanager
    def read_txn(self) -> Iterator[Any]:
        """A short read transaction, lmdb errors converted; adopts a map grown by a writer in another process
        (MDB_MAP_RESIZED). Callers never keep one open between calls."""
        try:
            try:
                txn = self.env.begin(buffers=True)
            except lmdb.MapResizedError:
                # The writer doubled the map; LMDB lets a process with no open transaction adopt the new size
                # with mapsize 0.
                self.env.set_mapsize(0)
                txn = self.env.begin(buffers=True)
        except lmdb.Error as e:
            raise LedgerError(f"cannot read the ledger at {self.path}: {e}") from e
        try:
            yield txn
        except lmdb.Error as e:
            raise LedgerError(f"cannot read the ledger at {self.path}: {e}") from e
        finally:
            txn.abort()

    def close(self) -> None:
        self.env.close()

    # --- reads (each opens its own short read transaction) ---

    def head(self, txn: Any = None) -> Head:
        """The committed head, in ``txn`` (a reader's snapshot) or a fresh read txn."""
        if txn is None:
            with self.env.begin(buffers=False) as own:
                return self.head(own)
        raw = txn.get(b"head", db=self.meta)
        return EMPTY_HEAD if raw is None else Head.decode(bytes(raw))

    def entry(self, seq: int) -> bytes | None:
        with self.env.begin(db=self.entries) as txn:
            v = txn.get(u64(seq))
        return None if v is None else bytes(v)

    def seq_of_decision(self, decision_id: bytes) -> int | None:
        with self.env.begin(db=self.ids) as txn:
            v = txn.get(decision_id)
        return None if v is None else from_u64(v)

    def time_index_size(self, txn: Any = None) -> int:
        """How many entries (seq 0 .. n-1) the time index covers: 0 for a ledger opened read-only without it."""
        if txn is None:
            with self.env.begin() as own:
                return self.time_index_size(own)
        return time_index.covered(txn, self.meta, self.times)

    def seqs_in_time_range(
        self,
        since_ns: int,
        until_ns: int,
        start: int = 0,
        stop: int | None = None,
        *,
        max_keys: int | None = None,
        max_listed: int = 1 << 16,
        begin: time_index.Begin | None = None,
    ) -> time_index.TimeRangeSeqs | None:
        """Entries ``start <= seq < stop`` whose time is in ``[since_ns, until_ns)`` (0: unbounded), by the
        time index: their seqs in seq order (at most ``max_listed``), else the span holding them all. None when
        the index cannot answer (see ``time_index.seqs_in_range``): the caller scans. ``begin`` opens each
        short read transaction (default: this store's own)."""
        return time_index.seqs_in_range(
            begin or self.read_txn,
            self.meta,
            self.times,
            lambda txn: self.head(txn).size,
            since_ns,
            until_ns,
            start,
            stop,
            max_keys=max_keys,
            max_listed=max_listed,
        )

    def read_hashes(self, indexes: Sequence[int], txn: Any = None) -> list[bytes]:
        """Stored tree hashes by index (tree.py's ``read_hashes`` callback), in ``txn`` or a fresh read txn."""
        if txn is None:
            with self.env.begin() as own:
                return self.read_hashes(indexes, own)
        out = []
        for i in indexes:
            v = txn.get(u64(i), db=self.hashes)
            if v is None:
                raise LedgerCorruptError(f"stored tree hash {i} is missing")
            out.append(bytes(v))
        return out

    def checkpoint(self, size: int | None = None) -> tuple[int, bytes] | None:
        """The checkpoint at ``size``, or the latest one when size is None."""
        return self._by_size(self.checkpoints, size)

    def _by_size(self, db: Any, size: int | None) -> tuple[int, bytes] | None:
        with self.env.begin(db=db) as txn:
            if size is not None:
                v = txn.get(u64(size))
                return None if v is None else (size, bytes(v))
            cur = txn.cursor()
            if not cur.last():
                return None
            return from_u64(cur.key()), bytes(cur.value())

    def iter_checkpoints(self) -> Iterator[tuple[int, bytes]]:
        with self.env.begin(db=self.checkpoints) as txn:
            for k, v in txn.cursor():
                yield from_u64(k), bytes(v)

    def iter_entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Entries in sequence order within one read transaction (a consistent snapshot)."""
        with self.env.begin(db=self.entries, buffers=True) as txn:
            cur = txn.cursor()
            if not cur.set_range(u64(start)):
                return
            for k, v in cur:
                seq = from_u64(k)
                if stop is not None and seq >= stop:
                    return
                yield seq, bytes(v)

    def iter_batches(self, start: int = 0) -> Iterator[tuple[BatchRecord, bytes]]:
        with self.env.begin(db=self.batches) as txn:
            cur = txn.cursor()
            if not cur.set_range(u64(start)):
                return
            for _, v in cur:
                raw = bytes(v)
                yield BatchRecord.decode(raw), raw

    def batch_record(self, number: int, txn: Any) -> bytes:
        raw = txn.get(u64(number), db=self.batches)
        if raw is None:
            raise LedgerCorruptError(f"batch record {number} is missing")
        return bytes(raw)

    def batch_covering(self, seq: int, txn: Any) -> int:
        """Number of the batch record holding ``seq`` (binary search over batch records) in ``txn``."""
        lo, hi = 0, txn.stat(self.batches)["entries"] - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if BatchRecord.decode(self.batch_record(mid, txn)).first_seq <= seq:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # --- writes ---

    def append_batch(
        self,
        entries: Sequence[bytes],
        leaf_hashes: Sequence[bytes],
        decision_ids: Sequence[bytes],
        new_hashes: Sequence[bytes],
        record: BatchRecord,
        head: Head,
        old_head: Head,
    ) -> None:
        """Commit one batch in ONE write transaction: entries, ids, times, tree hashes, chain link, head."""
        first_hash_index = tree.stored_hash_count(old_head.size)
        try:
            pack = _U64.pack  # the per-entry loops below are the writer's hot path
            seq_keys = [pack(old_head.size + i) for i in range(len(entries))]
            time_keys = time_index.keys_for(entries, old_head.size)
            with self.env.begin(write=True) as txn:
                # The batch extends exactly the head the writer holds, or nothing is written: another writer
                # (a second process on the same directory) must never be overwritten or skipped silently.
                stored = txn.get(b"head", db=self.meta)
                if (stored or EMPTY_HEAD.encode()) != old_head.encode():
                    raise LedgerWriteError("the stored head is not the one this writer extends; refusing to write")
                n_entries, n_hashes = len(entries), len(new_hashes)
                added = txn.cursor(self.entries).putmulti(
                    zip(seq_keys, entries, strict=True), append=True, overwrite=False
                )
                hashes_added = txn.cursor(self.hashes).putmulti(
                    [(pack(first_hash_index + i), h) for i, h in enumerate(new_hashes)],
                    append=True,
                    overwrite=False,
                )
                if added != (n_entries, n_entries) or hashes_added != (n_hashes, n_hashes):
                    raise LedgerWriteError("entries or tree hashes already exist at the appended keys")
                # UUIDv7 ids arrive nearly in order, so these inserts stay at the B-tree's right edge.
                txn.cursor(self.ids).putmulti(zip(decision_ids, seq_keys, strict=True))
                times = txn.cursor(self.times)
                # Decisions arrive nearly in time order: when this batch's keys all follow the stored ones (the
                # usual case), MDB_APPEND writes them at the B-tree's right edge without a search per key.
                at_the_end = not times.last() or bytes(times.key()) < time_keys[0]
                times.putmulti([(k, b"") for k in time_keys], append=at_the_end)
                time_index.extend_covered(txn, self.meta, old_head.size, head.size)
                encoded = record.encode()
                txn.put(u64(record.number), encoded, db=self.batches, append=True)
                txn.put(b"head", head.encode(), db=self.meta)
        except lmdb.MapFullError as e:
            raise LedgerMapFullError(f"LMDB map is full ({self.map_size()} bytes): {e}") from e
        except lmdb.Error as e:
            raise LedgerWriteError(f"ledger write failed: {e}") from e

    def put_checkpoint(self, size: int, note: bytes, *, replace: bool = False) -> None:
        """Store the checkpoint at ``size``; ``replace`` only to add signatures to the same text (key rotation)."""
        try:
            with self.env.begin(write=True, db=self.checkpoints) as txn:
                txn.put(u64(size), note, overwrite=replace)
        except lmdb.Error as e:
            raise LedgerWriteError(f"cannot store checkpoint at size {size}: {e}") from e

    def put_cosigned(self, size: int, note: bytes) -> None:
        """Store (or replace with more cosignatures) the witnessed form of the checkpoint at ``size``."""
        try:
            with self.env.begin(write=True, db=self.cosigned) as txn:
                txn.put(u64(size), note)
        except lmdb.Error as e:
            raise LedgerWriteError(f"cannot store the cosigned checkpoint at size {size}: {e}") from e

    def cosigned_checkpoint(self, size: int | None = None) -> tuple[int, bytes] | None:
        """The cosigned checkpoint at ``size``, or the largest one when size is None."""
        return self._by_size(self.cosigned, size)

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def grow_map(self, new_size: int) -> None:
        """Enlarge the map; LMDB allows it only while this process has no open transaction."""
        try:
            self.env.set_mapsize(new_size)
        except lmdb.Error as e:
            raise LedgerWriteError(f"cannot grow LMDB map to {new_size} bytes: {e}") from e
