"""The tlog-tiles and JSON Lines exports, checked by a reader written here from the C2SP specs alone.

``SpecReader`` shares no code with authz_ledger: its own tile paths (tlog-tiles "Merkle Tree"), its own RFC 6962
hashing, its own signed-note / checkpoint parsing with Ed25519 verification through ``cryptography``, and its own
tile-to-root computation. It reads only the exported directory and a verifier key string.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.cli import export as cli_export
from authz_ledger.errors import BackpressureError, ConfigError, InvalidRequestError, LedgerError, NotFoundError
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import Durability, Pending
from authz_ledger.readside.export import entry_bundle_path, export_jsonl, export_tiles, tile_path
from authz_ledger.record import entry
from authz_ledger.record.entry import DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN, make_writer

# --- An independent tlog-tiles reader, from https://c2sp.org/tlog-tiles and https://c2sp.org/signed-note ------


class ReaderError(Exception):
    """The exported log does not verify."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH over leaf hashes: split at the largest power of two below n."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def spec_index_path(n: int) -> str:
    """tlog-tiles: zero-padded 3-digit path elements, all but the last prefixed with "x"."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


class SpecReader:
    """Fetches ``<prefix>/checkpoint``, ``<prefix>/tile/...`` from a directory and checks the whole log."""

    def __init__(self, prefix: Path, vkey: str) -> None:
        self.prefix = prefix
        name, key_id_hex, key_b64 = vkey.split("+", 2)  # base64 may itself contain "+"
        key = base64.b64decode(key_b64)
        if key[0] != 0x01 or len(key) != 33:
            raise ReaderError("not an Ed25519 verifier key")
        # signed-note: key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]
        if sha256(name.encode() + b"\n" + key)[:4] != bytes.fromhex(key_id_hex):
            raise ReaderError("verifier key id does not match the key")
        self.name, self.key_id, self.public = name, bytes.fromhex(key_id_hex), key[1:]
        self.fetched: list[str] = []

    def get(self, path: str) -> bytes:
        self.fetched.append(path)
        try:
            return (self.prefix / path).read_bytes()
        except FileNotFoundError:
            raise ReaderError(f"404 {path}") from None

    def checkpoint(self) -> tuple[str, int, bytes]:
        """origin, size, root of a checkpoint that carries a valid signature by our key."""
        msg = self.get("checkpoint")
        cut = msg.rfind(b"\n\n")
        if cut < 0:
            raise ReaderError("checkpoint is not a signed note")
        text, sig_block = msg[: cut + 1], msg[cut + 2 :].decode()
        good = False
        for line in sig_block.splitlines():
            if not line.startswith("\u2014 "):
                raise ReaderError(f"bad signature line {line!r}")
            name, b64 = line[2:].split(" ")
            raw = base64.b64decode(b64)
            if name != self.name or raw[:4] != self.key_id:
                continue  # unknown keys (witness cosignatures) are ignored
            try:
                Ed25519PublicKey.from_public_bytes(self.public).verify(raw[4:], text)
            except InvalidSignature:
                raise ReaderError("checkpoint signature does not verify") from None
            good = True
        if not good:
            raise ReaderError("no signature by the log's key")
        lines = text.decode().split("\n")
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
        if origin != self.name:
            raise ReaderError("checkpoint origin is not the key name")
        return origin, size, root

    @staticmethod
    def width(level: int, n: int, size: int) -> int:
        """Hashes in tile n of level ``level`` of a tree of ``size`` ("Partial Tiles": floor(s/256**l) mod 256)."""
        count = size // 256**level
        if n < count // 256:
            return 256
        if n == count // 256 and count % 256:
            return count % 256
        raise ReaderError(f"tile {level}/{n} does not exist at size {size}")

    def tile(self, level: int | str, n: int, size: int) -> bytes:
        w = self.width(0 if level == "entries" else int(level), n, size)
        return self.get(f"tile/{level}/{spec_index_path(n)}" + ("" if w == 256 else f".p/{w}"))

    def hashes(self, level: int, n: int, size: int) -> list[bytes]:
        data = self.tile(level, n, size)
        if len(data) != 32 * self.width(level, n, size):
            raise ReaderError(f"tile {level}/{n} has {len(data)} bytes")
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def bundle(self, n: int, size: int) -> list[bytes]:
        data = self.tile("entries", n, size)
        out, pos = [], 0
        while pos < len(data):
            if pos + 2 > len(data):
                raise ReaderError(f"bundle {n} ends inside a length")
            length = int.from_bytes(data[pos : pos + 2], "big")
            if pos + 2 + length > len(data):
                raise ReaderError(f"bundle {n} ends inside an entry")
            out.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
        if len(out) != self.width(0, n, size):
            raise ReaderError(f"bundle {n} holds {len(out)} entries")
        return out

    def root_from_tiles(self, size: int) -> bytes:
        """Fold the tree's perfect subtrees, each read from the one tile whose hashes it spans."""
        subtrees = []
        lo = 0
        for k in reversed(range(size.bit_length())):
            if size >> k & 1:
                level = k // 8  # a subtree of 2**k leaves is 2**(k - 8*level) consecutive level-`level` hashes
                first = lo >> (8 * level)
                n, i = divmod(first, 256)
                hashes = self.hashes(level, n, size)[i : i + (1 << (k - 8 * level))]
                subtrees.append(mth(hashes))
                lo += 1 << k
        if not subtrees:
            return sha256(b"")
        h = subtrees[-1]
        for left in reversed(subtrees[:-1]):
            h = sha256(b"\x01" + left + h)
        return h

    def verify(self) -> tuple[int, list[bytes]]:
        """Check everything; return the tree size and every entry."""
        _, size, root = self.checkpoint()
        entries: list[bytes] = []
        leaves: list[bytes] = []
        for n in range((size + 255) // 256):
            bundle = self.bundle(n, size)
            computed = [sha256(b"\x00" + e) for e in bundle]
            if computed != self.hashes(0, n, size):
                raise ReaderError(f"level-0 tile {n} does not match entry bundle {n}")
            entries += bundle
            leaves += computed
        level = 1
        while size // 256**level:
            count = size // 256**level
            for n in range((count + 255) // 256):
                for i, h in enumerate(self.hashes(level, n, size)):
                    if mth(self.hashes(level - 1, n * 256 + i, size)) != h:
                        raise ReaderError(
                            f"tile {level}/{n} hash {i} is not the root of tile {level - 1}/{n * 256 + i}"
                        )
            level += 1
        if self.root_from_tiles(size) != root:
            raise ReaderError("root computed from the tiles is not the checkpoint's")
        if mth(leaves) != root:
            raise ReaderError("root computed from the entries is not the checkpoint's")
        return size, entries


# --- Ledgers ----------------------------------------------------------------------------------------------


def bodies(count: int, seed: int = 0) -> Iterator[bytes]:
    for i in range(count):
        did = new_decision_id()
        yield DecisionRecord(
            time_unix_nano=1_700_000_000_000_000_000 + i,
            decision_id=str(did),
            method="GET",
            path="/items/" + "x" * ((i * 7919 + seed) % 300),
            input_json=json.dumps({"i": i, "seed": seed}).encode(),
            outcome=entry.OUTCOME_ALLOW,
            allowed=True,
            http_status=200,
        ).encode()


def append(store: Store, signer: note.Signer, count: int, seed: int = 0) -> None:
    """Append ``count`` entries with a fresh writer; its close publishes a checkpoint at the new size."""
    writer = make_writer(store, signer, durability=Durability.ASYNC, queue_size=count + 1)
    for body in bodies(count, seed):
        writer._queue.put(Pending(body, new_decision_id().bytes, False), 0)
    writer.start()
    writer.close()


def publish_checkpoint_at(store: Store, signer: note.Signer, size: int) -> None:
    """Sign the stored tree at ``size`` (any size up to the head) as the log would have."""
    if store.checkpoint(size) is None:
        root = tree.tree_hash(size, store.read_hashes)
        store.put_checkpoint(size, checkpoint.sign_checkpoint(checkpoint.Checkpoint(signer.name, size, root), [signer]))


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


# --- Paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((0, 1234067), "tile/0/x001/x234/067"),
        ((0, 5), "tile/0/005"),
        ((1, 1000), "tile/1/x001/000"),
        ((2, 0, 1), "tile/2/000.p/1"),
        ((0, 273, 112), "tile/0/273.p/112"),
    ],
    ids=[
        "the spec's example index 1234067 is x001/x234/067",
        "small indexes are zero padded to three digits",
        "index 1000 needs a second path element",
        "a partial tile ends in .p/width",
        "the 70,000-entry example's partial level-0 tile",
    ],
)
def test_tile_paths_follow_the_spec(args: tuple[int, ...], want: str) -> None:
    assert tile_path(*args) == want
    level, n, *w = args
    assert want == f"tile/{level}/{spec_index_path(n)}" + (f".p/{w[0]}" if w else "")


def test_entry_bundle_paths_follow_the_spec() -> None:
    assert entry_bundle_path(1234067) == "tile/entries/x001/x234/067"
    assert entry_bundle_path(3, 17) == "tile/entries/003.p/17"


# --- Tiles export -----------------------------------------------------------------------------------------


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
            for body in bodies(200):
                try:
                    writer.record(body, new_decision_id().bytes)
                except BackpressureError:
                    time.sleep(0.001)

    feeder = threading.Thread(target=load)
    feeder.start()
    try:
        deadline = time.monotonic() + 10
        while store.checkpoint() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        sizes: list[int] = []
        seen: dict[str, tuple[int, int, bytes]] = {}
        for _ in range(6):
            report = export_tiles(store, out)
            size, _ = SpecReader(out, signer.verifier_key()).verify()
            assert size == report.size
            states = file_states(out)
            assert {k: states[k] for k in seen} == seen
            seen = states
            sizes.append(size)
            time.sleep(0.05)
    finally:
        stop.set()
        feeder.join()
        writer.close()
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0], sizes


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


def test_negative_sizes_and_ranges_are_invalid_requests(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError):
        export_tiles(store, tmp_path, checkpoint_size=-1)
    with pytest.raises(InvalidRequestError):
        export_jsonl(store, io.StringIO(), -1)
    with pytest.raises(InvalidRequestError):
        export_jsonl(store, io.StringIO(), 5, stop=4)


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


# --- JSON Lines -------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_round_trips_every_entry_like_log_json(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    append(store, signer, 120)
    path = tmp_path / "ledger.jsonl"
    assert export_jsonl(store, path) == 120
    docs = read_jsonl(path)
    assert [d["index"] for d in docs] == list(range(120))
    for doc, (seq, data) in zip(docs, store.iter_entries(), strict=True):
        assert base64.b64decode(doc["entry_b64"]) == data  # type: ignore[arg-type]
        msg = entry.decode(data, seq)
        assert doc["decision_id"] == msg.decision_id
        assert {k: doc[k] for k in entry.to_json_fields(msg)} == json.loads(json.dumps(entry.to_json_fields(msg)))


def test_jsonl_export_resumes_after_the_last_exported_entry(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 50)
    assert export_jsonl(store, path) == 50
    assert export_jsonl(store, path) == 0
    append(store, signer, 30, seed=3)
    assert export_jsonl(store, path, start=0) == 30  # an existing file decides where to continue
    assert [d["index"] for d in read_jsonl(path)] == list(range(80))


def test_jsonl_export_cuts_a_torn_last_line_and_continues(store: Store, signer: note.Signer, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 40)
    export_jsonl(store, path, stop=20)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"index": 20, "decision_id": "01')  # a crash in the middle of a line
    assert export_jsonl(store, path) == 20
    assert [d["index"] for d in read_jsonl(path)] == list(range(40))


def test_jsonl_export_refuses_to_continue_another_ledgers_file(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.jsonl"
    append(store, signer, 10)
    export_jsonl(store, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = json.loads(lines[-1])
    doc["entry_b64"] = base64.b64encode(b"not ours").decode()
    path.write_text("\n".join([*lines[:-1], json.dumps(doc)]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not this ledger's entry"):
        export_jsonl(store, path)


def test_jsonl_export_to_a_stream_writes_the_requested_range(store: Store, signer: note.Signer) -> None:
    append(store, signer, 30)
    buf = io.StringIO()
    assert export_jsonl(store, buf, 10, stop=25) == 15
    assert [json.loads(line)["index"] for line in buf.getvalue().splitlines()] == list(range(10, 25))


# --- CLI --------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="authz-ledger")
    cli_export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    return args.func(args, out), out.getvalue()


def ledger_dir(tmp_path: Path, signer: note.Signer, count: int) -> str:
    """A data dir (``<dir>/ledger`` is the store) with ``count`` entries, closed so the CLI can open it."""
    store = Store(tmp_path / "data" / "ledger", map_size=16 << 20)
    try:
        append(store, signer, count)
    finally:
        store.close()
    return str(tmp_path / "data")


def test_cli_export_writes_tiles_and_prints_a_json_summary(signer: note.Signer, tmp_path: Path) -> None:
    data_dir = ledger_dir(tmp_path, signer, 260)
    code, text = run_cli("export", "--data-dir", data_dir, "--tiles", str(tmp_path / "pub"), "--json")
    assert code == 0
    doc = json.loads(text)
    assert (doc["format"], doc["size"], doc["bundles_written"]) == ("tlog-tiles", 260, 2)
    assert doc["checkpoint_updated"] is True
    assert SpecReader(tmp_path / "pub", signer.verifier_key()).verify()[0] == 260
    code, text = run_cli("export", "--data-dir", data_dir, "--tiles", str(tmp_path / "pub"))
    assert text.startswith(f"OK: {tmp_path / 'pub'}: tree size 260, 0 new files")
    assert "checkpoint unchanged" in text


def test_cli_export_appends_jsonl_with_a_size_limit(signer: note.Signer, tmp_path: Path) -> None:
    data_dir = ledger_dir(tmp_path, signer, 30)
    out = tmp_path / "x.jsonl"
    code, text = run_cli("export", "--data-dir", data_dir, "--jsonl", str(out), "--size", "12", "--json")
    assert code == 0 and json.loads(text)["entries_written"] == 12
    code, text = run_cli("export", "--data-dir", data_dir, "--jsonl", str(out))
    assert text.startswith(f"OK: {out}: 18 new entries")
    assert len(read_jsonl(out)) == 30


def test_cli_export_needs_exactly_one_target(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli("export", "--data-dir", str(tmp_path))
    with pytest.raises(SystemExit):
        run_cli("export", "--data-dir", str(tmp_path), "--tiles", "a", "--jsonl", "b")
