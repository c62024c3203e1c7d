"""Opening a ledger directory for serving: keys, store, recovery check, writer.

Layout of a data directory::

    <data_dir>/ledger/        LMDB environment (see store.py)
    <data_dir>/keys/          signing.key, redaction.key (mode 0600)
    <data_dir>/checkpoint     the latest signed checkpoint, replaced atomically

Before serving, the ledger is verified in full by the one verification core (ledger/trust.py): every entry
against its leaf hash, the tree against every signed checkpoint, the chain, the head, the decision-id index and
the ``checkpoint`` file. The service signs new checkpoints over this history, so it must never sign one it has
not checked; on any mismatch it refuses to start, naming the first bad sequence number.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from authz_ledger import keys
from authz_ledger.config import LedgerConfig, RedactionConfig
from authz_ledger.errors import LedgerCorruptError, LedgerError, RollbackError
from authz_ledger.ledger.files import write_file_atomically
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.trust import Trust, verify_ledger
from authz_ledger.ledger.verify import VerifyReport
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions
from authz_ledger.record.redact import DEFAULT_DIGEST_HEADERS, DEFAULT_DIGEST_QUERY_PARAMS, RedactionRules, Redactor
from authz_ledger.tlog import checkpoint, note

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


def redaction_rules(cfg: RedactionConfig, *, announce: bool = True) -> RedactionRules:
    """The effective redaction: each list, or the default it replaces, plus its ``…_extra`` additions; logged at
    start-up (``announce``) with a warning for every default an explicit list dropped."""
    rules = RedactionRules.build(
        [*cfg.digest_headers, *cfg.digest_headers_extra],
        cfg.remove_headers,
        [*cfg.digest_query_params, *cfg.digest_query_params_extra],
        cfg.body,
        cfg.name_pattern,
        cfg.detect_values,
    )
    if announce:
        for key, defaults, given in (
            ("digest_headers", DEFAULT_DIGEST_HEADERS, rules.digest_headers),
            ("digest_query_params", DEFAULT_DIGEST_QUERY_PARAMS, rules.digest_query_params),
        ):
            dropped = sorted(set(defaults) - given)
            if dropped:
                log.warning(
                    "ledger.redaction.%s replaces the defaults: %s are no longer digested by name "
                    "(add names with ledger.redaction.%s_extra instead)", key, ", ".join(dropped), key,
                )  # fmt: skip
        log.info("redaction in force: %s", rules.describe())
    return rules


def open_for_serving(cfg: LedgerConfig) -> OpenLedger:
    paths = LedgerPaths(Path(cfg.data_dir).expanduser())
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for directory, what in ((paths.data_dir, "data directory"), (paths.signing_key.parent, "keys directory")):
        if directory.exists():
            keys.check_directory(directory, what)
    lock = _lock_data_dir(paths)
    signers, created = load_signers(cfg, paths)
    names = {s.name for s in signers}
    if cfg.origin not in names:
        raise LedgerError(
            f"no signing key is named after the origin {cfg.origin!r} (keys: {', '.join(sorted(names))}); "
            "C2SP tlog-checkpoint binds a log's identity to its origin"
        )
    redactor = Redactor(redaction_rules(cfg.redaction), keys.load_or_create_redaction_key(paths.redaction_key))
    store = Store(paths.store, map_size=cfg.map_size_mb << 20)
    try:
        verifiers = [note.Verifier.from_vkey(s.verifier_key()) for s in signers]
        if cfg.verifier_keys:
            verifiers += keys.load_verifiers(cfg.verifier_keys)
        report = verify_before_serving(store, cfg, paths, verifiers)
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


def verify_before_serving(
    store: Store, cfg: LedgerConfig, paths: LedgerPaths, verifiers: list[note.Verifier]
) -> VerifyReport:
    """Everything the service will sign over, checked before it serves (progress in the log)."""
    total = store.head().size
    mode = (
        "after the latest checkpoint only (ledger.unsafe_verify_tail_only)"
        if cfg.unsafe_verify_tail_only
        else "in full"
    )
    log.info(
        "verifying the ledger (%d entries) %s before serving: every page of data.mdb, then every entry", total, mode
    )
    started = time.monotonic()
    last_log = [started]

    def progress(done: int, of: int) -> None:
        now = time.monotonic()
        if now - last_log[0] >= 2.0:
            last_log[0] = now
            log.info("verifying the ledger: %d of %d entries (%.0f s)", done, of, now - started)

    trust = Trust(verifiers, cfg.origin, paths.checkpoint, unsafe_allow_unsigned=cfg.unsafe_allow_unsigned)
    try:
        report = verify_ledger(store, trust, unsafe_tail_only=cfg.unsafe_verify_tail_only, progress=progress)
    except LedgerCorruptError as e:
        raise LedgerCorruptError(
            f"refusing to start: {e}. Restore the data directory from a backup (or investigate: "
            f"authz-ledger verify --data-dir {paths.data_dir} --vkey VKEY --json)",
            e.seq,
            last_seq=e.last_seq,
        ) from e
    except RollbackError as e:
        raise RollbackError(f"{e}; refusing to start") from e
    log.info(
        "ledger verified: %d entries, %d signed checkpoints, root at size %d, in %.2f s",
        report.size, report.checkpoints, report.size, time.monotonic() - started,
    )  # fmt: skip
    return report
