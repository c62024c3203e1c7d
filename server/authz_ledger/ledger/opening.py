"""Opening a ledger directory for serving: keys, store, recovery check, writer.

Layout of a data directory::

    <data_dir>/ledger/        LMDB environment (see store.py)
    <data_dir>/keys/          signing.key, redaction.key (mode 0600)
    <data_dir>/checkpoint     the latest signed checkpoint, replaced atomically

On start the ledger re-verifies everything after its last checkpoint (tree hashes, chain, head, signature) and
refuses to start on a mismatch, naming the first bad sequence number. It also refuses to start when the
``checkpoint`` file shows a larger tree than the store holds: an old copy of the store was restored (rollback).
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from authz_ledger import keys
from authz_ledger.config import LedgerConfig
from authz_ledger.errors import LedgerError, NoteError, RollbackError
from authz_ledger.ledger.files import write_file_atomically
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import VerifyReport, verify_store
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions
from authz_ledger.record.redact import RedactionRules, Redactor
from authz_ledger.tlog import checkpoint, note, tree

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LedgerPaths:
    data_dir: Path

    @property
    def store(self) -> Path:
        return self.data_dir / "ledger"

    @property
    def keys(self) -> Path:
        return self.data_dir / "keys"

    @property
    def signing_key(self) -> Path:
        return self.keys / keys.SIGNING_KEY_FILE

    @property
    def redaction_key(self) -> Path:
        return self.keys / keys.REDACTION_KEY_FILE

    @property
    def checkpoint(self) -> Path:
        return self.data_dir / "checkpoint"


@dataclass
class OpenLedger:
    paths: LedgerPaths
    store: Store
    writer: LedgerWriter
    redactor: Redactor
    signers: list[note.Signer]
    recovery: VerifyReport
    created_key: bool
    lock_fd: int = -1
    """The data directory's serve.lock, held until close()."""

    def close(self) -> None:
        """Close the store and release the data directory (after the writer has stopped)."""
        self.store.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def load_signers(cfg: LedgerConfig, paths: LedgerPaths) -> tuple[list[note.Signer], bool]:
    if cfg.signing_keys:
        return [keys.load_signing_key(Path(p)) for p in cfg.signing_keys], False
    signer, created = keys.load_or_create_signing_key(paths.signing_key, cfg.origin)
    return [signer], created


def open_for_serving(cfg: LedgerConfig) -> OpenLedger:
    paths = LedgerPaths(Path(cfg.data_dir).expanduser())
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _lock_data_dir(paths)
    signers, created = load_signers(cfg, paths)
    names = {s.name for s in signers}
    if cfg.origin not in names:
        raise LedgerError(
            f"no signing key is named after the origin {cfg.origin!r} (keys: {', '.join(sorted(names))}); "
            "C2SP tlog-checkpoint binds a log's identity to its origin"
        )
    redactor = Redactor(
        RedactionRules.build(
            cfg.redaction.digest_headers,
            cfg.redaction.remove_headers,
            cfg.redaction.digest_query_params,
            cfg.redaction.body,
        ),
        keys.load_or_create_redaction_key(paths.redaction_key),
    )
    store = Store(paths.store, map_size=cfg.map_size_mb << 20)
    try:
        verifiers = [note.Verifier.from_vkey(s.verifier_key()) for s in signers]
        report = verify_store(store, verifiers, origin=cfg.origin, from_latest_checkpoint=True)
        _check_rollback(paths, store, verifiers)
        _sign_latest_with_every_key(paths, store, signers, verifiers)
        writer = LedgerWriter(
            store,
            signers,
            cfg.origin,
            WriterOptions(
                durability=Durability(cfg.durability),
                queue_size=cfg.queue_size,
                enqueue_timeout_s=cfg.enqueue_timeout_ms / 1000,
                commit_timeout_s=cfg.commit_timeout_ms / 1000,
                batch_max_entries=cfg.batch_max_entries,
                checkpoint_interval_s=cfg.checkpoint_interval_ms / 1000,
                map_max_size=cfg.map_max_size_mb << 20,
                overload_http_status=cfg.overload_http_status,
            ),
            checkpoint_file=paths.checkpoint,
        )
    except BaseException:
        store.close()
        os.close(lock)
        raise
    return OpenLedger(paths, store, writer, redactor, signers, report, created, lock)


def _lock_data_dir(paths: LedgerPaths) -> int:
    """One serving process per data directory: an exclusive lock held for the life of the process.

    LMDB lets two processes write one after the other; two writers each holding their own idea of the head
    would interleave batches. Readers (CLI, exports, other processes) never take this lock.
    """
    fd = os.open(paths.data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise LedgerError(
            f"{paths.data_dir} is already served by another authz-ledger process (serve.lock is held)"
        ) from e
    return fd


def _sign_latest_with_every_key(
    paths: LedgerPaths, store: Store, signers: list[note.Signer], verifiers: list[note.Verifier]
) -> None:
    """Key rotation: add each configured key's missing signature to the latest checkpoint (same text).

    Without it, a rotation whose overlap period signed nothing new would leave the latest checkpoint signed by
    the retired key only, and the next start (new key alone) could not verify it.
    """
    latest = store.checkpoint()
    if latest is None:
        return
    size, signed = latest
    _, opened = checkpoint.open_checkpoint(signed, verifiers)
    have = {(s.name, s.key_id) for s in opened.verified}
    missing = [s for s in signers if (s.name, s.key_id) not in have]
    if missing:
        resigned = note.add_signatures(signed, missing)
        store.put_checkpoint(size, resigned, replace=True)
        write_file_atomically(paths.checkpoint, resigned)
        log.info("added %d signature(s) to the checkpoint at size %d (key rotation)", len(missing), size)


def _check_rollback(paths: LedgerPaths, store: Store, verifiers: list[note.Verifier]) -> None:
    """The checkpoint file outlives a restored store: a larger size there means entries were lost."""
    try:
        signed = paths.checkpoint.read_bytes()
    except FileNotFoundError:
        return
    head = store.head()
    try:
        cp, _ = checkpoint.open_checkpoint(signed, verifiers)
    except NoteError as e:
        # Signed by a key we no longer hold (or damaged): it cannot vouch for a root, but a larger size in it
        # still means entries went missing -- fail closed on that, ignore it otherwise.
        try:
            text, _, _ = signed.partition(b"\n\n")
            claimed = checkpoint.Checkpoint.parse(text + b"\n")
        except NoteError:
            log.warning("ignoring %s: %s", paths.checkpoint, e)
            return
        if claimed.size > head.size:
            raise RollbackError(
                f"{paths.checkpoint} claims a tree of size {claimed.size} (its signature does not verify with the "
                f"configured keys: {e}) but the ledger holds only {head.size} entries; refusing to start"
            ) from e
        log.warning("ignoring %s: %s", paths.checkpoint, e)
        return
    if cp.size <= head.size and cp.size > 0 and tree.tree_hash(cp.size, store.read_hashes) != cp.root:
        raise RollbackError(
            f"{paths.checkpoint} (size {cp.size}) is signed by our key but disagrees with the ledger's tree at "
            "that size: the ledger was replaced by a different history; refusing to start"
        )
    if cp.size > head.size:
        raise RollbackError(
            f"{paths.checkpoint} shows a published tree of size {cp.size} but the ledger holds only "
            f"{head.size} entries: an older copy of the ledger was restored or entries were lost; "
            "refusing to start"
        )
