"""``authz-ledger export``: tiles and JSON Lines from a data directory, with a ``--json`` summary."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from authz_ledger.cli import export as cli_export
from authz_ledger.errors import LedgerCorruptError
from authz_ledger.keys import load_or_create_signing_key
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store, from_u64, u64
from authz_ledger.tlog import note
from tests.support.exports import append, read_jsonl
from tests.support.spec_tiles import SpecReader


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
    code, text = run_cli(
        "export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), "--tiles", str(tmp_path / "pub"), "--json"
    )
    assert code == 0
    doc = json.loads(text)
    assert (doc["format"], doc["size"], doc["bundles_written"]) == ("tlog-tiles", 260, 2)
    assert doc["checkpoint_updated"] is True
    assert SpecReader(tmp_path / "pub", signer.verifier_key()).verify()[0] == 260
    code, text = run_cli(
        "export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), "--tiles", str(tmp_path / "pub")
    )
    assert text.startswith(f"OK: {tmp_path / 'pub'}: tree size 260, 0 new files")
    assert "checkpoint unchanged" in text


def test_cli_export_appends_jsonl_with_a_size_limit(signer: note.Signer, tmp_path: Path) -> None:
    data_dir = ledger_dir(tmp_path, signer, 30)
    out = tmp_path / "x.jsonl"
    code, text = run_cli(
        "export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), "--jsonl", str(out), "--size", "12", "--json"
    )
    assert code == 0 and json.loads(text)["entries_written"] == 12
    code, text = run_cli("export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), "--jsonl", str(out))
    assert text.startswith(f"OK: {out}: 18 new entries")
    assert len(read_jsonl(out)) == 30


def test_cli_export_needs_exactly_one_target(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli("export", "--data-dir", str(tmp_path))
    with pytest.raises(SystemExit):
        run_cli("export", "--data-dir", str(tmp_path), "--tiles", "a", "--jsonl", "b")


def _flip_a_byte_of_entry(store: Store, seq: int) -> None:
    with store.env.begin(write=True) as txn:
        body = bytearray(txn.get(u64(seq), db=store.entries))
        body[-1] ^= 0x01
        txn.put(u64(seq), bytes(body), db=store.entries)


def _redirect_an_index_row(store: Store, seq: int) -> None:
    with store.env.begin(write=True) as txn:
        key = next(k for k, v in txn.cursor(db=store.ids) if from_u64(v) == seq)
        txn.put(bytes(key), u64(seq + 1), db=store.ids)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip_a_byte_of_entry, id="a byte flipped in an entry"),
        pytest.param(_redirect_an_index_row, id="a decision-id index row redirected"),
    ],
)
@pytest.mark.parametrize("target", ["--tiles", "--jsonl"])
def test_cli_export_refuses_a_tampered_ledger_and_writes_nothing(
    signer: note.Signer, tmp_path: Path, tamper: Callable[[Store, int], None], target: str
) -> None:
    data_dir = ledger_dir(tmp_path, signer, 300)
    store = Store(Path(data_dir) / "ledger", map_size=16 << 20)
    try:
        tamper(store, 37)
    finally:
        store.close()
    out = tmp_path / "published"
    with pytest.raises(LedgerCorruptError) as raised:
        run_cli("export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), target, str(out))
    assert raised.value.seq == 37
    assert not out.exists()


def test_cli_export_refuses_checkpoints_signed_by_another_key(signer: note.Signer, tmp_path: Path) -> None:
    data_dir = ledger_dir(tmp_path, signer, 20)
    other = note.generate_signer("other.example/log")
    with pytest.raises(LedgerCorruptError):
        run_cli("export", "--data-dir", data_dir, "--vkey", other.verifier_key(), "--tiles", str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()


def test_cli_export_verifies_with_the_data_directorys_own_key_by_default(tmp_path: Path) -> None:
    paths = LedgerPaths(tmp_path / "data")
    own, _ = load_or_create_signing_key(paths.signing_key, "example.com/own")
    store = Store(paths.store, map_size=16 << 20)
    try:
        append(store, own, 5)
    finally:
        store.close()
    code, text = run_cli("export", "--data-dir", str(paths.data_dir), "--tiles", str(tmp_path / "pub"), "--json")
    assert code == 0 and json.loads(text)["size"] == 5


def test_cli_export_refuses_a_cosigned_checkpoint_that_does_not_verify(signer: note.Signer, tmp_path: Path) -> None:
    """The note that becomes the published ``checkpoint`` is the one checked: a stored cosigned form that no
    trusted key signed (or that says something else than the log signed) is never published."""
    data_dir = ledger_dir(tmp_path, signer, 20)
    store = Store(Path(data_dir) / "ledger", map_size=16 << 20)
    try:
        found = store.checkpoint(20)
        assert found is not None
        _, size, root = found[1].split(b"\n\n")[0].split(b"\n")[:3]  # the right tree, under another origin
        forged = b"\n".join([b"evil.example/log", size, root]) + "\n\n\u2014 evil.example/log AAAA\n".encode()
        store.put_cosigned(20, forged)
    finally:
        store.close()
    with pytest.raises(LedgerCorruptError, match="to publish does not verify"):
        run_cli("export", "--data-dir", data_dir, "--vkey", signer.verifier_key(), "--tiles", str(tmp_path / "p"))
    assert not (tmp_path / "p" / "checkpoint").exists()
