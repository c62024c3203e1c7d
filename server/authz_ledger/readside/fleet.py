"""A fleet read as one: several replicas, each with its own ledger (a *shard*), merged into one time-ordered view.

Every replica of a fleet signs its own log: its own origin, its own key, its own tree. A merged view is only as
trustworthy as the weakest shard in it, so each row is checked against *its own* shard's trust root:

* A shard is named by its origin, the first line of its latest signed checkpoint (C2SP tlog-checkpoint "Note
  text"). :class:`VerifiedShard` opens that checkpoint once with the trusted keys, and only a signature by a key
  *named like that origin* counts (``open_checkpoint``): a key trusted for one shard cannot vouch for another.
* A row verifies when its inclusion proof leads from the leaf hash of the row's own stored bytes (RFC 9162
  §2.1.1) to the root of that opened checkpoint (RFC 9162 §2.1.3.2). The signature is checked once per shard, a
  proof per row: a page of rows costs one signature and a few hashes each.
* Fail closed: a shard whose checkpoint does not open, or a row that does not lead to its shard's root, is an
  error naming the shard (and the entry). A row appended after the shard's latest checkpoint cannot be checked
  yet: it is shown as not verified (``verified=False``), never passed off as checked.

Order: decision time (``time_unix_nano``), ties by shard (origin) then index. Times are not monotonic within a
ledger (time_index.py explains why), so the merge sorts what it selected rather than interleaving the shards'
sequence orders; with a limit only the ``limit`` earliest rows are kept while reading (``heapq.nsmallest``).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence

from authz_ledger.errors import AuthzLedgerError, ConfigError, NoteError, NotFoundError, ProofError
from authz_ledger.readside.client import LocalSource, RemoteSource, Source
from authz_ledger.readside.values import StoredEntry
from authz_ledger.tlog import note, proof, tree
from authz_ledger.tlog.checkpoint import open_checkpoint


class VerifiedShard:
    """One shard of a fleet: its source, its name (origin) and its latest checkpoint, opened with a trusted key."""

    def __init__(self, source: Source, where: str, verifiers: Sequence[note.Verifier]) -> None:
        self.source = source
        self.where = where
        """How the user named it (``--data-dir DIR``, ``--server ADDR``): for errors about a shard of no name yet."""
        try:
            signed = source.checkpoint(None)
        except NotFoundError as e:
            raise NotFoundError(
                f"{where}: no signed checkpoint yet, so this shard has no name (origin) and nothing its rows could "
                "be verified against; list it again after its first checkpoint, or leave it out"
            ) from e
        try:
            cp, _ = open_checkpoint(signed.note, verifiers)
        except NoteError as e:
            raise NoteError(
                f"shard {signed.origin!r} ({where}): its latest checkpoint (tree size {signed.size}) does not verify "
                f"with any given --vkey named like its origin: {e}"
            ) from e
        self.origin = cp.origin
        self.size = cp.size
        self.root = cp.root

    def verify(self, e: StoredEntry) -> bool:
        """True when ``e`` is in the signed tree; False when the latest checkpoint does not cover it yet.

        ProofError naming the shard and the entry when the row's bytes do not lead to the signed root.
        """
        if e.index >= self.size:
            return False
        try:
            p = self.source.inclusion(e.index, self.size)
            if p.index != e.index or p.tree_size != self.size:
                raise ProofError(f"asked for entry {e.index} at tree size {self.size}, got {p.index} at {p.tree_size}")
            # From the bytes this row shows, not the proof's own leaf: the proof must vouch for what is printed.
            proof.verify_inclusion(e.index, self.size, tree.leaf_hash(e.raw), p.hashes, self.root)
        except AuthzLedgerError as err:
            raise name_the_shard(err, f"shard {self.origin!r} ({self.where}), entry {e.index}") from None
        return True

    def entries(self, entries: Iterator[StoredEntry]) -> Iterator[StoredEntry]:
        """``entries`` read from this shard, an error on the way naming the shard."""
        try:
            yield from entries
        except AuthzLedgerError as err:
            raise name_the_shard(err, f"shard {self.origin!r} ({self.where})") from None


def name_the_shard(err: AuthzLedgerError, label: str) -> AuthzLedgerError:
    """``err`` with ``label`` in front of its message: the same class (so the same exit code and attributes,
    such as LedgerCorruptError.seq), now saying which shard of the fleet it is about."""
    err.args = (f"{label}: {err.args[0] if err.args else type(err).__name__}", *err.args[1:])
    return err


def check_distinct(shards: Iterable[VerifiedShard]) -> None:
    """Two sources of one origin are one shard given twice (or two replicas sharing a log name): refuse both."""
    seen: dict[str, str] = {}
    for s in shards:
        if s.origin in seen:
            raise ConfigError(f"{seen[s.origin]} and {s.where} are the same shard {s.origin!r}: give each shard once")
        seen[s.origin] = s.where


def merge_by_time(
    streams: Sequence[tuple[VerifiedShard, Iterator[StoredEntry]]], limit: int | None
) -> list[tuple[VerifiedShard, StoredEntry]]:
    """The rows of every stream in decision-time order (ties: shard origin, then index), at most ``limit``."""
    rows: Iterator[tuple[VerifiedShard, StoredEntry]] = itertools.chain.from_iterable(
        ((shard, e) for e in entries) for shard, entries in streams
    )

    def key(row: tuple[VerifiedShard, StoredEntry]) -> tuple[int, str, int]:
        shard, e = row
        return e.message.time_unix_nano, shard.origin, e.index

    if limit is not None:
        return heapq.nsmallest(limit, rows, key=key)
    return sorted(rows, key=key)


def open_sources(
    data_dirs: Sequence[str], servers: Sequence[str], ca: str | None, cert: str | None, key: str | None
) -> list[tuple[str, Source]]:
    """The sources named on a command line, each with how it was named (for errors); at least one.

    The TLS flags apply to every ``--server``; they are refused without one (as for a single source).
    """
    if not data_dirs and not servers:
        raise ConfigError("give at least one --data-dir DIR (local, read-only) or --server ADDR (audit API)")
    if not servers and (ca or cert or key):
        raise ConfigError("--ca, --cert and --key are for --server")
    for given in (data_dirs, servers):
        twice = sorted({x for x in given if list(given).count(x) > 1})
        if twice:
            raise ConfigError(f"{twice[0]} is given twice: give each shard once")
    opened: list[tuple[str, Source]] = []
    try:
        for d in data_dirs:
            opened.append((f"--data-dir {d}", LocalSource(d)))
        for s in servers:
            opened.append((f"--server {s}", RemoteSource(s, ca, cert, key)))
    except BaseException:
        for _, src in opened:
            src.close()
        raise
    return opened
