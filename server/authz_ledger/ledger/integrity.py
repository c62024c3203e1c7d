"""Check LMDB's data file before LMDB reads it: a damaged file must be an error, never a signal.

LMDB maps ``data.mdb`` into memory and follows the page numbers, offsets and sizes it finds there without bounds
checks (lmdb 0.9 ``mdb.c``: ``mdb_page_get``, ``mdb_node_read``). A file cut short turns the first read of a page
past its end into SIGBUS; a page overwritten with other bytes makes LMDB return MDB_CORRUPTED at best, and at worst
fail an assertion (SIGABRT: 4 of 60 single random pages in a 3,000-entry ledger) or follow a wild pointer
(SIGSEGV). Python can catch none of these. So this module reads the file itself -- with ``pread``, never through a
mapping, so a short file is an ordinary error here -- and refuses it before LMDB touches what it cannot read safely:

- :func:`check_before_open`, at every open (microseconds): both meta pages as ``mdb_env_read_header`` checks them,
  the newest one as ``mdb_env_pick_meta`` picks it, a file long enough for every page that commit uses, and the
  pages of the main database (the catalogue of named databases that ``open_db`` searches). A file shorter than its
  newest commit is not always damaged: pages LMDB freed in the transaction that allocated them are never written
  (``mdb_page_flush`` skips P_LOOSE pages). Then every reachable page is checked, and only one past the end fails.
- :func:`check_structure`, for ``verify`` and a writable open (``serve``), which read everything anyway: every page
  reachable from the newest commit -- each named database, its overflow pages, the free-page database -- has its
  own number, a type that fits its depth, node offsets and sizes inside the page, overflow extents inside the file,
  and no page is both in use and listed as free (the next write would overwrite it). That is every bound LMDB
  trusts when it reads, so what passes cannot make it fault.

Readers do not stop the writer, so a page read without a snapshot can be rewritten meanwhile (copy-on-write frees
the old page; the commit after next may reuse it). :func:`check_structure` reads under an LMDB read transaction,
which pins the snapshot; :func:`check_before_open` reads no more than a few pages and believes a problem only if
no commit happened while it read.

Layout: LMDB 0.9 (data version 1), 64-bit, the host's byte order -- ``MDB_page``, ``MDB_meta``, ``MDB_db`` and
``MDB_node`` in ``mdb.c``, which every py-lmdb release this project supports bundles.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz_ledger.errors import LedgerError, LedgerFileError

DATA_FILE = "data.mdb"
ADVICE = (
    "Restore the data directory from a backup; `authz-ledger verify --data-dir DIR --vkey VKEY --json` reports "
    "what is damaged"
)

_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_PAGE_HEADER = 16  # PAGEHDRSZ: mp_pgno u64, mp_pad u16, mp_flags u16, mp_lower u16, mp_upper u16 (or mp_pages u32)
_NODE_HEADER = 8  # NODESIZE: mn_lo u16, mn_hi u16, mn_flags u16, mn_ksize u16
_CURSOR_STACK = 32  # LMDB's deepest tree
_NO_ROOT = (1 << 64) - 1  # P_INVALID
_META_PAGES = 2

_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_META, _P_DIRTY, _P_LEAF2, _P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_MDB_DUPSORT = 0x04

_HEADER = struct.Struct("=QHHHH")
_PAGES = struct.Struct("=I")  # mp_pages of an overflow page, over mp_lower/mp_upper
_NODE = struct.Struct("=HHHH")
_DB = struct.Struct("=IHHQQQQQ")  # MDB_db: md_pad, md_flags, md_depth, 3 page counts, md_entries, md_root
_META = struct.Struct("=IIQQ48s48sQQ")  # MDB_meta after the page header
_PGNO = struct.Struct("=Q")


@dataclass(frozen=True, slots=True)
class Db:
    name: str
    flags: int
    depth: int
    root: int
    pad: int  # the key size of a DUPFIXED tree's LEAF2 pages


@dataclass(frozen=True, slots=True)
class Meta:
    slot: int
    page_size: int
    last_page: int
    txnid: int
    free: Db
    main: Db

    @property
    def bytes_needed(self) -> int:
        return (self.last_page + 1) * self.page_size


class _Problem(Exception):
    """What one read found; becomes a LedgerFileError once it is known not to be a concurrent commit."""


LITTLE_ENDIAN = sys.byteorder == "little"
"""The layouts above as read on little-endian hosts (x86-64, arm64). On a big-endian host LMDB orders a node's
size halves differently; rather than misread a healthy file there, the checks are not made."""


def check_before_open(env_dir: Path, *, full: bool = False) -> None:
    """Refuse ``env_dir/data.mdb`` if LMDB could fault opening it; ``full``: check every page (:func:`check_structure`
    without an environment: only when no other process writes). A missing file is LMDB's to create."""
    if not LITTLE_ENDIAN:
        return
    path = env_dir / DATA_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as e:
        raise LedgerFileError(f"cannot read {path}: {e.strerror}. {ADVICE}", path=str(path)) from e
    try:
        for _ in range(10):
            meta = read_meta(fd, path)
            size = os.fstat(fd).st_size
            short = size < meta.bytes_needed
            try:
                _Walk(fd, size, meta, main_only=not (full or short)).run()
                return
            except _Problem as problem:
                if read_meta(fd, path).txnid != meta.txnid:
                    continue  # a commit happened while we read: read the new one
                if short:
                    raise _file_error(
                        path,
                        f"it is {size} bytes, but its latest commit (transaction {meta.txnid}) uses "
                        f"{meta.last_page + 1} pages of {meta.page_size} bytes, {meta.bytes_needed} bytes: "
                        f"it was truncated ({problem})",
                    ) from None
                raise _file_error(path, str(problem)) from None
        raise LedgerError(f"{path} changed on every attempt to check it (a writer is busy); try again")
    finally:
        os.close(fd)


def check_structure(env: Any, env_dir: Path) -> None:
    """Every page reachable from the snapshot of a read transaction on the open ``env`` (safe beside a writer)."""
    if not LITTLE_ENDIAN:
        return
    path = env_dir / DATA_FILE
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(10):
            with env.begin() as txn:  # held while reading: LMDB reuses none of this snapshot's pages meanwhile
                snapshot = txn.id()
                # The snapshot's meta is the newest or, after one commit since, the other slot (LMDB alternates).
                meta = next((m for m in read_metas(fd, path) if m.txnid == snapshot), None)
                if meta is None:
                    continue  # two commits since the snapshot was taken: its meta slot is gone; take a new one
                try:
                    _Walk(fd, os.fstat(fd).st_size, meta, main_only=False).run()
                except _Problem as problem:
                    # A commit two after the snapshot may have rewritten its meta page while it was read: only a
                    # failure on a meta page that is still the one read is damage.
                    if meta not in read_metas(fd, path):
                        continue
                    raise _file_error(path, str(problem)) from None
                return
        raise LedgerError(
            f"{path} changed on every attempt to read a consistent snapshot (a writer is busy); try again"
        )
    finally:
        os.close(fd)


def read_meta(fd: int, path: Path) -> Meta:
    """The newest valid meta page, checked as mdb_env_read_header does (both must be valid)."""
    first, second = read_metas(fd, path)
    newest = second if first.txnid < second.txnid else first  # mdb_env_pick_meta
    if newest.last_page < _META_PAGES - 1:
        raise _file_error(path, f"meta page {newest.slot} names last page {newest.last_page}")
    return newest


def read_metas(fd: int, path: Path) -> tuple[Meta, Meta]:
    """Both meta pages, each checked as mdb_env_read_header checks it."""
    size = os.fstat(fd).st_size
    if size == 0:
        raise _file_error(path, "it is empty (0 bytes); if this directory never held a ledger, remove the file")
    first = _read_one_meta(fd, path, size, 0, 0)
    second = _read_one_meta(fd, path, size, 1, first.page_size)
    if second.page_size != first.page_size:
        raise _file_error(path, f"its meta pages disagree on the page size ({first.page_size}, {second.page_size})")
    return first, second


def _read_one_meta(fd: int, path: Path, size: int, slot: int, offset: int) -> Meta:
    raw = os.pread(fd, _PAGE_HEADER + _META.size, offset)
    if len(raw) < _PAGE_HEADER + _META.size:
        raise _file_error(path, f"it is {size} bytes: too short for LMDB's meta page {slot} at byte {offset}")
    _, _, flags, _, _ = _HEADER.unpack_from(raw)
    magic, version, _, _, free, main, last_page, txnid = _META.unpack_from(raw, _PAGE_HEADER)
    if not flags & _P_META or magic != _MAGIC:
        raise _file_error(path, f"meta page {slot} (byte {offset}) is not an LMDB meta page: it was overwritten")
    if version != _DATA_VERSION:
        raise _file_error(path, f"meta page {slot} has LMDB data version {version}; this build reads version 1")
    page_size = _DB.unpack(free)[0]  # mm_psize is the free database's md_pad
    if page_size & (page_size - 1) or not 512 <= page_size <= 0x8000:
        raise _file_error(path, f"meta page {slot} names an impossible page size {page_size}")
    return Meta(slot, page_size, last_page, txnid, _db("free-page", free), _db("main", main))


def _db(name: str, raw: bytes) -> Db:
    pad, flags, depth, _, _, _, _, root = _DB.unpack(raw)
    return Db(name, flags, depth, root, pad)


def _file_error(path: Path, problem: str) -> LedgerFileError:
    return LedgerFileError(f"{path} is damaged: {problem}. {ADVICE}", path=str(path))


def _where(db: Db, pgno: int, page_size: int) -> str:
    return f"page {pgno} (byte {pgno * page_size}) of the {db.name} database"


class _Child:
    """Node ``index`` of page ``pgno`` (-1: the page itself), as an error names it; formatted only on an error."""

    __slots__ = ("db", "index", "page_size", "pgno")

    def __init__(self, db: Db, pgno: int, index: int, page_size: int) -> None:
        self.db, self.pgno, self.index, self.page_size = db, pgno, index, page_size

    def __str__(self) -> str:
        where = _where(self.db, self.pgno, self.page_size)
        return where if self.index < 0 else f"{where}, child {self.index}"


class _Walk:
    """One pass over the trees of ``meta``, reading pages with pread; raises _Problem at the first bad page.

    ``main_only``: the main database's own pages, not the named databases it lists (what ``open_db`` reads)."""

    def __init__(self, fd: int, file_size: int, meta: Meta, *, main_only: bool) -> None:
        self.fd = fd
        self.file_size = file_size
        self.meta = meta
        self.psize = meta.page_size
        self.main_only = main_only
        self.in_use = bytearray(meta.last_page + 1)
        self.free_pages: list[int] = []

    def run(self) -> None:
        self.tree(self.meta.main)
        if self.main_only:
            return
        self.tree(self.meta.free)
        for page in self.free_pages:
            if self.in_use[page]:
                raise _Problem(f"page {page} is in use and also listed as free: the next write would overwrite it")

    def tree(self, db: Db) -> None:
        if db.root == _NO_ROOT:
            return
        if not 1 <= db.depth <= _CURSOR_STACK:
            raise _Problem(f"the {db.name} database has depth {db.depth}")
        self.page(db, db.root, 1, f"the root of the {db.name} database")

    def claim(self, pgno: int, count: int, what: object) -> None:
        """Pages pgno..pgno+count-1 belong to ``what``: the commit must own them, the file hold them, and no other
        part of the tree use them (which also keeps a cycle from looping)."""
        if pgno < _META_PAGES or pgno + count - 1 > self.meta.last_page:
            raise _Problem(f"{what} names page {pgno}, outside the {self.meta.last_page + 1} pages of the commit")
        end = (pgno + count) * self.psize
        if end > self.file_size:
            raise _Problem(f"{what}, page {pgno}, lies past the end of the file (byte {end})")
        for p in range(pgno, pgno + count):
            if self.in_use[p]:
                raise _Problem(f"{what} names page {p}, which another part of the tree already uses")
            self.in_use[p] = 1

    def fetch(self, pgno: int, count: int, what: object) -> bytes:
        data = os.pread(self.fd, count * self.psize, pgno * self.psize)
        if len(data) != count * self.psize:
            raise _Problem(f"{what}, page {pgno}, could not be read in full")
        stored = _PGNO.unpack_from(data)[0]
        if stored != pgno:
            raise _Problem(f"page {pgno} ({what}) says it is page {stored}: it was overwritten")
        return data

    def page(self, db: Db, pgno: int, level: int, what: object) -> None:
        """``what`` names the page in an error (a str, or a _Child formatted only then: this runs per page)."""
        self.claim(pgno, 1, what)
        page = self.fetch(pgno, 1, what)
        flags = _HEADER.unpack_from(page)[2] & ~_P_DIRTY
        leaf_level = level == db.depth
        allowed = (_P_LEAF, _P_LEAF | _P_LEAF2) if leaf_level else (_P_BRANCH,)
        if flags not in allowed:
            expected = "a leaf" if leaf_level else "a branch"
            raise _Problem(
                f"{_where(db, pgno, self.psize)} has page flags {flags:#x} where {expected} page belongs: it was "
                "overwritten"
            )
        if flags == _P_LEAF | _P_LEAF2:
            self.fixed_size_keys(page, 0, self.psize, db.pad, _where(db, pgno, self.psize))
            return
        offsets = self.node_offsets(page, 0, self.psize, _Child(db, pgno, -1, self.psize))
        if flags == _P_BRANCH:
            # mdb_page_search_root asserts two or more keys per branch page outside the free-page database.
            if len(offsets) < (1 if db is self.meta.free else 2):
                raise _Problem(f"{_where(db, pgno, self.psize)} is a branch page with {len(offsets)} children")
            for i, offset in enumerate(offsets):
                lo, hi, high, ksize = _NODE.unpack_from(page, offset)
                child = _Child(db, pgno, i, self.psize)
                self.node_fits(offset, ksize, self.psize, child)
                self.page(db, lo | hi << 16 | high << 32, level + 1, child)
            return
        if db is not self.meta.free and self.plain_leaves_fit(page, offsets):
            return
        for i, offset in enumerate(offsets):
            self.leaf_node(db, page, offset, f"{_where(db, pgno, self.psize)}, node {i}")

    def plain_leaves_fit(self, page: bytes, offsets: list[int]) -> bool:
        """The common leaf page, checked at once: no node has flags (no overflow value, sub-database or
        duplicates) and every key and value ends inside the page. False: check node by node (and name it)."""
        words = array("H", page)  # MDB_node: mn_lo, mn_hi, mn_flags, mn_ksize, u16 each, 2-byte aligned
        if any([offset & 1 for offset in offsets]):
            return False  # LMDB aligns nodes to 2 bytes; anything else is checked (and named) node by node
        starts = [offset >> 1 for offset in offsets]
        if any([words[i + 2] for i in starts]):
            return False
        ends = [2 * i + words[i + 3] + words[i] + (words[i + 1] << 16) for i in starts]
        return not ends or max(ends) <= self.psize - _NODE_HEADER

    def node_offsets(self, page: bytes, base: int, span: int, where: object) -> list[int]:
        """The node offsets of a page (or of a sub-page of ``span`` bytes at ``base``), each between mp_upper and
        the end."""
        _, _, _, lower, upper = _HEADER.unpack_from(page, base)
        if not _PAGE_HEADER <= lower <= upper <= span or lower % 2:
            raise _Problem(f"{where} has impossible bounds (lower {lower}, upper {upper}): it was overwritten")
        offsets = struct.unpack_from(f"={(lower - _PAGE_HEADER) // 2}H", page, base + _PAGE_HEADER)
        if offsets and (min(offsets) < upper or max(offsets) > span - _NODE_HEADER):
            for i, offset in enumerate(offsets):
                if not upper <= offset <= span - _NODE_HEADER:
                    raise _Problem(f"{where} has node {i} at offset {offset}, outside {upper}..{span}")
        return [base + offset for offset in offsets]

    @staticmethod
    def node_fits(offset: int, size: int, end: int, where: object) -> None:
        if offset + _NODE_HEADER + size > end:
            raise _Problem(f"{where} ({size} bytes) runs past the end of its page")

    def leaf_node(self, db: Db, page: bytes, offset: int, where: str) -> None:
        lo, hi, flags, ksize = _NODE.unpack_from(page, offset)
        size = lo | hi << 16
        data = offset + _NODE_HEADER + ksize
        if flags & _F_DUPDATA and not db.flags & _MDB_DUPSORT:
            raise _Problem(f"{where} has duplicates in a database without them")
        if flags & _F_BIGDATA:
            self.node_fits(offset, ksize + _PGNO.size, self.psize, where)
            self.overflow(db, _PGNO.unpack_from(page, data)[0], size, where)
            return
        self.node_fits(offset, ksize + size, self.psize, where)
        if flags & _F_SUBDATA:
            # A named database (listed in the main database) or a large set of duplicates: a tree of its own.
            in_main = db is self.meta.main
            if size != _DB.size or in_main == bool(flags & _F_DUPDATA):
                raise _Problem(f"{where} holds a database record of {size} bytes where none belongs")
            if in_main and self.main_only:
                return
            key = page[offset + _NODE_HEADER : data].decode("utf-8", "replace")
            self.tree(_db(repr(key) if in_main else f"{db.name} duplicates", page[data : data + size]))
        elif flags & _F_DUPDATA:
            self.sub_page(page, data, size, where)
        elif db is self.meta.free:
            self.free_list(page[data : data + size], where)

    def sub_page(self, page: bytes, base: int, span: int, where: str) -> None:
        """A small set of duplicates stored inline as a page of ``span`` bytes (P_SUBP)."""
        if span < _PAGE_HEADER:
            raise _Problem(f"{where} holds a sub-page of {span} bytes")
        _, key_size, flags, _, _ = _HEADER.unpack_from(page, base)
        if flags & _P_LEAF2:
            self.fixed_size_keys(page, base, span, key_size, where)
            return
        for i, offset in enumerate(self.node_offsets(page, base, span, where)):
            self.node_fits(offset, _NODE.unpack_from(page, offset)[3], base + span, f"{where}, duplicate {i}")

    @staticmethod
    def fixed_size_keys(page: bytes, base: int, span: int, key_size: int, where: str) -> None:
        """LEAF2 (DUPFIXED) keys, packed after the header: their count times their size must fit."""
        lower = _HEADER.unpack_from(page, base)[3]
        count = (lower - _PAGE_HEADER) // 2
        if lower < _PAGE_HEADER or key_size == 0 or _PAGE_HEADER + count * key_size > span:
            raise _Problem(f"{where} holds {count} keys of {key_size} bytes, more than fit")

    def overflow(self, db: Db, pgno: int, size: int, where: str) -> None:
        """A value on pages of its own: OVPAGES(size) or more, the first an overflow page that says how many."""
        what = f"the value of {where}"
        self.claim(pgno, 1, what)
        first = self.fetch(pgno, 1, what)
        flags = _HEADER.unpack_from(first)[2] & ~_P_DIRTY
        pages = _PAGES.unpack_from(first, 12)[0]
        if flags != _P_OVERFLOW or pages < (_PAGE_HEADER - 1 + size) // self.psize + 1:
            raise _Problem(f"overflow page {pgno} ({what}, {size} bytes) has flags {flags:#x} and {pages} pages")
        if pages > 1:
            self.claim(pgno + 1, pages - 1, what)
        if db is self.meta.free:
            value = self.fetch(pgno, pages, what) if pages > 1 else first
            self.free_list(value[_PAGE_HEADER : _PAGE_HEADER + size], where)

    def free_list(self, value: bytes, where: str) -> None:
        """A free-page record (an IDL): a count, then that many page numbers; a writer trusts both."""
        if len(value) < 8 or len(value) % 8:
            raise _Problem(f"{where} holds a free-page list of {len(value)} bytes")
        numbers = struct.unpack(f"={len(value) // 8}Q", value)
        # LMDB reads only the count's worth (mdb_page_alloc); mdb_freelist_save can leave a record longer than it.
        if numbers[0] > len(numbers) - 1:
            raise _Problem(f"{where} holds a free-page list counting {numbers[0]} pages and listing {len(numbers) - 1}")
        numbers = numbers[: numbers[0] + 1]
        for page in numbers[1:]:
            if not _META_PAGES <= page <= self.meta.last_page:
                raise _Problem(f"{where} lists free page {page}, outside the commit")
        self.free_pages.extend(numbers[1:])
