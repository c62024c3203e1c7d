"""An auditor's check of a published C2SP tlog-tiles log (https://c2sp.org/tlog-tiles), from what is published alone.

What is verified, in this order (cheap and decisive first):

1. ``checkpoint`` is a C2SP signed note carrying a valid signature by a trusted log key named like its origin
   (tlog-checkpoint "Signatures"), and, for each trusted witness key, a valid C2SP tlog-cosignature v1 line
   (every given witness is required: witnesses are what make a split view detectable).
2. Against the previously trusted checkpoint, when there is one (it must verify with the same log keys and be for
   the same origin): a smaller tree is a rollback, another root at the same size a fork. Both are refused before a
   single tile is read.
3. Every entry bundle (``tile/entries/N[.p/W]``) against its level-0 tile: entry ``i`` of a bundle must have the
   leaf hash ``SHA-256(0x00 || entry)`` (RFC 6962 §2.1) found at position ``i`` of the tile.
4. Every hash tile above level 0: hash ``i`` of tile ``(L, N)`` must be the MTH of the *full* tile
   ``(L-1, 256 N + i)`` (tlog-tiles "Merkle Tree"); partial tiles are never hashed upward ("Partial Tiles").
5. The root: the leaf hashes, folded in order into an RFC 6962 compact range (``tree.Frontier``), must give the
   checkpoint's root. With 3 and 4 this pins every byte of every tile and bundle to the signed root. The same fold
   gives the tree's root at the trusted size, which must be the trusted root: the new tree extends the old one
   (a fork that kept the size growing is caught here, after the tiles proved the new root).

Reading goes through a caller-supplied ``fetch(path) -> bytes | None`` (a directory or an HTTP prefix:
readside/tiles_location.py), so this module does no I/O of its own. ``None`` means "not served" (404): a missing
partial tile is then read from its full tile, which a log may serve instead once it exists ("Partial Tiles": logs
MAY delete partial tiles, clients MAY fall back to the full one); anything else the checkpoint names and the
location does not serve is a failure. Fetches may run ahead on a few threads (``workers``); checks run in tree
order on the caller's thread.

Failures: NoteError (a signature or cosignature), TilesRollbackError and TilesForkError (against the trusted
checkpoint), TilesError (everything else the published bytes get wrong), TilesUnreadableError (no checkpoint at
all, or the location itself, raised by ``fetch``), ConfigError (a trusted checkpoint of another origin: the wrong
state for this location). A pruned log (tlog-tiles "Pruning") does not verify here: every tile is required.
"""

from __future__ import annotations

import base64
import contextlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from authz_ledger.errors import (
    ConfigError,
    NoteError,
    TilesError,
    TilesForkError,
    TilesRollbackError,
    TilesUnreadableError,
)
from authz_ledger.tlog import tree
from authz_ledger.tlog.checkpoint import Checkpoint, open_checkpoint
from authz_ledger.tlog.cosignature import CosignatureVerifier, verify_cosignature
from authz_ledger.tlog.note import Note, Verifier
from authz_ledger.tlog.tiles import TILE_WIDTH, entry_bundle_path, tile_path, tiles_for_size

Fetch = Callable[[str], bytes | None]
"""Reads one resource of a tlog-tiles prefix by its relative path; None when it is not served (404, no file)."""

CHECKPOINT_PATH = "checkpoint"
_HASH = tree.HASH_SIZE
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class TilesReport:
    """What one verification of a published log established."""

    origin: str
    size: int
    root: bytes
    signed: bytes
    """The checkpoint note exactly as fetched (cosignatures included): what a trusted-state file keeps."""
    witnesses: tuple[str, ...]
    """Names of the witnesses whose cosignatures verified (all those asked for)."""
    entries_checked: int
    tiles_checked: int
    """Hash tiles read and checked, all levels."""
    bundles_checked: int
    bytes_fetched: int
    trusted_size: int | None
    """Size of the previously trusted checkpoint the log was checked against; None if there was none."""

    @property
    def state_change(self) -> str:
        """``created`` (nothing was trusted), ``advanced`` (the tree grew) or ``unchanged`` (same tree)."""
        if self.trusted_size is None:
            return "created"
        return "advanced" if self.size > self.trusted_size else "unchanged"


def verify_tiles(
    fetch: Fetch,
    log_verifiers: Sequence[Verifier],
    witnesses: Sequence[CosignatureVerifier] = (),
    trusted: bytes | None = None,
    *,
    workers: int = 1,
) -> TilesReport:
    """Verify the log ``fetch`` reads (see the module docstring); return what was checked, or raise."""
    signed = fetch(CHECKPOINT_PATH)
    if signed is None:
        raise TilesUnreadableError(f"no {CHECKPOINT_PATH} is served: not a tlog-tiles prefix, or nothing published yet")
    cp, opened = open_checkpoint(signed, log_verifiers)
    witness_names = _verify_witnesses(opened, witnesses)
    old = _trusted_checkpoint(trusted, log_verifiers, cp)
    checker = _TreeChecker(cp.size, old.size if old else None)
    fetched = len(signed)
    with contextlib.closing(_in_order(_tile_jobs(fetch, cp.size), workers)) as tiles:
        for level, n, width, hashes, bundle in tiles:
            fetched += len(hashes) + (len(bundle) if bundle is not None else 0)
            if level == 0:
                checker.leaf_tile(n, width, hashes, bundle)
            else:
                checker.upper_tile(level, n, width, hashes)
    root = checker.root()
    if root != cp.root:
        raise TilesError(
            f"the root computed from the tiles ({_b64(root)}) is not the checkpoint's ({_b64(cp.root)}) at tree "
            f"size {cp.size}"
        )
    if old is not None and checker.old_root != old.root:
        raise TilesForkError(
            f"fork: the trusted checkpoint has root {_b64(old.root)} at tree size {old.size}, but the published "
            f"tree of size {cp.size} has root {_b64(checker.old_root or b'')} there"
        )
    return TilesReport(
        origin=cp.origin,
        size=cp.size,
        root=cp.root,
        signed=signed,
        witnesses=witness_names,
        entries_checked=checker.entries,
        tiles_checked=checker.tiles,
        bundles_checked=checker.bundles,
        bytes_fetched=fetched,
        trusted_size=old.size if old else None,
    )


# --- Signatures and the trusted checkpoint ------------------------------------------------------------------


def _verify_witnesses(opened: Note, witnesses: Sequence[CosignatureVerifier]) -> tuple[str, ...]:
    """Every witness must have cosigned this note text (tlog-cosignature v1); a missing line is a failure."""
    names: list[str] = []
    for witness in dict.fromkeys(witnesses):
        lines = [s for s in opened.signatures if witness.matches(s)]
        if not lines:
            raise NoteError(f"the checkpoint carries no cosignature by witness {witness.name}+{witness.key_id:08x}")
        # As signed-note verifiers do, a key counts once: its first line is the one that must verify.
        verify_cosignature(witness, lines[0], opened.text)
        names.append(witness.name)
    return tuple(names)


def _trusted_checkpoint(trusted: bytes | None, log_verifiers: Sequence[Verifier], new: Checkpoint) -> Checkpoint | None:
    """The trusted checkpoint, verified; refuse a rollback or a same-size fork before any tile is read."""
    if trusted is None:
        return None
    try:
        old, _ = open_checkpoint(trusted, log_verifiers)
    except NoteError as e:
        raise NoteError(f"the trusted checkpoint does not verify with the given log keys: {e}") from e
    if old.origin != new.origin:
        # Another log altogether (the state of another location?): a usage error, not evidence about this log.
        raise ConfigError(f"the trusted checkpoint is for origin {old.origin!r}, the location for {new.origin!r}")
    if new.size < old.size:
        raise TilesRollbackError(
            f"rollback: the location publishes tree size {new.size}, smaller than the trusted tree size {old.size}"
        )
    if new.size == old.size and new.root != old.root:
        raise TilesForkError(
            f"fork: two signed checkpoints of tree size {new.size} with different roots: trusted "
            f"{_b64(old.root)}, published {_b64(new.root)}"
        )
    return old


# --- Fetching ------------------------------------------------------------------------------------------------

_TileData = tuple[int, int, int, bytes, bytes | None]
"""(level, index, width, hash tile, entry bundle or None above level 0)."""


def _tile_jobs(fetch: Fetch, size: int) -> Iterator[Callable[[], _TileData]]:
    """One fetch job per hash tile of the tree, in ``tiles_for_size`` order (level 0 first, with its bundle)."""
    for level, n, width in tiles_for_size(size):

        def job(level: int = level, n: int = n, width: int = width) -> _TileData:
            hashes = _fetch_hash_tile(fetch, level, n, width)
            bundle = _fetch_bundle(fetch, n, width) if level == 0 else None
            return level, n, width, hashes, bundle

        yield job


def _fetch_hash_tile(fetch: Fetch, level: int, n: int, width: int) -> bytes:
    path = tile_path(level, n, width)
    data = fetch(path)
    if data is None and width < TILE_WIDTH:
        full = fetch(tile_path(level, n))
        if full is not None:  # the log replaced the partial tile by the full one: its first hashes are the same
            if len(full) != TILE_WIDTH * _HASH:
                raise TilesError(f"full tile {tile_path(level, n)} is {len(full)} bytes, want {TILE_WIDTH * _HASH}")
            return full[: width * _HASH]
    if data is None:
        raise TilesError(f"tile {path} is not served, but the checkpoint's tree needs it")
    if len(data) != width * _HASH:
        raise TilesError(f"tile {path} is {len(data)} bytes, want {width * _HASH} ({width} hashes)")
    return data


def _fetch_bundle(fetch: Fetch, n: int, width: int) -> bytes:
    """The bundle's bytes, cut to ``width`` entries when the full bundle stands in for a deleted partial one."""
    path = entry_bundle_path(n, width)
    data = fetch(path)
    if data is None and width < TILE_WIDTH:
        full_path = entry_bundle_path(n)
        full = fetch(full_path)
        if full is not None:
            entries = split_bundle(full, TILE_WIDTH, full_path)[:width]
            return b"".join(len(e).to_bytes(2, "big") + e for e in entries)
    if data is None:
        raise TilesError(f"entry bundle {path} is not served, but the checkpoint's tree needs it")
    return data


def _in_order(jobs: Iterable[Callable[[], _T]], workers: int) -> Generator[_T, None, None]:
    """The jobs' results in order, up to ``2 * workers`` of them fetched ahead; pending ones cancelled on close."""
    if workers <= 1:
        for job in jobs:
            yield job()
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="verify-tiles")
    window: deque[Future[_T]] = deque()
    pending = iter(jobs)
    try:
        window.extend(pool.submit(job) for job in islice(pending, 2 * workers))
        while window:
            result = window.popleft().result()
            window.extend(pool.submit(job) for job in islice(pending, 1))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- Checking the tree ---------------------------------------------------------------------------------------


def split_bundle(data: bytes, width: int, path: str) -> list[bytes]:
    """The entries of a bundle: each a big-endian u16 length and that many bytes (tlog-tiles "Log entries")."""
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            raise TilesError(f"entry bundle {path} ends inside the length of entry {len(entries)}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > end:
            raise TilesError(f"entry bundle {path} ends inside entry {len(entries)} ({length} bytes announced)")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != width:
        raise TilesError(f"entry bundle {path} holds {len(entries)} entries, want {width}")
    return entries


def _full_tile_root(hashes: bytes) -> bytes:
    """MTH of a full tile's 256 hashes: a perfect subtree, so plain pairwise hashing (RFC 6962 §2.1)."""
    level = [hashes[i : i + _HASH] for i in range(0, len(hashes), _HASH)]
    while len(level) > 1:
        level = [tree.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class _TreeChecker:
    """Checks tiles as they arrive in ``tiles_for_size`` order and folds the leaves into the tree's root."""

    def __init__(self, size: int, old_size: int | None) -> None:
        self._old_size = old_size
        self._frontier = tree.Frontier()
        # MTHs of the full tiles of the level below, which the tiles of the next level must hold, in order.
        self._below: list[bytes] = []
        self._current: list[bytes] = []
        self._level = 0
        self.old_root: bytes | None = tree.EMPTY_ROOT if old_size == 0 else None
        self.entries = self.tiles = self.bundles = 0

    def leaf_tile(self, n: int, width: int, hashes: bytes, bundle: bytes | None) -> None:
        path, bundle_path = tile_path(0, n, width), entry_bundle_path(n, width)
        entries = split_bundle(bundle or b"", width, bundle_path)
        leaves = [hashes[i * _HASH : (i + 1) * _HASH] for i in range(width)]
        for i, (data, leaf) in enumerate(zip(entries, leaves, strict=True)):
            if tree.leaf_hash(data) != leaf:
                raise TilesError(
                    f"entry {n * TILE_WIDTH + i} (bundle {bundle_path}, position {i}) does not hash to its leaf "
                    f"hash in tile {path}"
                )
        start = n * TILE_WIDTH
        old = self._old_size
        if old is not None and start < old <= start + width:  # the trusted tree ends in this tile
            self._frontier.extend(leaves[: old - start])
            self.old_root = self._frontier.root()
            self._frontier.extend(leaves[old - start :])
        else:
            self._frontier.extend(leaves)
        if width == TILE_WIDTH:
            self._current.append(_full_tile_root(hashes))
        self.entries += width
        self.tiles += 1
        self.bundles += 1

    def upper_tile(self, level: int, n: int, width: int, hashes: bytes) -> None:
        if level != self._level:  # the first tile of a new level: the level below is complete
            self._below, self._current, self._level = self._current, [], level
        path = tile_path(level, n, width)
        for i in range(width):
            index = n * TILE_WIDTH + i
            if index >= len(self._below) or hashes[i * _HASH : (i + 1) * _HASH] != self._below[index]:
                raise TilesError(f"hash {i} of tile {path} is not the hash of tile {tile_path(level - 1, index)}")
        if width == TILE_WIDTH:
            self._current.append(_full_tile_root(hashes))
        self.tiles += 1

    def root(self) -> bytes:
        return self._frontier.root()


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")
