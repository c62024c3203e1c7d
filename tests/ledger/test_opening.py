"""Serving never signs a history it has not verified: start-up runs the same verification as ``verify``.

Each case tampers with the data directory of a stopped service, as an attacker with disk access (but not the
signing key) would, and opens it for serving.
"""

from __future__ import annotations

import logging
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from authz_ledger.config import LedgerConfig
from authz_ledger.errors import LedgerCorruptError, LedgerError, PermissionsError, RollbackError
from authz_ledger.keys import load_or_create_signing_key
from authz_ledger.ledger.opening import LedgerPaths, open_for_serving
from authz_ledger.ledger.store import Store, u64
from authz_ledger.tlog import checkpoint, tree
from tests.conftest import ORIGIN, make_writer
from tests.support.entries import pending

N = 40


def _stopped_service(data_dir: Path) -> None:
    """A data directory as a service leaves it: N entries, a checkpoint in the store and in the file."""
    paths = LedgerPaths(data_dir)
    signer, _ = load_or_create_signing_key(paths.signing_key, ORIGIN)
    store = Store(paths.store, map_size=64 << 20)
    writer = make_writer(store, signer)
    writer.checkpoint_file = paths.checkpoint
    for start in range(0, N, 8):
        writer._commit([pending(f"e{i}") for i in range(start, start + 8)])
    writer._publish_checkpoint(force=True)
    store.close()


def _config(data_dir: Path, **options: object) -> LedgerConfig:
    return LedgerConfig(data_dir=str(data_dir), origin=ORIGIN, map_size_mb=64, **options)  # type: ignore[arg-type]


def _open(data_dir: Path, **options: object) -> int:
    opened = open_for_serving(_config(data_dir, **options))
    try:
        return opened.recovery.size
    finally:
        opened.close()


def _edit(data_dir: Path, change: Callable[[Store], None]) -> None:
    store = Store(LedgerPaths(data_dir).store, map_size=64 << 20)
    try:
        change(store)
    finally:
        store.close()


def _put(store: Store, db: str, key: bytes, value: bytes | None) -> None:
    with store.env.begin(write=True) as txn:
        if value is None:
            txn.delete(key, db=getattr(store, db))
        else:
            txn.put(key, value, db=getattr(store, db))


def alter_entry_under_the_checkpoint(store: Store) -> None:
    data = bytearray(store.entry(5) or b"")
    data[-1] ^= 1
    _put(store, "entries", u64(5), bytes(data))


def rewrite_history_and_remove_the_checkpoints(store: Store) -> None:
    """Every hash recomputed over a changed entry, then the checkpoints table emptied (the file goes too)."""
    entries = [store.entry(i) or b"" for i in range(N)]
    entries[5] = entries[5][:-1] + bytes([entries[5][-1] ^ 1])
    _put(store, "entries", u64(5), entries[5])
    for i, h in enumerate(tree.Frontier().extend([tree.leaf_hash(e) for e in entries])):
        _put(store, "hashes", u64(i), h)
    drop_checkpoints(store)


def drop_checkpoints(store: Store) -> None:
    with store.env.begin(write=True) as txn:
        txn.drop(store.checkpoints, delete=False)


def redirect_an_index_row(store: Store) -> None:
    with store.env.begin() as txn:
        rows = [(bytes(k), bytes(v)) for k, v in txn.cursor(store.ids)]
    _put(store, "ids", rows[3][0], rows[4][1])


CASES = [
    pytest.param(alter_entry_under_the_checkpoint, LedgerCorruptError, r"refusing to start.*first bad", 5,
                 id="an entry covered by the last checkpoint altered is refused, naming it"),
    pytest.param(rewrite_history_and_remove_the_checkpoints, LedgerCorruptError, "refusing to start", 0,
                 id="a rewritten history with its checkpoints removed is refused"),
    pytest.param(redirect_an_index_row, LedgerCorruptError, "decision id", None,
                 id="a decision-id index row pointing at another entry is refused"),
]  # fmt: skip


@pytest.mark.parametrize(("tamper", "error", "message", "first_bad"), CASES)
def test_start_up_refuses_a_tampered_data_directory(
    tmp_path: Path,
    tamper: Callable[[Store], None],
    error: type[LedgerError],
    message: str,
    first_bad: int | None,
) -> None:
    _stopped_service(tmp_path)
    assert _open(tmp_path) == N
    _edit(tmp_path, tamper)
    if tamper is rewrite_history_and_remove_the_checkpoints:
        LedgerPaths(tmp_path).checkpoint.unlink()
    with pytest.raises(error) as exc:
        _open(tmp_path)
    assert re.search(message, exc.value.diagnostics())
    if first_bad is not None:
        assert isinstance(exc.value, LedgerCorruptError) and exc.value.seq == first_bad


def test_an_unsigned_ledger_is_served_only_when_the_operator_says_so_unsafely(tmp_path: Path) -> None:
    _stopped_service(tmp_path)
    _edit(tmp_path, drop_checkpoints)
    LedgerPaths(tmp_path).checkpoint.unlink()
    with pytest.raises(LedgerCorruptError, match="unsafe_allow_unsigned"):
        _open(tmp_path)
    assert _open(tmp_path, unsafe_allow_unsigned=True) == N


def test_tail_only_verification_is_an_explicit_unsafe_choice_that_misses_what_it_skips(tmp_path: Path) -> None:
    _stopped_service(tmp_path)
    _edit(tmp_path, alter_entry_under_the_checkpoint)
    with pytest.raises(LedgerCorruptError):
        _open(tmp_path)
    # The weaker mode re-verifies only after the latest checkpoint: the change under it goes unnoticed.
    assert _open(tmp_path, unsafe_verify_tail_only=True) == N


def test_a_checkpoint_file_signed_by_us_for_a_larger_tree_is_a_rollback(tmp_path: Path) -> None:
    _stopped_service(tmp_path)
    paths = LedgerPaths(tmp_path)
    signer, _ = load_or_create_signing_key(paths.signing_key, ORIGIN)
    paths.checkpoint.write_bytes(
        checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, N + 10, b"\x01" * 32), [signer])
    )
    with pytest.raises(RollbackError, match="refusing to start"):
        _open(tmp_path)


@pytest.mark.parametrize(
    ("root_of", "refused"),
    [
        pytest.param("ours", False, id="an older checkpoint file with our root at its size is fine"),
        pytest.param("another", True, id="an older checkpoint file with another root at its size is refused"),
    ],
)
def test_a_checkpoint_file_for_an_older_size_must_match_the_tree_there(
    tmp_path: Path, root_of: str, refused: bool
) -> None:
    _stopped_service(tmp_path)
    paths = LedgerPaths(tmp_path)
    signer, _ = load_or_create_signing_key(paths.signing_key, ORIGIN)
    store = Store(paths.store, map_size=64 << 20)
    root = tree.tree_hash(16, store.read_hashes) if root_of == "ours" else b"\x02" * 32
    store.close()
    paths.checkpoint.write_bytes(checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, 16, root), [signer]))
    if refused:
        with pytest.raises(RollbackError, match="different history"):
            _open(tmp_path)
    else:
        assert _open(tmp_path) == N


@pytest.mark.parametrize(
    ("directory", "mode"),
    [
        pytest.param("data", 0o777, id="a data directory everyone can write is refused"),
        pytest.param("data", 0o703, id="a data directory others can write but not read is refused"),
        pytest.param("keys", 0o757, id="a keys directory everyone can write is refused"),
    ],
)
def test_a_directory_others_can_write_is_refused(tmp_path: Path, directory: str, mode: int) -> None:
    data_dir = tmp_path / "data"
    _stopped_service(data_dir)
    target = data_dir if directory == "data" else LedgerPaths(data_dir).signing_key.parent
    target.chmod(mode)
    with pytest.raises(PermissionsError, match=rf"writable by others \(mode {mode:04o}\).*chmod"):
        _open(data_dir)


def test_a_data_directory_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    _stopped_service(data_dir)
    data_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        assert _open(data_dir) == N
    assert any("readable by others (mode 0755)" in r.getMessage() for r in caplog.records)


def test_a_group_writable_data_directory_as_kubernetes_fsgroup_makes_it_is_fine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    _stopped_service(data_dir)
    data_dir.chmod(0o2770)
    with caplog.at_level(logging.WARNING):
        assert _open(data_dir) == N
    assert not [r for r in caplog.records if "readable by others" in r.getMessage()]


def test_a_new_data_directory_and_its_keys_and_ledger_directories_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "new"
    _open(data_dir)
    paths = LedgerPaths(data_dir)
    for directory in (data_dir, paths.signing_key.parent, paths.store):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
