"""Rollback defence at start: a ledger that restarts smaller than what was published or witnessed refuses to start.

Three sources vouch for how large the tree once was:

a. the ``checkpoint`` file beside the store (``opening._check_rollback``);
b. the ``witnessed`` file beside it: the latest cosigned checkpoint, replaced atomically by the witness publisher
   after each success (:func:`check_witnessed_file`, here);
c. the witnesses themselves: at start the current checkpoint is submitted with ``old`` = its own size; a witness
   that cosigned a larger tree answers 409 with that size, and the ledger refuses to start naming it
   (``WitnessPublisher.check_witnesses``).

Restoring the whole data directory (store, ``checkpoint`` and ``witnessed`` files together) defeats (a) and (b),
which live on the same disk; it does not defeat (c), which lives on other machines -- as long as one witness that
saw the larger tree is reachable at start. A witness that cannot be reached at start is logged and skipped: the
authorization service does not depend on witness availability.

(b) is checked even when no witness is configured any more: the file an earlier configuration left still proves
the tree's size, with the log's keys.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from authz_ledger.errors import NoteError, RollbackError
from authz_ledger.ledger.store import Store
from authz_ledger.tlog import checkpoint, note, tree
from authz_ledger.tlog.cosignature import CosignatureVerifier

# The witness publisher's logger: this check moved here from it, and operators find its warning under that name.
log = logging.getLogger("authz_ledger.witness.publisher")

WITNESSED_FILE = "witnessed"
"""File name, in the data directory, of the latest cosigned checkpoint (rollback source (b))."""


def check_witnessed_file(
    path: Path | None,
    store: Store,
    origin: str,
    log_verifiers: Sequence[note.Verifier],
    witness_verifiers: Sequence[CosignatureVerifier],
) -> None:
    """Rollback source (b): the ``witnessed`` file must not show a larger tree than the store holds.

    The file counts as authentic when a signature by the log's keys or a cosignature by a configured witness
    verifies (after a key rotation the log key that signed it may be retired; the witness keys are stable). An
    authentic file disagreeing with our tree at its size, or any file showing a larger size, refuses the start
    (fail closed: remove the file only when you know why it disagrees). An unverifiable file that claims no
    more than the store holds is ignored with a warning.
    """
    if path is None:
        return
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as e:
        raise RollbackError(f"cannot read {path}: {e}; refusing to start") from e
    try:
        opened = note.open_note(data, [*log_verifiers, *witness_verifiers])
        text, authentic = opened.text, True
    except NoteError:
        split = data.rfind(b"\n\n")
        text, authentic = (data[: split + 1] if split >= 0 else data), False
    try:
        cp = checkpoint.Checkpoint.parse(text)
    except NoteError as e:
        raise RollbackError(f"{path} is not a checkpoint ({e}); refusing to start") from e
    if cp.origin != origin:
        raise RollbackError(f"{path} is a checkpoint of {cp.origin!r}, not of {origin!r}; refusing to start")
    check_published_tree(
        path, cp, authentic, store, store.head().size,
        what="witnessed", vouched="was witnessed",
        unverified="no signature by a configured log or witness key verifies", suffix="; refusing to start",
    )  # fmt: skip


def check_published_tree(
    path: Path,
    cp: checkpoint.Checkpoint,
    authentic: bool,
    store: Store,
    size: int,
    *,
    what: str,
    vouched: str,
    unverified: str,
    suffix: str = "",
) -> None:
    """A tree published beside the store (the ``checkpoint`` file, the ``witnessed`` file) against a ledger of
    ``size`` entries. Any file showing a larger tree means entries went missing (fail closed, authentic or not);
    an authentic one must also have the ledger's root at its size; an unverifiable one vouches for no root and is
    otherwise ignored with a warning."""
    if cp.size > size:
        raise RollbackError(
            f"{path} shows a {what} tree of size {cp.size} but the ledger holds only {size} entries"
            + ("" if authentic else f" ({unverified})")
            + ": an older copy of the ledger was restored or entries were lost"
            + suffix
        )
    if not authentic:
        log.warning("ignoring %s: %s", path, unverified)
        return
    if cp.size > 0 and tree.tree_hash(cp.size, store.read_hashes) != cp.root:
        raise RollbackError(
            f"{path} (size {cp.size}) {vouched} but disagrees with the ledger's tree at that size: the ledger was "
            "replaced by a different history" + suffix
        )
