"""The auditor's verifier of published tlog-tiles logs: real ledgers, real exports, from a directory and over HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from authz_ledger.errors import (
    ConfigError,
    NoteError,
    TilesError,
    TilesForkError,
    TilesRollbackError,
    TilesUnreadableError,
)
from authz_ledger.ledger.store import Store
from authz_ledger.readside.tiles_location import (
    DirectoryLocation,
    HttpLocation,
    open_location,
    read_state,
    state_lock,
    write_state,
)
from authz_ledger.readside.verify_tiles import TilesReport, verify_tiles
from authz_ledger.tlog import checkpoint, note, tree
from authz_ledger.tlog.cosignature import CosignatureVerifier, Cosigner
from tests.conftest import ORIGIN
from tests.support.exports import append
from tests.support.published import (
    Published,
    Served,
    append_bytes,
    corrupt_last_signature,
    drop_signature_line,
    flip_byte,
    forge_entry,
    other_history,
    replace_bytes,
    resign_checkpoint,
    serve_directory,
    truncate,
)

BIG = 70_000  # the tlog-tiles spec's example: full and partial tiles at levels 0, 1 and a partial level-2 tile


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    store = Store(tmp_path_factory.mktemp("big") / "ledger", map_size=256 << 20, durable=False)
    signer = note.generate_signer(ORIGIN)
    append(store, signer, BIG)
    yield Published(store, signer)
    store.close()


@pytest.fixture
def log(store: Store, signer: note.Signer) -> Published:
    """600 entries, cosigned by two witnesses whenever a checkpoint is exported."""
    append(store, signer, 600)
    return Published(store, signer, [Cosigner.generate("witness.test/w1"), Cosigner.generate("witness.test/w2")])


def verify_dir(
    out: Path, log: Published, trusted: bytes | None = None, *, witnesses: list[str] | None = None
) -> TilesReport:
    location = DirectoryLocation(str(out))
    wits = [CosignatureVerifier.from_vkey(v) for v in (log.witness_vkeys if witnesses is None else witnesses)]
    return verify_tiles(location.fetch, [log.signer.verifier()], wits, trusted)


# --- What verifies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [1, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, BIG],
    ids=lambda s: f"a published tree of {s} entries verifies",
)
def test_an_exported_tree_verifies_at_every_tile_boundary(big: Published, tmp_path: Path, size: int) -> None:
    big.export(tmp_path, size)
    report = verify_dir(tmp_path, big)
    root = tree.tree_hash(size, big.store.read_hashes)
    assert (report.origin, report.size, report.root) == (ORIGIN, size, root)
    assert (report.entries_checked, report.bundles_checked) == (size, -(-size // 256))
    assert report.tiles_checked == sum(-(-(size >> (8 * level)) // 256) for level in range(4))
    assert (report.trusted_size, report.state_change, report.witnesses) == (None, "created", ())


def test_the_specs_70000_entry_example_reads_exactly_its_tiles(big: Published, tmp_path: Path) -> None:
    big.export(tmp_path, BIG)
    asked: list[str] = []
    location = DirectoryLocation(str(tmp_path))

    def fetch(path: str) -> bytes | None:
        asked.append(path)
        return location.fetch(path)

    verify_tiles(fetch, [big.signer.verifier()])
    hash_tiles = [p for p in asked if p.startswith("tile/") and not p.startswith("tile/entries/")]
    assert hash_tiles[-3:] == ["tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"]
    assert len(hash_tiles) == 273 + 1 + 3 and "tile/0/273.p/112" in hash_tiles
    assert asked[0] == "checkpoint" and len(asked) == 1 + 2 * 274 + 3


@pytest.mark.parametrize(
    ("tile", "offset", "message"),
    [
        ("tile/1/000", 32 * 200, r"hash 200 of tile tile/1/000 is not the hash of tile tile/0/200$"),
        ("tile/1/001.p/17", 32 * 16 + 31, r"hash 16 of tile tile/1/001\.p/17 is not the hash of tile tile/0/272$"),
        ("tile/2/000.p/1", 0, r"hash 0 of tile tile/2/000\.p/1 is not the hash of tile tile/1/000$"),
    ],
    ids=["a flipped byte in a full level-1 tile", "in a partial level-1 tile", "in the level-2 tile"],
)
def test_a_flipped_byte_in_an_upper_tile_of_the_specs_example_is_refused(
    big: Published, tmp_path: Path, tile: str, offset: int, message: str
) -> None:
    big.export(tmp_path, BIG)
    flip_byte(tmp_path / tile, offset)
    with pytest.raises(TilesError, match=message):
        verify_dir(tmp_path, big)


def test_a_checkpoint_of_the_empty_tree_verifies_without_tiles(
    store: Store, signer: note.Signer, tmp_path: Path
) -> None:
    log = Published(store, signer)
    log.export(tmp_path, 0)
    report = verify_dir(tmp_path, log)
    assert (report.size, report.root, report.tiles_checked, report.entries_checked) == (0, tree.EMPTY_ROOT, 0, 0)


def test_every_witness_given_must_have_cosigned_and_is_named(log: Published, tmp_path: Path) -> None:
    log.export(tmp_path, 600)
    assert verify_dir(tmp_path, log).witnesses == ("witness.test/w1", "witness.test/w2")
    assert verify_dir(tmp_path, log, witnesses=log.witness_vkeys[1:]).witnesses == ("witness.test/w2",)
    assert verify_dir(tmp_path, log, witnesses=[]).witnesses == ()
    stranger = Cosigner.generate("witness.test/w3").vkey()
    with pytest.raises(NoteError, match=r"no cosignature by witness witness\.test/w3"):
        verify_dir(tmp_path, log, witnesses=[*log.witness_vkeys, stranger])


def test_a_deleted_partial_tile_is_read_from_the_full_tile_that_replaced_it(log: Published, tmp_path: Path) -> None:
    # tlog-tiles "Partial Tiles": a log MAY delete a partial tile once the full one exists; clients MAY fall back.
    log.export(tmp_path, 300)
    old_checkpoint = (tmp_path / "checkpoint").read_bytes()
    log.export(tmp_path, 600)
    (tmp_path / "checkpoint").write_bytes(old_checkpoint)
    (tmp_path / "tile/0/001.p/44").unlink()
    (tmp_path / "tile/entries/001.p/44").unlink()
    report = verify_dir(tmp_path, log)
    assert (report.size, report.entries_checked) == (300, 300)
    (tmp_path / "tile/1/000.p/1").unlink()  # its full tile does not exist yet: nothing can stand in for it
    with pytest.raises(TilesError, match=r"tile tile/1/000\.p/1 is not served"):
        verify_dir(tmp_path, log)


# --- What is refused -------------------------------------------------------------------------------------------


Tamper = Callable[[Path, Published], None]
TAMPERING: dict[str, tuple[Tamper, type[Exception], str]] = {
    "a flipped byte in a full entry bundle": (
        lambda out, log: flip_byte(out / "tile/entries/001", 300),
        TilesError,
        r"entry 25\d \(bundle tile/entries/001, position \d+\) does not hash to its leaf hash in tile tile/0/001",
    ),
    "a flipped byte in a full level-0 hash tile": (
        lambda out, log: flip_byte(out / "tile/0/000", 32 * 7 + 3),
        TilesError,
        r"entry 7 \(bundle tile/entries/000, position 7\) does not hash to its leaf hash in tile tile/0/000$",
    ),
    "a flipped byte in a partial level-1 hash tile": (
        lambda out, log: flip_byte(out / "tile/1/000.p/2", 40),
        TilesError,
        r"hash 1 of tile tile/1/000\.p/2 is not the hash of tile tile/0/001",
    ),
    "an entry forged in its bundle and in its level-0 tile alike": (
        lambda out, log: forge_entry(out, "tile/entries/002.p/88", "tile/0/002.p/88", 5),
        TilesError,
        r"the root computed from the tiles \(.+\) is not the checkpoint's \(.+\) at tree size 600",
    ),
    "a truncated partial hash tile": (
        lambda out, log: truncate(out / "tile/0/002.p/88", 1),
        TilesError,
        r"tile tile/0/002\.p/88 is 2815 bytes, want 2816 \(88 hashes\)",
    ),
    "a truncated partial entry bundle": (
        lambda out, log: truncate(out / "tile/entries/002.p/88", 3),
        TilesError,
        r"entry bundle tile/entries/002\.p/88 ends inside entry 87",
    ),
    "an extra entry in a partial bundle": (
        lambda out, log: append_bytes(out / "tile/entries/002.p/88", b"\x00\x01x"),
        TilesError,
        r"entry bundle tile/entries/002\.p/88 holds 89 entries, want 88",
    ),
    "a missing full hash tile": (
        lambda out, log: (out / "tile/0/001").unlink(),
        TilesError,
        r"tile tile/0/001 is not served, but the checkpoint's tree needs it",
    ),
    "a checkpoint replaced by one signed with another key": (
        lambda out, log: resign_checkpoint(out, note.generate_signer(ORIGIN), b"\x07" * 32),
        NoteError,
        r"no verifiable signature by a known key",
    ),
    "a checkpoint whose tree size was altered after signing": (
        lambda out, log: replace_bytes(out / "checkpoint", b"\n600\n", b"\n599\n"),
        NoteError,
        r"invalid signature by authz-ledger\.test/log",
    ),
    "a checkpoint missing one witness's cosignature": (
        lambda out, log: drop_signature_line(out, "witness.test/w2"),
        NoteError,
        r"the checkpoint carries no cosignature by witness witness\.test/w2\+",
    ),
    "a cosignature that does not verify": (
        lambda out, log: corrupt_last_signature(out),
        NoteError,
        r"invalid cosignature by witness\.test/w2\+",
    ),
}


@pytest.mark.parametrize(("tamper", "error", "message"), TAMPERING.values(), ids=[f"{k} is refused" for k in TAMPERING])
def test_a_tampered_publication_is_refused(
    log: Published, tmp_path: Path, tamper: Tamper, error: type[Exception], message: str
) -> None:
    log.export(tmp_path, 600)
    verify_dir(tmp_path, log)
    tamper(tmp_path, log)
    with pytest.raises(error, match=message):
        verify_dir(tmp_path, log)


# --- Against the previously trusted checkpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted_size", "change"),
    [(0, "advanced"), (1, "advanced"), (100, "advanced"), (256, "advanced"), (599, "advanced"), (600, "unchanged")],
    ids=str,
)
def test_a_tree_that_extends_the_trusted_one_verifies(
    log: Published, tmp_path: Path, trusted_size: int, change: str
) -> None:
    log.export(tmp_path, 600)
    report = verify_dir(tmp_path, log, log.signed(trusted_size))
    assert (report.trusted_size, report.state_change, report.size) == (trusted_size, change, 600)


def _another_log(tmp_path: Path, log: Published) -> tuple[bytes, list[note.Verifier]]:
    """A checkpoint of another origin whose key the auditor also trusts: only the origin tells them apart."""
    key = note.generate_signer("another.test/log")
    return checkpoint.sign_checkpoint(checkpoint.Checkpoint(key.name, 10, b"\x01" * 32), [key]), [key.verifier()]


Trusted = Callable[[Path, Published], tuple[bytes, list[note.Verifier]]]
TRUST_FAILURES: dict[str, tuple[Trusted, type[Exception], str]] = {
    "a rollback (the state holds a bigger tree)": (
        lambda tmp, log: (log.signed(600), []),
        TilesRollbackError,
        r"rollback: the location publishes tree size 300, smaller than the trusted tree size 600",
    ),
    "a fork at the same size (another root, the same key)": (
        lambda tmp, log: (other_history(tmp, log.signer, 300), []),
        TilesForkError,
        r"fork: two signed checkpoints of tree size 300 with different roots",
    ),
    "a fork at an older size (the new tree does not contain the trusted one)": (
        lambda tmp, log: (other_history(tmp, log.signer, 100), []),
        TilesForkError,
        r"fork: the trusted checkpoint has root .+ at tree size 100, but the published tree of size 300 has root",
    ),
    "a trusted checkpoint signed by another key": (
        lambda tmp, log: (other_history(tmp, note.generate_signer(ORIGIN), 100), []),
        NoteError,
        r"the trusted checkpoint does not verify with the given log keys",
    ),
    "a trusted checkpoint of another log": (
        _another_log,
        ConfigError,
        r"the trusted checkpoint is for origin 'another\.test/log', the location for 'authz-ledger\.test/log'",
    ),
}


@pytest.mark.parametrize(
    ("trusted", "error", "message"), TRUST_FAILURES.values(), ids=[f"{k} is refused" for k in TRUST_FAILURES]
)
def test_a_publication_inconsistent_with_the_trusted_checkpoint_is_refused(
    log: Published, tmp_path: Path, trusted: Trusted, error: type[Exception], message: str
) -> None:
    log.export(tmp_path / "pub", 300)
    state, also_trusted = trusted(tmp_path, log)
    location = DirectoryLocation(str(tmp_path / "pub"))
    with pytest.raises(error, match=message):
        verify_tiles(location.fetch, [log.signer.verifier(), *also_trusted], (), state)


# --- Over HTTP ---------------------------------------------------------------------------------------------------


BUNDLES_600 = ["tile/entries/000", "tile/entries/001", "tile/entries/002.p/88"]


def verify_url(url: str, log: Published, trusted: bytes | None = None, *, timeout: float = 5.0) -> TilesReport:
    location = open_location(url, timeout=timeout)
    assert isinstance(location, HttpLocation)
    try:
        witnesses = [CosignatureVerifier.from_vkey(v) for v in log.witness_vkeys]
        return verify_tiles(location.fetch, [log.signer.verifier()], witnesses, trusted, workers=location.workers)
    finally:
        location.close()


def test_over_http_the_report_is_the_same_as_from_the_directory(log: Published, tmp_path: Path) -> None:
    log.export(tmp_path, 600)
    trusted = log.signed(300)
    with serve_directory(tmp_path) as served:
        over_http = verify_url(served.url + "/", log, trusted)  # a trailing slash on the prefix is fine
    assert over_http == verify_dir(tmp_path, log, trusted)
    assert (over_http.size, over_http.trusted_size, over_http.state_change) == (600, 300, "advanced")
    assert sorted(served.requests) == sorted(
        ["checkpoint", "tile/0/000", "tile/0/001", "tile/0/002.p/88", "tile/1/000.p/2", *BUNDLES_600]
    )


def test_gzip_encoded_entry_bundles_are_decoded(log: Published, tmp_path: Path) -> None:
    log.export(tmp_path, 600)
    with serve_directory(tmp_path, gzip_bundles=True) as served:
        assert verify_url(served.url, log).entries_checked == 600
    assert sorted(served.gzipped) == BUNDLES_600  # and decoded, or no bundle would have parsed


def test_a_tampered_bundle_served_over_http_is_refused(log: Published, tmp_path: Path) -> None:
    log.export(tmp_path, 600)
    flip_byte(tmp_path / "tile/entries/002.p/88", 10)
    with serve_directory(tmp_path) as served, pytest.raises(TilesError, match=r"does not hash to its leaf hash"):
        verify_url(served.url, log)


HTTP_FAILURES: dict[str, tuple[Callable[[Served], None], str, float, type[Exception], str]] = {
    "a prefix that serves no checkpoint": (
        lambda served: None,
        "/elsewhere",
        5.0,
        TilesUnreadableError,
        r"no checkpoint is served",
    ),
    "a tile answered with HTTP 403": (
        lambda served: served.refuse.update({"tile/0/001": 403}),
        "",
        5.0,
        TilesUnreadableError,
        r"GET http://127\.0\.0\.1:\d+/log/tile/0/001: HTTP 403",
    ),
    "a server that stalls on a tile past the timeout": (
        lambda served: served.hold.add("tile/0/001"),
        "",
        0.2,
        TilesUnreadableError,
        r"GET http://127\.0\.0\.1:\d+/log/tile/0/001: .*timed out",
    ),
    "a tile answered with HTTP 404 (not published)": (
        lambda served: served.refuse.update({"tile/0/001": 404}),
        "",
        5.0,
        TilesError,
        r"tile tile/0/001 is not served, but the checkpoint's tree needs it",
    ),
}


@pytest.mark.parametrize(
    ("setup", "suffix", "timeout", "error", "message"),
    HTTP_FAILURES.values(),
    ids=[f"{k} is reported" for k in HTTP_FAILURES],
)
def test_http_failures_are_told_apart_from_a_log_that_does_not_verify(
    log: Published,
    tmp_path: Path,
    setup: Callable[[Served], None],
    suffix: str,
    timeout: float,
    error: type[Exception],
    message: str,
) -> None:
    log.export(tmp_path, 600)
    with serve_directory(tmp_path) as served:
        setup(served)
        started = time.monotonic()
        with pytest.raises(error, match=message) as raised:
            verify_url(served.url + suffix, log, timeout=timeout)
        assert time.monotonic() - started < 10
    assert type(raised.value) is error


def test_an_unreachable_server_is_unreadable_not_invalid(log: Published) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(TilesUnreadableError, match=rf"GET http://127\.0\.0\.1:{port}/log/checkpoint: "):
            verify_url(f"http://127.0.0.1:{port}/log", log)


# --- Locations and the state file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "error", "message"),
    [
        ("{tmp}/absent", TilesUnreadableError, r"absent is not a directory \(nor an http:// or https:// prefix\)"),
        ("{tmp}/a-file", TilesUnreadableError, r"a-file is not a directory"),
        ("ftp://example.test/log", ConfigError, r"only directories and http:// or https:// prefixes can be read"),
    ],
    ids=["a missing directory", "a file", "another URL scheme"],
)
def test_a_location_that_cannot_be_read_is_refused_when_opened(
    tmp_path: Path, location: str, error: type[Exception], message: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(error, match=message):
        open_location(location.format(tmp=tmp_path))


def test_a_resource_larger_than_any_tile_or_bundle_is_refused(
    log: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authz_ledger.readside import tiles_location

    log.export(tmp_path, 600)
    monkeypatch.setattr(tiles_location, "MAX_RESOURCE_BYTES", 8191)  # one byte short of a full hash tile
    with pytest.raises(TilesError, match=r"tile/0/000 is larger than any tlog-tiles resource"):
        verify_dir(tmp_path, log)
    with serve_directory(tmp_path) as served, pytest.raises(TilesError, match=r"larger than any tlog-tiles"):
        verify_url(served.url, log)


def test_the_state_file_is_replaced_whole_and_locked_for_one_run(tmp_path: Path) -> None:
    state = tmp_path / "trusted"
    assert read_state(state) is None
    write_state(state, b"one\n")
    write_state(state, b"two\n")
    assert read_state(state) == b"two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trusted"]  # no temporary file left behind
    with (
        state_lock(state),
        pytest.raises(ConfigError, match="another verification is using the state file"),
        state_lock(state),
    ):
        pass
    with state_lock(state):  # released by the first run's end
        pass
    with pytest.raises(ConfigError, match="cannot read the state file"):
        read_state(tmp_path)
