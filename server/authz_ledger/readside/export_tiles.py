"""Export the ledger as a static C2SP tlog-tiles directory (https://c2sp.org/tlog-tiles).

A tiles export is a directory any static web server or object store can serve as a tlog-tiles *prefix*: the
signed checkpoint note byte for byte as stored (in its witness-cosigned form when there is one), the hash tiles
and the entry bundles, at the paths of :mod:`authz_ledger.tlog.tiles`. Dot files (``.export.lock``,
``.<name>.tmp``) are the exporter's own and are not part of the log.

Invariants:

* Everything comes from ONE LMDB read transaction: the checkpoint, the entries and the stored hashes are one
  consistent snapshot, so exporting while the server writes is safe, and the writer is never blocked.
* Hash tiles are copied from stored hashes, never recomputed: the hash at position ``i`` of tile ``(L, N)`` is the
  complete subtree of ``256**L`` leaves that golang.org/x/mod/sumdb/tlog numbering stores at
  ``stored_hash_index(8 * L, N * 256 + i)`` (tree.py). A level-0 tile is one contiguous cursor run over the
  stored hashes, whose layout interleaves each leaf's hash with the subtree hashes it completes.
* The exported checkpoint's root is checked against the stored tree at its size before anything is written, and
  a directory already holding a checkpoint is only ever moved forward, for the same origin and a root our tree
  reproduces at that size -- never rolled back, never mixed with another log's tiles.
* Immutability ("Merkle Tree", "Log entries": these endpoints are immutable): a tile or bundle file that exists is
  never rewritten, because its content is fixed by its path in an append-only log. Partial tiles are new paths
  (``.p/<W>``); older partial tiles are kept, as the spec allows (a client holding an older checkpoint may still
  fetch them). So a cron job re-running the export writes only new files.
* Ordering: every new file is written to a temporary name, fsynced and renamed into place, and the directories
  that gained entries are fsynced (ledger/files.py); only then is ``checkpoint`` replaced (atomically, by
  rename). A reader never sees a checkpoint whose tiles are missing or half written, even across a crash.
* Entries over 65,535 bytes cannot exist: entry bundles frame each entry with a u16 length, so the ledger caps
  every entry at ``entry.MAX_ENTRY_BYTES`` when it is written (oversized recorded input/result documents are
  replaced by their size and SHA-256). Finding a larger one here means the store is corrupt.
* One export at a time per directory (an advisory lock); a second concurrent run fails at once instead of
  interleaving with the first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from authz_ledger.errors import (
    ConfigError,
    InvalidRequestError,
    LedgerCorruptError,
    LedgerError,
    NoteError,
    NotFoundError,
    ProofError,
)
from authz_ledger.ledger.files import FileBatchWriter, write_file_atomically
from authz_ledger.ledger.store import Store, from_u64, u64
from authz_ledger.tlog import note, tree
from authz_ledger.tlog.checkpoint import Checkpoint, open_checkpoint
from authz_ledger.tlog.tiles import (
    MAX_BUNDLED_ENTRY,
    TILE_HEIGHT,
    TILE_WIDTH,
    entry_bundle_path,
    tile_path,
    tiles_for_size,
)

CHECKPOINT_FILE = "checkpoint"
_LOCK_FILE = ".export.lock"
_U16 = struct.Struct(">H")
_FILE_MODE = 0o644  # exported files are public by design: a web server must be able to read them
_DIR_MODE = 0o755

# Within a level-0 tile starting at leaf a = 256 * N, leaf a + j's stored hash index minus leaf a's is
# 2j - popcount(j) (tree.stored_hash_index: no carries below bit 8), the same for every tile.
_LEAF_OFFSETS = [2 * j - j.bit_count() for j in range(TILE_WIDTH)]


# --- Report -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What one tiles export did."""

    size: int
    """Tree size of the exported checkpoint."""
    root: bytes
    cosigned: bool
    """The exported checkpoint is the witness-cosigned form."""
    checkpoint_updated: bool
    """False when the directory already held exactly this checkpoint."""
    hash_tiles_written: int
    bundles_written: int
    files_existing: int
    """Tiles and bundles the tree needs that were already present (immutable: left untouched)."""
    entries_written: int
    """Entries in the bundles written by this run."""
    bytes_written: int
    """Bytes of tiles, bundles and checkpoint written by this run."""
    seconds: float

    @property
    def files_written(self) -> int:
        return self.hash_tiles_written + self.bundles_written

    @property
    def entries_per_second(self) -> float:
        return self.entries_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds > 0 else 0.0


# --- Reading the snapshot ---------------------------------------------------------------------------------


class _Snapshot:
    """Reads tiles and bundles from one LMDB read transaction (``buffers=True``: values are copied once)."""

    def __init__(self, store: Store, txn: Any) -> None:
        self._store = store
        self._txn = txn
        self._hashes = txn.cursor(store.hashes)
        self._entries = txn.cursor(store.entries)

    def read_hashes(self, indexes: Any) -> list[bytes]:
        """tree.py's ``read_hashes`` callback; KeyError (a LookupError) for a missing hash."""
        out = []
        for i in indexes:
            v = self._txn.get(u64(i), db=self._store.hashes)
            if v is None:
                raise KeyError(i)
            out.append(bytes(v))
        return out

    def tree_hash(self, size: int) -> bytes:
        try:
            return tree.tree_hash(size, self.read_hashes)
        except ProofError as e:
            raise LedgerCorruptError(f"cannot compute the stored tree at size {size}: {e}") from e

    def leaf_tile(self, n: int, width: int) -> bytes:
        """Level-0 tile ``n``: leaf hashes picked from one contiguous run of stored hashes."""
        first = tree.stored_hash_index(0, n * TILE_WIDTH)
        span = _LEAF_OFFSETS[width - 1] + 1
        cur = self._hashes
        if not cur.set_key(u64(first)):
            raise LedgerCorruptError(f"stored tree hash {first} is missing", n * TILE_WIDTH)
        run = list(islice(cur.iternext(keys=False, values=True), span))
        # Keys are unique and sorted: a run that starts and ends at the expected keys has no gap.
        if len(run) != span or from_u64(cur.key()) != first + span - 1:
            raise LedgerCorruptError(f"stored tree hashes {first}..{first + span - 1} are incomplete", n * TILE_WIDTH)
        data = b"".join([run[o] for o in _LEAF_OFFSETS[:width]])
        if len(data) != width * tree.HASH_SIZE:
            raise LedgerCorruptError(f"a stored leaf hash in tile 0/{n} is not {tree.HASH_SIZE} bytes", n * TILE_WIDTH)
        return data

    def upper_tile(self, level: int, n: int, width: int) -> bytes:
        """Tile ``n`` at ``level`` >= 1: stored hashes of complete subtrees of 256**level leaves."""
        stored_level = TILE_HEIGHT * level
        get, db = self._txn.get, self._store.hashes
        out = []
        for i in range(n * TILE_WIDTH, n * TILE_WIDTH + width):
            v = get(u64(tree.stored_hash_index(stored_level, i)), db=db)
            if v is None or len(v) != tree.HASH_SIZE:
                raise LedgerCorruptError(f"stored hash of subtree {i} at level {stored_level} is missing or short")
            out.append(v)
        return b"".join(out)

    def bundle(self, n: int, width: int) -> bytes:
        """Entry bundle ``n``: each entry as u16 big-endian length || bytes (tlog-tiles "Log entries")."""
        first = n * TILE_WIDTH
        cur = self._entries
        if not cur.set_key(u64(first)):
            raise LedgerCorruptError(f"entry {first} is missing", first)
        run = list(islice(cur.iternext(keys=False, values=True), width))
        if len(run) != width or from_u64(cur.key()) != first + width - 1:
            raise LedgerCorruptError(f"entries {first}..{first + width - 1} are incomplete", first)
        pack = _U16.pack
        try:
            return b"".join([part for v in run for part in (pack(len(v)), v)])
        except struct.error:
            # Cannot happen for entries the writer stored (capped at entry.MAX_ENTRY_BYTES).
            seq = first + next(i for i, v in enumerate(run) if len(v) > MAX_BUNDLED_ENTRY)
            raise LedgerCorruptError(f"entry {seq} exceeds {MAX_BUNDLED_ENTRY} bytes", seq) from None

    def checkpoint(
        self, size: int | None, *, at_most: int | None = None, plain: bool = False
    ) -> tuple[int, bytes, bool]:
        """(size, signed note, cosigned?) of the checkpoint at ``size`` or the latest (at or below ``at_most``);
        the cosigned form if any."""
        if size is None:
            cur = self._txn.cursor(self._store.checkpoints)
            found = cur.last() if at_most is None else _last_at_most(cur, at_most)
            if not found:
                raise NotFoundError("no checkpoint has been published yet: nothing to export")
            size = from_u64(cur.key())
            signed = bytes(cur.value())
        else:
            v = self._txn.get(u64(size), db=self._store.checkpoints)
            if v is None:
                raise NotFoundError(f"no checkpoint was published at tree size {size}")
            signed = bytes(v)
        cosigned = None if plain else self._txn.get(u64(size), db=self._store.cosigned)
        if cosigned is not None:
            return size, bytes(cosigned), True
        return size, signed, False


def _checkpoint_of(note_bytes: bytes, where: str) -> Checkpoint:
    """The checkpoint body of a signed note (signed-note "Format": the text ends at the last blank line)."""
    split = note_bytes.rfind(b"\n\n")
    if split < 0:
        raise NoteError(f"{where} is not a signed note")
    return Checkpoint.parse(note_bytes[: split + 1])


# --- One export at a time per directory -------------------------------------------------------------------


class _Lock:
    """An exclusive advisory lock on the export directory, released on exit (also by a crash)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / _LOCK_FILE
        self._fd = -1

    def __enter__(self) -> _Lock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise LedgerError(f"another export into {self.path.parent} is running") from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing the descriptor releases the flock


# --- Tiles export -----------------------------------------------------------------------------------------


def _check_existing_checkpoint(out_dir: Path, cp: Checkpoint, signed: bytes, snap: _Snapshot) -> bool:
    """Whether ``checkpoint`` must be (re)written; refuse to roll back or to mix another log into ``out_dir``."""
    path = out_dir / CHECKPOINT_FILE
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        return True
    if current == signed:
        return False
    try:
        old = _checkpoint_of(current, str(path))
    except NoteError as e:
        raise ConfigError(f"{path} is not a checkpoint ({e}); export into an empty directory") from e
    if old.origin != cp.origin:
        raise ConfigError(f"{out_dir} holds an export of {old.origin!r}, not of {cp.origin!r}")
    if old.size > cp.size:
        raise ConfigError(
            f"{out_dir} already publishes tree size {old.size}; exporting size {cp.size} there would roll it back"
        )
    # Its tiles are kept as they are, so they must be ours: the old root must be our tree's at that size.
    if snap.tree_hash(old.size) != old.root:
        raise ConfigError(
            f"{out_dir} publishes a tree of size {old.size} that this ledger does not contain (a different or "
            "reset ledger); export into an empty directory"
        )
    return True


def _last_at_most(cur: Any, key: int) -> bool:
    """Position ``cur`` at the last key <= ``key``: the first key above it, one step back (or the very last)."""
    return bool(cur.prev() if cur.set_range(u64(key + 1)) else cur.last())


def export_tiles(
    store: Store,
    out_dir: str | os.PathLike[str],
    *,
    checkpoint_size: int | None = None,
    durable: bool = True,
    verified_size: int | None = None,
    verifiers: Sequence[note.Verifier] | None = None,
) -> ExportReport:
    """Export the tree of the latest checkpoint (or the one at ``checkpoint_size``) as a tlog-tiles directory.

    Writes only the tiles and bundles ``out_dir`` lacks, then replaces ``checkpoint`` last (see the module
    docstring). ``durable=False`` skips the fsyncs (tests, or a copy that is uploaded elsewhere anyway); the
    checkpoint is still written last. ``verified_size``: the size the caller verified (ledger.trust); the latest
    checkpoint at or below it is exported, never one over entries appended since. ``verifiers``: the note to be
    published must verify with one of them (and a cosigned one carry the text the log signed).

    Raises InvalidRequestError (negative size), NotFoundError (no such checkpoint), LedgerCorruptError (the store
    disagrees with itself), ConfigError (``out_dir`` holds another log or a newer checkpoint) or LedgerError (I/O,
    or another export into ``out_dir`` is running).
    """
    started = time.perf_counter()
    if checkpoint_size is not None and checkpoint_size < 0:
        raise InvalidRequestError(f"tree size must be non-negative, got {checkpoint_size}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        with _Lock(out), store.env.begin(buffers=True) as txn:
            return _export_locked(store, txn, out, checkpoint_size, durable, started, verified_size, verifiers)
    except OSError as e:
        raise LedgerError(f"cannot export to {out}: {e}") from e


def check_bundle(bundle: bytes, leaves: bytes, first: int) -> None:
    """Each entry of a tlog-tiles bundle (u16 length || bytes) hashes to its leaf in ``leaves`` (RFC 6962 §2.1:
    SHA-256(0x00 || entry)); else LedgerCorruptError naming the entry."""
    pos = index = 0
    while pos < len(bundle):
        (length,) = _U16.unpack_from(bundle, pos)
        data = bundle[pos + 2 : pos + 2 + length]
        if tree.leaf_hash(data) != leaves[index * tree.HASH_SIZE : (index + 1) * tree.HASH_SIZE]:
            raise LedgerCorruptError(f"entry {first + index} does not hash to its published leaf", first + index)
        pos += 2 + length
        index += 1
    if index * tree.HASH_SIZE != len(leaves):
        raise LedgerCorruptError(f"the bundle from entry {first} holds {index} entries, its tile more", first + index)


def _check_note_to_publish(
    snap: _Snapshot, size: int, signed: bytes, cosigned: bool, verifiers: Sequence[note.Verifier]
) -> None:
    """The exact note that becomes the published ``checkpoint`` verifies with a trusted key, and a cosigned one
    says exactly what the log signed (C2SP tlog-cosignature: witnesses add signatures, never change the text)."""
    try:
        open_checkpoint(signed, verifiers)
    except NoteError as e:
        raise LedgerCorruptError(f"the checkpoint at size {size} to publish does not verify: {e}", size) from e
    if cosigned:
        _, plain, _ = snap.checkpoint(size, plain=True)
        if signed.split(b"\n\n", 1)[0] != plain.split(b"\n\n", 1)[0]:
            raise LedgerCorruptError(
                f"the cosigned checkpoint at size {size} does not carry the text the log signed", size
            )


def _export_locked(
    store: Store,
    txn: Any,
    out: Path,
    checkpoint_size: int | None,
    durable: bool,
    started: float,
    verified_size: int | None,
    verifiers: Sequence[note.Verifier] | None = None,
) -> ExportReport:
    snap = _Snapshot(store, txn)
    if checkpoint_size is not None and verified_size is not None and checkpoint_size > verified_size:
        raise NotFoundError(f"no verified checkpoint at tree size {checkpoint_size} (verified {verified_size})")
    size, signed, cosigned = snap.checkpoint(checkpoint_size, at_most=verified_size)
    try:
        cp = _checkpoint_of(signed, f"stored checkpoint {size}")
    except NoteError as e:
        raise LedgerCorruptError(f"stored checkpoint at size {size} is malformed: {e}") from e
    # tlog-checkpoint: the root must be the tree's at that size, or every tile we write would contradict it.
    if cp.size != size or snap.tree_hash(size) != cp.root:
        raise LedgerCorruptError(f"stored checkpoint at size {size} does not match the stored tree")
    if verifiers is not None:
        _check_note_to_publish(snap, size, signed, cosigned, verifiers)
    replace_checkpoint = _check_existing_checkpoint(out, cp, signed, snap)

    output = FileBatchWriter(
        out, durable=durable, file_mode=_FILE_MODE, dir_mode=_DIR_MODE, thread_name_prefix="export-fsync"
    )
    tiles = bundles = existing = entries = 0
    try:
        for level, n, width in tiles_for_size(size):
            path = tile_path(level, n, width)
            if output.exists(path):
                existing += 1
            else:
                output.write(path, snap.leaf_tile(n, width) if level == 0 else snap.upper_tile(level, n, width))
                tiles += 1
            if level == 0:
                path = entry_bundle_path(n, width)
                if output.exists(path):
                    existing += 1
                else:
                    bundle = snap.bundle(n, width)
                    # Checked in this export's own snapshot (the verification before it read another one):
                    # every published entry hashes to the leaf its tile publishes.
                    check_bundle(bundle, snap.leaf_tile(n, width), n * TILE_WIDTH)
                    output.write(path, bundle)
                    bundles += 1
                    entries += width
        output.finish()  # every tile the checkpoint names is durable before the checkpoint changes
    finally:
        output.close()
    written = output.bytes
    if replace_checkpoint:
        write_file_atomically(out / CHECKPOINT_FILE, signed, _FILE_MODE)
        written += len(signed)
    return ExportReport(
        size=size,
        root=cp.root,
        cosigned=cosigned,
        checkpoint_updated=replace_checkpoint,
        hash_tiles_written=tiles,
        bundles_written=bundles,
        files_existing=existing,
        entries_written=entries,
        bytes_written=written,
        seconds=time.perf_counter() - started,
    )
