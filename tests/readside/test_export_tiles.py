"""The tlog-tiles export, checked by a reader written from the C2SP specs alone (tests/support/spec_tiles.py)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import BackpressureError, ConfigError, LedgerCorruptError, LedgerError, NotFoundError
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import Durability
from authz_ledger.readside.export_tiles import check_bundle, export_tiles
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN, make_writer
from tests.support.exports import append, bodies, publish_checkpoint_at
from tests.support.spec_tiles import ReaderError, SpecReader, sha256, spec_index_path
from tests.support.waits import wait_until


def file_states(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime_ns, SHA-256) of every exported tile and bundle."""
    out = {}
    for p in directory.rglob("*"):
        if p.is_file() and p.name != "checkpoint" and not p.name.startswith("."):
            st_ = p.stat()
            out[str(p.relative_to(directory))] = (st_.st_ino, st_.st_mtime_ns, sha256(p.read_bytes()))
    return out


BIG = 70_000  # the tlog-tiles spec's example size: levels 0, 1 and 2, full and partial


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, note.Signer]]:
    store = Store(tmp_path_factory.mktemp("big") / "ledger", map_size=256 << 20, durable=False)
    signer = note.generate_signer(ORIGIN)
    append(store, signer, BIG)
    yield store, signer
    store.close()


def export_and_read(store: Store, signer: note.Signer, out: Path, size: int) -> tuple[int, list[bytes]]:
    publish_checkpoint_at(store, signer, size)
    report = export_tiles(store, out, checkpoint_size=size, durable=False)
    assert report.size == size
    got_size, entries = SpecReader(out, signer.verifier_key()).verify()
    assert got_size == size
    return got_size, entries


@pytest.mark.parametrize(
    "size",
    [1, 255, 256, 257, 511, 512, 65535, 65536, 65537, 65536 + 256, BIG],
    ids=lambda s: f"a tree of {s} entries verifies with the spec reader",
)
def test_export_at_tile_boundaries_verifies(big_ledger: tuple[Store, note.Signer], tmp_path: Path, size: int) -> None:
    store, signer = big_ledger
    _, entries = export_and_read(store, signer, tmp_path / "out", size)
    assert entries == [data for _, data in store.iter_entries(0, size)]


def test_the_specs_70000_entry_example_has_exactly_its_tiles(
    big_ledger: tuple[Store, note.Signer], tmp_path: Path
) -> None:
    store, signer = big_ledger
    export_and_read(store, signer, tmp_path, BIG)
    tiles = {str(p.relative_to(tmp_path)) for p in (tmp_path / "tile").rglob("*") if p.is_file()}
    hash_tiles = {t for t in tiles if not t.startswith("tile/entries/")}
    # tlog-tiles: 273 full level-0 tiles, a partial one of width 112, one full level-1 tile, a partial level-1
    # tile of width 17 and a partial level-2 tile of width 1.
    want = {f"tile/0/{spec_index_path(n)}" for n in range(273)} | {"tile/0/273.p/112"}
    want |= {"tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"}
    assert hash_tiles == want
    assert tiles - hash_tiles == {t.replace("tile/0/", "tile/entries/") for t in want if t.startswith("tile/0/")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=1, max_value=4000))
def test_export_at_random_sizes_verifies(
    big_ledger: tuple[Store, note.Signer], tmp_path_factory: pytest.TempPathFactory, size: int
) -> None:
    store, signer = big_ledger
    out = tmp_path_factory.mktemp("random")
    export_and_read(store, signer, out, size)
    shutil.rmtree(out)


def test_the_root_of_a_256_entry_tree_comes_from_a_level_1_partial_tile(
    big_ledger: tuple[Store, note.Signer], tmp_path: Path
) -> None:
    store, signer = big_ledger
    export_and_read(store, signer, tmp_path, 256)
    reader = SpecReader(tmp_path, signer.verifier_key())
    reader.fetched.clear()
    reader.root_from_tiles(256)
    assert reader.fetched == ["tile/1/000.p/1"]


def test_export_defaults_to_the_latest_checkpoint_in_the_durable_mode(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    append(store, signer, 300)
    report = export_tiles(store, tmp_path / "out")
    assert (report.size, report.hash_tiles_written, report.bundles_written) == (300, 3, 2)
    assert report.entries_written == 300 and report.checkpoint_updated and not report.cosigned
    assert report.bytes_written > 0 and report.seconds > 0
    assert (tmp_path / "out" / "checkpoint").read_bytes() == store.checkpoint(300)[1]  # type: ignore[index]
    assert SpecReader(tmp_path / "out", signer.verifier_key()).verify()[0] == 300


def test_incremental_export_writes_only_new_files_and_never_rewrites_one(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    append(store, signer, 300)
    export_tiles(store, out)
    before = file_states(out)
    assert set(before) == {
        "tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/000", "tile/entries/001.p/44",
    }  # fmt: skip
    first_checkpoint = (out / "checkpoint").read_bytes()

    append(store, signer, 700, seed=1)
    report = export_tiles(store, out)
    after = file_states(out)
    assert {k: after[k] for k in before} == before, "an existing tile or bundle was rewritten"
    assert set(after) - set(before) == {
        "tile/0/001", "tile/0/002", "tile/0/003.p/232", "tile/1/000.p/3",
        "tile/entries/001", "tile/entries/002", "tile/entries/003.p/232",
    }  # fmt: skip
    assert (report.hash_tiles_written, report.bundles_written, report.files_existing) == (4, 3, 2)
    assert report.entries_written == 3 * 256 - 256 + 232  # bundles 1, 2 and the partial 3
    assert (out / "checkpoint").read_bytes() != first_checkpoint
    assert SpecReader(out, signer.verifier_key()).verify()[0] == 1000

    again = export_tiles(store, out)
    assert (again.files_written, again.checkpoint_updated, again.files_existing) == (0, False, 9)
    assert file_states(out) == after


def test_a_failed_export_leaves_the_previous_checkpoint_and_its_tiles_in_place(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    append(store, signer, 300)
    export_tiles(store, out)
    old = (out / "checkpoint").read_bytes()
    append(store, signer, 300, seed=2)
    (out / "tile/0/001").mkdir()  # the next export cannot put tile 0/1 there
    with pytest.raises(LedgerError, match="cannot export"):
        export_tiles(store, out)
    assert (out / "checkpoint").read_bytes() == old
    assert SpecReader(out, signer.verifier_key()).verify()[0] == 300
    (out / "tile/0/001").rmdir()
    assert export_tiles(store, out).size == 600
    assert SpecReader(out, signer.verifier_key()).verify()[0] == 600


def test_export_while_the_writer_appends_always_verifies(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = make_writer(store, signer, durability=Durability.ASYNC, checkpoint_interval_s=0.01)
    writer.start()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for body, decision_id in bodies(200):
                try:
                    writer.record(body, decision_id)
                except BackpressureError:
                    time.sleep(0.001)  # load, not a wait: the queue is full, offer more a little later

    feeder = threading.Thread(target=load)
    feeder.start()
    try:
        sizes: list[int] = []
        seen: dict[str, tuple[int, int, bytes]] = {}
        for _ in range(6):
            # Each export starts from a checkpoint newer than the last one exported: the ledger grew meanwhile.
            wait_until(
                lambda: (store.checkpoint() or (0, b""))[0],
                lambda latest: latest > (sizes[-1] if sizes else 0),
                message="the writer published no new checkpoint",
            )
            report = export_tiles(store, out)
            size, _ = SpecReader(out, signer.verifier_key()).verify()
            assert size == report.size
            states = file_states(out)
            assert {k: states[k] for k in seen} == seen
            seen = states
            sizes.append(size)
    finally:
        stop.set()
        feeder.join()
        writer.close()
    assert sizes == sorted(set(sizes)), f"every export a larger tree than the one before: {sizes}"


def test_the_cosigned_checkpoint_is_exported_when_there_is_one(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    append(store, signer, 10)
    size, signed = store.checkpoint()  # type: ignore[misc]
    cosigned = note.add_signatures(signed, [note.generate_signer("witness.test/w1")])
    store.put_cosigned(size, cosigned)
    report = export_tiles(store, tmp_path)
    assert report.cosigned
    assert (tmp_path / "checkpoint").read_bytes() == cosigned
    assert SpecReader(tmp_path, signer.verifier_key()).verify()[0] == 10


def test_an_empty_ledger_has_nothing_to_export(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no checkpoint"):
        export_tiles(store, tmp_path)
    with pytest.raises(NotFoundError, match="size 5"):
        export_tiles(store, tmp_path, checkpoint_size=5)


def test_a_checkpoint_of_the_empty_tree_exports_without_tiles(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    publish_checkpoint_at(store, signer, 0)
    report = export_tiles(store, tmp_path)
    assert (report.size, report.files_written) == (0, 0)
    assert not (tmp_path / "tile").exists()
    assert SpecReader(tmp_path, signer.verifier_key()).verify() == (0, [])


def test_exporting_an_older_size_over_a_newer_export_is_refused(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    append(store, signer, 100)
    append(store, signer, 100)
    export_tiles(store, tmp_path)
    with pytest.raises(ConfigError, match="roll it back"):
        export_tiles(store, tmp_path, checkpoint_size=100)
    assert SpecReader(tmp_path, signer.verifier_key()).verify()[0] == 200


def test_another_ledgers_export_directory_is_refused(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    other = Store(tmp_path / "other", map_size=16 << 20)
    try:
        other_signer = note.generate_signer(ORIGIN)
        append(other, other_signer, 50, seed=9)
        export_tiles(other, tmp_path / "out")
    finally:
        other.close()
    append(store, signer, 80)
    with pytest.raises(ConfigError, match="does not contain"):
        export_tiles(store, tmp_path / "out")
    elsewhere = Store(tmp_path / "elsewhere", map_size=16 << 20)
    try:
        append(elsewhere, note.generate_signer("another.test/log"), 5)
        with pytest.raises(ConfigError, match="holds an export of"):
            export_tiles(elsewhere, tmp_path / "out")
    finally:
        elsewhere.close()


def test_a_second_export_into_the_same_directory_at_once_is_refused(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    import fcntl

    append(store, signer, 5)
    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / ".export.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LedgerError, match="another export"):
            export_tiles(store, tmp_path)
    finally:
        os.close(fd)
    assert export_tiles(store, tmp_path).size == 5


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_entry_and_its_leaf(out: Path) -> None:
    """A consistent forgery of entry 3: its bundle and its level-0 tile both changed; only the root catches it."""
    bundle = out / "tile/entries/001.p/44"
    data = bytearray(bundle.read_bytes())
    entries, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 2], "big")
        entries.append(bytes(data[pos + 2 : pos + 2 + n]))
        pos += 2 + n
    entries[3] = entries[3][:-1] + bytes([entries[3][-1] ^ 1])
    bundle.write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in entries))
    tile = out / "tile/0/001.p/44"
    hashes = bytearray(tile.read_bytes())
    hashes[3 * 32 : 4 * 32] = sha256(b"\x00" + entries[3])
    tile.write_bytes(bytes(hashes))


TAMPERING = {
    "a flipped byte in a full entry bundle": (lambda out: _flip_byte(out / "tile/entries/000", 100), "bundle 0"),
    "a flipped byte in a level-0 tile": (lambda out: _flip_byte(out / "tile/0/000", 5), "tile 0"),
    "a truncated partial bundle": (
        lambda out: (out / "tile/entries/001.p/44").write_bytes((out / "tile/entries/001.p/44").read_bytes()[:-3]),
        "bundle 1",
    ),
    "a missing partial level-1 tile": (lambda out: (out / "tile/1/000.p/1").unlink(), "404"),
    "an entry forged in its bundle and its level-0 tile alike": (_rewrite_entry_and_its_leaf, "root computed"),
    "an altered tree size in the checkpoint": (
        lambda out: (out / "checkpoint").write_bytes((out / "checkpoint").read_bytes().replace(b"\n300\n", b"\n299\n")),
        "signature does not verify",
    ),
    "a checkpoint re-signed by a key that is not the log's": (
        lambda out: (out / "checkpoint").write_bytes(
            checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, 300, b"\x00" * 32), [note.generate_signer(ORIGIN)])
        ),
        "no signature by the log's key",
    ),
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=[f"{k} is detected" for k in TAMPERING])
def test_a_tampered_export_is_detected_by_the_spec_reader(
    store: Store, signer: note.Signer, tmp_path: Path, tamper: tuple[object, str]
) -> None:
    append(store, signer, 300)
    export_tiles(store, tmp_path)
    SpecReader(tmp_path, signer.verifier_key()).verify()
    change, message = tamper
    change(tmp_path)  # type: ignore[operator]
    with pytest.raises(ReaderError, match=message):
        SpecReader(tmp_path, signer.verifier_key()).verify()


@pytest.mark.parametrize(
    ("tamper", "bad"),
    [
        pytest.param(lambda entries: entries, None, id="a bundle of the tile's entries passes"),
        pytest.param(lambda entries: [entries[0], entries[1] + b"x", entries[2]], 11, id="an altered entry is named"),
        pytest.param(lambda entries: entries[:2], 12, id="a bundle short of its tile is refused"),
    ],
)
def test_a_bundle_is_checked_against_its_leaves_before_it_is_published(tamper: Any, bad: int | None) -> None:
    entries = [b"alpha", b"beta", b"gamma"]
    leaves = b"".join(tree.leaf_hash(e) for e in entries)
    bundle = b"".join(len(e).to_bytes(2, "big") + e for e in tamper(entries))
    if bad is None:
        check_bundle(bundle, leaves, 10)
    else:
        with pytest.raises(LedgerCorruptError) as raised:
            check_bundle(bundle, leaves, 10)
        assert raised.value.seq == bad
