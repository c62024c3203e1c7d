"""The console's own index: a separate LMDB environment derived from the ledger, never part of what is verified.

The ledger stays exactly what the writer made (the console only reads it); this index lives in its own directory
(``--index-dir``, by default under ``$XDG_CACHE_HOME/authz-ledger/console/``) and can be deleted at any time:
the console rebuilds it, catching up from entry 0, then follows the ledger as it grows. It only narrows which
entries are read: every row the console shows is re-checked against the entry's own bytes (``facts.matches``),
and every verdict is computed by the browser from the entry bytes, a proof and a signed checkpoint. So a stale,
damaged or hostile index can hide rows; it cannot show a wrong one or make a verdict pass.

Databases::

    postings  field(1) || len(1) || value || block (u32 BE)  -> the block's offsets (postings.py)
    minutes   minute (u32 BE)                                  -> min seq, max seq, allow, deny, error, other
    denied    kind(1) || bucket (u32 BE) || value             -> denials in that bucket (u32); kinds: p / u a path
              pattern / principal per hour, P / U the same per day (long ranges read 24 times fewer keys)
    versions  seq (u64 BE)                                     -> time (u64 BE) || policy version (first seq of each)
    meta      covered -> u64 (entries 0 .. covered-1 indexed); ledger -> entry 0's leaf hash (which ledger)
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import struct
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from authz_ledger.config import DEFAULT_USER_HEADERS
from authz_ledger.console import postings
from authz_ledger.console.facts import Facts, facts_of
from authz_ledger.errors import LedgerError
from authz_ledger.ledger.store import Store, from_u64, u64
from authz_ledger.tlog import tree

log = logging.getLogger(__name__)

MAX_VALUE = 200
"""Bytes of a value kept in a term; longer values share a term (a superset: rows are re-checked exactly)."""
PATH_DEPTH = 6
"""Path prefixes indexed: /a, /a/b, ... up to this many segments."""
BATCH = 8192
"""Entries indexed per write transaction."""
_MINUTE = struct.Struct(">I")
_MINUTE_VALUE = struct.Struct("<QQIIII")
_COUNT = struct.Struct("<I")
_HOUR = 3_600_000_000_000
_DAY = 24 * _HOUR
_ID_SEGMENT = re.compile(r"\d+|[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
OUTCOME_SLOTS = {"allow": 0, "deny": 1, "error": 2}


def term(field: str, value: str) -> bytes:
    """The key prefix of a term's blocks: ``field`` is one letter (see module docstring)."""
    v = value.encode("utf-8", "surrogateescape")[:MAX_VALUE]
    return field.encode("ascii") + bytes((len(v),)) + v


def path_pattern(path: str) -> str:
    """The path with id-like segments (numbers, long hex, UUIDs) as ``*``: /orders/7 and /orders/8 are both
    /orders/*, so "most denied paths" ranks routes, not the one-off ids in them."""
    return "/".join("*" if _ID_SEGMENT.fullmatch(s) else s for s in path.split("/"))


def path_prefixes(path: str) -> list[str]:
    """/a/b/c -> ['/a', '/a/b', '/a/b/c'] (at most PATH_DEPTH)."""
    segments = [s for s in path.split("/") if s][:PATH_DEPTH]
    return ["/" + "/".join(segments[: i + 1]) for i in range(len(segments))]


def terms_of(f: Facts, indexed_headers: Sequence[str]) -> list[bytes]:
    """Every term an entry is found by (the query side asks for the same ones: search.plan)."""
    if f.message is None:
        return [term("o", f.outcome)]
    out = [term("o", f.outcome), term("m", f.method), term("h", f.host), term("s", str(f.status))]
    if f.principal:
        out.append(term("u", f.principal))
    if f.version:
        out.append(term("v", f.version))
    out.extend(term("p", p) for p in path_prefixes(f.path))
    out.extend(term("w", w) for w in f.words)
    out.extend(term("e", f"{name}={f.headers[name]}") for name in indexed_headers if name in f.headers)
    return out


def _add_minute(stored: bytes | None, new: list[int]) -> list[int]:
    """A minute's record with a batch's entries added: seq bounds widened, counts summed."""
    if stored is None:
        return new
    o = _MINUTE_VALUE.unpack(stored)
    return [min(o[0], new[0]), max(o[1], new[1]), *(a + b for a, b in zip(o[2:], new[2:], strict=True))]


@dataclass(frozen=True)
class MinuteStats:
    minute: int
    min_seq: int
    max_seq: int
    allow: int
    deny: int
    error: int
    other: int


class ConsoleIndex:
    """Open (or create) the index for one ledger; :meth:`catch_up` indexes what the ledger gained since."""

    def __init__(
        self,
        path: Path,
        store: Store,
        *,
        user_headers: Sequence[str] = DEFAULT_USER_HEADERS,
        indexed_headers: Sequence[str] = (),
        map_size: int = 1 << 30,
    ) -> None:
        self.path = path
        self.store = store
        self.user_headers = tuple(h.lower() for h in user_headers)
        self.indexed_headers = tuple(dict.fromkeys(h.lower() for h in (*self.user_headers, *indexed_headers)))
        self._map_size = map_size
        self._open()
        if not self._same_ledger():
            log.warning("console index at %s belongs to another ledger (or an older one): rebuilding", path)
            self.env.close()
            shutil.rmtree(path)
            self._open()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.env = lmdb.open(str(self.path), map_size=self._map_size, max_dbs=8, sync=False, metasync=False)
            self.postings = self.env.open_db(b"postings")
            self.minutes = self.env.open_db(b"minutes")
            self.denied = self.env.open_db(b"denied")
            self.versions = self.env.open_db(b"versions")
            self.meta = self.env.open_db(b"meta")
        except lmdb.Error as e:
            raise LedgerError(f"cannot open the console index at {self.path}: {e}") from e
        self._config_key = ",".join(self.indexed_headers).encode()

    def _ledger_identity(self) -> bytes:
        with self.store.read_txn() as txn:
            if self.store.head(txn).size == 0:
                return b""
            return self.store.read_hashes([tree.stored_hash_index(0, 0)], txn=txn)[0]

    def _same_ledger(self) -> bool:
        with self.env.begin(db=self.meta) as txn:
            known, headers = txn.get(b"ledger"), txn.get(b"headers")
        if known is None:
            return True
        return bytes(known) == self._ledger_identity() and bytes(headers or b"") == self._config_key

    def close(self) -> None:
        self.env.close()

    def covered(self) -> int:
        with self.env.begin(db=self.meta) as txn:
            v = txn.get(b"covered")
        return 0 if v is None else from_u64(v)

    # --- building ---

    def catch_up(self, limit: int | None = None) -> int:
        """Index entries from ``covered`` to the ledger's head (at most ``limit``); return the new ``covered``."""
        start = self.covered()
        stop = self.store.head().size if limit is None else min(self.store.head().size, start + limit)
        while start < stop:
            end = min(start + BATCH, stop)
            self._index(start, end)
            start = end
        return start

    def _read(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        with self.store.read_txn() as txn:
            cur = txn.cursor(db=self.store.entries)
            out = []
            if cur.set_key(u64(start)):
                for k, v in cur:
                    seq = from_u64(k)
                    if seq >= stop:
                        break
                    out.append((seq, bytes(v)))
            return out

    def _index(self, start: int, stop: int) -> None:
        blocks: dict[tuple[bytes, int], list[int]] = defaultdict(list)
        minutes: dict[int, list[int]] = {}
        denied: dict[bytes, int] = defaultdict(int)
        versions: list[tuple[int, int, str]] = []
        with self.env.begin(db=self.meta) as txn:
            last = txn.get(b"last_version")
            last_version = None if last is None else bytes(last).decode()
        for seq, raw in self._read(start, stop):
            f = facts_of(seq, raw, self.user_headers)
            block, offset = postings.block_of(seq)
            for t in terms_of(f, self.indexed_headers):
                blocks[t, block].append(offset)
            minute = f.time_ns // 60_000_000_000
            m = minutes.setdefault(minute, [seq, seq, 0, 0, 0, 0])
            m[0], m[1] = min(m[0], seq), max(m[1], seq)
            m[2 + OUTCOME_SLOTS.get(f.outcome, 3)] += 1
            if f.outcome == "deny":
                for kinds, bucket in ((b"pu", f.time_ns // _HOUR), (b"PU", f.time_ns // _DAY)):
                    packed = _MINUTE.pack(min(bucket, 0xFFFFFFFF))
                    denied[
                        kinds[:1] + packed + path_pattern(f.path).encode("utf-8", "surrogateescape")[:MAX_VALUE]
                    ] += 1
                    if f.principal:
                        denied[kinds[1:] + packed + f.principal.encode("utf-8", "surrogateescape")[:MAX_VALUE]] += 1
            if f.message is not None and f.version != last_version:
                versions.append((seq, f.time_ns, f.version))
                last_version = f.version
        self._commit(stop, blocks, minutes, denied, versions, last_version)

    def _commit(
        self,
        stop: int,
        blocks: dict[tuple[bytes, int], list[int]],
        minutes: dict[int, list[int]],
        denied: dict[bytes, int],
        versions: list[tuple[int, int, str]],
        last_version: str | None,
    ) -> None:
        identity = self._ledger_identity()
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for (t, block), offsets in blocks.items():
                        key = t + struct.pack(">I", block)
                        txn.put(key, postings.merge(txn.get(key, db=self.postings), offsets), db=self.postings)
                    for minute, counts in minutes.items():
                        key = _MINUTE.pack(min(minute, 0xFFFFFFFF))
                        old = txn.get(key, db=self.minutes)
                        txn.put(key, _MINUTE_VALUE.pack(*_add_minute(old, counts)), db=self.minutes)
                    for key, n in denied.items():
                        old = txn.get(key, db=self.denied)
                        txn.put(key, _COUNT.pack(n + (0 if old is None else _COUNT.unpack(old)[0])), db=self.denied)
                    for seq, t_ns, version in versions:
                        txn.put(u64(seq), u64(t_ns) + version.encode(), db=self.versions)
                    txn.put(b"covered", u64(stop), db=self.meta)
                    txn.put(b"ledger", identity, db=self.meta)
                    txn.put(b"headers", self._config_key, db=self.meta)
                    if last_version is not None:
                        txn.put(b"last_version", last_version.encode(), db=self.meta)
                return
            except lmdb.MapFullError:
                self._map_size *= 2
                self.env.set_mapsize(self._map_size)
            except lmdb.Error as e:
                raise LedgerError(f"cannot write the console index at {self.path}: {e}") from e

    # --- reading ---

    @contextlib.contextmanager
    def read_txn(self) -> Iterator[Any]:
        try:
            txn = self.env.begin(buffers=True)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            txn = self.env.begin(buffers=True)
        try:
            yield txn
        finally:
            txn.abort()

    def seq_span(self, since_ns: int, until_ns: int) -> tuple[int, int] | None:
        """The smallest and largest seq of the entries whose minute lies in [since, until) (None: none).

        A superset of the entries in the time range (minutes, not nanoseconds; times are not monotonic in seq,
        which is why every minute in the range is read): rows are re-checked against their exact time."""
        lo, hi = None, None
        for m in self.minute_stats(since_ns, until_ns):
            lo = m.min_seq if lo is None else min(lo, m.min_seq)
            hi = m.max_seq if hi is None else max(hi, m.max_seq)
        return None if lo is None or hi is None else (lo, hi)

    def minute_stats(self, since_ns: int, until_ns: int) -> Iterator[MinuteStats]:
        first = since_ns // 60_000_000_000
        last = (until_ns - 1) // 60_000_000_000 if until_ns else 0xFFFFFFFF
        with self.read_txn() as txn:
            cur = txn.cursor(db=self.minutes)
            if not cur.set_range(_MINUTE.pack(min(first, 0xFFFFFFFF))):
                return
            for k, v in cur:
                minute = _MINUTE.unpack(k)[0]
                if minute > last:
                    break
                yield MinuteStats(minute, *_MINUTE_VALUE.unpack(v))

    def top_denied(self, kind: str, since_ns: int, until_ns: int, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` path patterns (kind "p") or principals ("u") denied most often in [since, until): by hour,
        or, for a range over two days, by whole days (the first and last day may reach outside the range)."""
        unit = _HOUR
        if not until_ns or not since_ns or until_ns - since_ns > 2 * _DAY:
            kind, unit = kind.upper(), _DAY
        first = since_ns // unit
        last = (until_ns - 1) // unit if until_ns else 0xFFFFFFFF
        totals: dict[bytes, int] = defaultdict(int)
        prefix = kind.encode("ascii")
        with self.read_txn() as txn:
            cur = txn.cursor(db=self.denied)
            ok = cur.set_range(prefix + _MINUTE.pack(min(first, 0xFFFFFFFF)))
            while ok:
                k = bytes(cur.key())
                if k[:1] != prefix or _MINUTE.unpack(k[1:5])[0] > last:
                    break
                totals[k[5:]] += _COUNT.unpack(cur.value())[0]
                ok = cur.next()
        top = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [(k.decode("utf-8", "replace"), c) for k, c in top]

    def version_changes(self, since_ns: int = 0, until_ns: int = 0) -> list[tuple[int, int, str]]:
        """(first seq, time, policy version) of every change of the deciding policy version, in seq order."""
        out = []
        with self.read_txn() as txn:
            for k, v in txn.cursor(db=self.versions):
                t = from_u64(bytes(v[:8]))
                if (not since_ns or t >= since_ns) and (not until_ns or t < until_ns):
                    out.append((from_u64(k), t, bytes(v[8:]).decode("utf-8", "replace")))
        return out
