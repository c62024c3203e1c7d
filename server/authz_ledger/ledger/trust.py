"""The one verification core: what ``serve`` start-up, ``verify`` and ``export`` check before they trust a ledger.

No path may be weaker than another, so all of them call :func:`verify_ledger`:

1. the sweep of ledger/verify.py over every entry: leaf hashes (RFC 6962 §2.1), stored tree hashes, the batch
   chain, the head, the decision-id index, and every stored checkpoint -- signed by a trusted key and with a root
   equal to the recomputed tree at its size (C2SP tlog-checkpoint);
2. a non-empty ledger must have a signed checkpoint: internal consistency proves nothing against someone who
   rewrote the whole store without the key, only a signature does (the service signs within a second of its
   first commit, and at shutdown). ``unsafe_allow_unsigned`` accepts a ledger that crashed before that;
3. the ``checkpoint`` file, written beside the store after every checkpoint, must not show a larger tree or
   another root: it outlives a store restored from an old copy.

``unsafe_tail_only`` (serve's ``ledger.unsafe_verify_tail_only``) re-verifies only what follows the latest
checkpoint: faster on a huge ledger, but an entry changed under that checkpoint then goes unnoticed until
``verify`` runs -- and the service would extend and sign the altered history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from authz_ledger.errors import LedgerCorruptError, NoteError, RollbackError
from authz_ledger.ledger import integrity
from authz_ledger.ledger.rollback import check_published_tree
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import Progress, VerifyReport, verify_store
from authz_ledger.tlog import checkpoint, note

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Trust:
    """What a ledger is checked against."""

    verifiers: Sequence[note.Verifier]
    """Every key whose checkpoint signatures count: the signing keys, plus retired ones for older checkpoints."""
    origin: str | None = None
    checkpoint_file: Path | None = None
    unsafe_allow_unsigned: bool = False


def verify_ledger(
    store: Store, trust: Trust, *, unsafe_tail_only: bool = False, progress: Progress | None = None
) -> VerifyReport:
    """(See the module docstring.) A store opened writable was walked page by page at open (Store); a read-only
    one is walked here."""
    """Verify ``store`` against ``trust``; raise LedgerCorruptError (naming the first bad sequence number) or
    RollbackError."""
    # Read the file before the store's snapshot: the writer stores a checkpoint before it writes the file, so an
    # honest file can never be ahead of a snapshot taken after it, even while the service runs.
    published = _read_checkpoint_file(trust.checkpoint_file)
    # Every page LMDB will follow, checked first: a damaged page is LedgerFileError, never a signal mid-verify.
    if not store.walked_at_open:
        integrity.check_structure(store.env, store.path)
    report = verify_store(
        store, trust.verifiers, origin=trust.origin, from_latest_checkpoint=unsafe_tail_only, progress=progress
    )
    if report.size > 0 and report.latest_checkpoint is None and not trust.unsafe_allow_unsigned:
        raise LedgerCorruptError(
            f"{report.size} entries and no signed checkpoint: nothing vouches for them (the checkpoints were "
            "removed, or the service crashed before its first one; to accept the latter, allow it explicitly: "
            "verify --allow-unsigned, serve with ledger.unsafe_allow_unsigned = true)",
            0,
            last_seq=report.size - 1,
        )
    if published is not None and trust.checkpoint_file is not None:
        check_checkpoint_file(trust.checkpoint_file, published, store, report.size, trust.verifiers)
    return report


def _read_checkpoint_file(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RollbackError(f"cannot read {path}: {e}") from e


def check_checkpoint_file(
    path: Path, signed: bytes, store: Store, size: int, verifiers: Sequence[note.Verifier]
) -> None:
    """The ``checkpoint`` file against a verified ledger of ``size`` entries.

    Signed by a trusted key: it must not be larger than the ledger, and its root must be the ledger's at its
    size. Not verifiable (a retired key, damage): it can vouch for no root, but a larger size in it still means
    entries went missing -- fail closed on that, ignore it otherwise.
    """
    try:
        cp, _ = checkpoint.open_checkpoint(signed, verifiers)
        authentic = True
    except NoteError as e:
        text, _, _ = signed.partition(b"\n\n")
        try:
            cp = checkpoint.Checkpoint.parse(text + b"\n")
        except NoteError:
            log.warning("ignoring %s: %s", path, e)
            return
        authentic = False
    check_published_tree(
        path, cp, authentic, store, size,
        what="published", vouched="is signed by a trusted key", unverified="no trusted key signed it",
    )  # fmt: skip
