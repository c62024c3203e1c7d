"""``authz-ledger export``: tiles and JSON Lines from a data directory, with a ``--json`` summary."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from authz_ledger.cli import export as cli_export
from authz_ledger.ledger.store import Store
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
