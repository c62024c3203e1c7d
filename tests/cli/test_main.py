"""The CLI's offline commands and their machine-readable contracts."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from authz_ledger.cli import main as cli
from authz_ledger.keys import load_or_create_signing_key
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store, u64
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN, free_port, make_writer


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path) -> tuple[Path, note.Signer]:
    paths = LedgerPaths(tmp_path / "data")
    signer, _ = load_or_create_signing_key(paths.signing_key, ORIGIN)
    s = Store(paths.store, map_size=64 << 20)
    w = make_writer(s, signer)
    w.checkpoint_file = paths.checkpoint
    for i in range(3):
        decision_id = new_decision_id()
        rec = DecisionRecord(
            time_unix_nano=1,
            decision_id=str(decision_id),
            method="GET",
            path=f"/p{i}",
            outcome=OUTCOME_ALLOW,
            allowed=True,
            http_status=200,
            input_json=b'{"a":1}',
            result_json=b"true",
        )
        w._commit([Pending(rec.encode(), decision_id.bytes, False)])
    w._publish_checkpoint(force=True)
    s.close()
    return paths.data_dir, signer


def test_keygen_writes_a_private_key_and_prints_its_verifier_key(tmp_path: Path) -> None:
    out_file = tmp_path / "k.key"
    code, out = run("keygen", "--origin", "example.com/log", "--out", str(out_file))
    assert code == 0
    vkey = out.strip()
    assert vkey.startswith("example.com/log+")
    assert oct(out_file.stat().st_mode & 0o777) == "0o600"
    assert run("vkey", "--key", str(out_file)) == (0, vkey + "\n")
    note.Verifier.from_vkey(vkey)


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    out_file = tmp_path / "k.key"
    assert run("keygen", "--origin", "a/b", "--out", str(out_file))[0] == 0
    assert run("keygen", "--origin", "a/b", "--out", str(out_file))[0] == 1


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    out_file = tmp_path / "k.key"
    run("keygen", "--origin", "a/b", "--out", str(out_file))
    os.chmod(out_file, 0o644)
    code, _ = run("vkey", "--key", str(out_file))
    assert code == 1


def test_verify_passes_and_reports_json(data_dir: tuple[Path, note.Signer]) -> None:
    d, signer = data_dir
    code, out = run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key(), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["ok"] is True and doc["size"] == 3 and doc["first_bad_seq"] is None
    code, out = run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key())
    assert code == 0 and out.startswith("OK:")


def test_verify_fails_with_exit_1_and_names_the_bad_entry(data_dir: tuple[Path, note.Signer]) -> None:
    d, signer = data_dir
    s = Store(LedgerPaths(d).store)
    with s.env.begin(write=True) as txn:
        txn.put(u64(1), (s.entry(1) or b"") + b"x", db=s.entries)
    s.close()
    code, out = run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key(), "--json")
    assert code == 1
    assert json.loads(out)["first_bad_seq"] == 1


def test_log_json_lines_carry_the_exact_stored_bytes(data_dir: tuple[Path, note.Signer]) -> None:
    d, _ = data_dir
    code, out = run("log", "--data-dir", str(d), "--from", "1", "--limit", "5", "--json")
    assert code == 0
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["index"] for x in lines] == [1, 2]
    s = Store(LedgerPaths(d).store, readonly=True)
    for x in lines:
        assert base64.b64decode(x["entry_b64"]) == s.entry(x["index"])
        assert x["path"] == f"/p{x['index']}"
        assert x["decision_id"] and x["outcome"] == "allow"
    # The leaf hash an outsider computes from entry_b64 matches the stored tree.
    leaf = tree.leaf_hash(base64.b64decode(lines[0]["entry_b64"]))
    assert s.read_hashes([tree.stored_hash_index(0, 1)]) == [leaf]
    s.close()


def test_checkpoint_prints_the_signed_note_exactly_as_stored(data_dir: tuple[Path, note.Signer]) -> None:
    d, signer = data_dir
    proc = subprocess.run(
        [sys.executable, "-m", "authz_ledger.cli", "checkpoint", "--data-dir", str(d)],
        capture_output=True,
        check=True,
    )
    cp, _ = checkpoint.open_checkpoint(proc.stdout, [signer.verifier()], origin=ORIGIN)
    assert cp.size == 3
    assert proc.stdout == LedgerPaths(d).checkpoint.read_bytes()


def test_health_command_reports_serving_and_fails_when_nothing_listens(authz_service) -> None:
    running = authz_service()
    code, out = run("health", "--addr", f"127.0.0.1:{running.port}")
    assert code == 0
    assert "SERVING" in out
    code, out = run("health", "--addr", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert code == 1
    assert "UNAVAILABLE" in out or "DEADLINE_EXCEEDED" in out


def test_verify_refuses_a_ledger_whose_checkpoints_were_deleted(data_dir: tuple[Path, note.Signer]) -> None:
    d, signer = data_dir
    s = Store(LedgerPaths(d).store)
    with s.env.begin(write=True) as txn:
        txn.drop(s.checkpoints, delete=False)
    s.close()
    LedgerPaths(d).checkpoint.unlink()
    code, out = run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key(), "--json")
    assert code == 1
    assert "no signed checkpoint" in json.loads(out)["error"]
    assert run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key(), "--allow-unsigned")[0] == 0


def test_verify_refuses_a_store_older_than_the_checkpoint_file(data_dir: tuple[Path, note.Signer]) -> None:
    d, signer = data_dir
    s = Store(LedgerPaths(d).store)
    with s.env.begin(write=True) as txn:  # an older copy: no entry 2, head and checkpoint at size 2
        txn.delete(u64(2), db=s.entries)
        txn.drop(s.checkpoints, delete=False)
    s.close()
    code, _ = run("verify", "--data-dir", str(d), "--vkey", signer.verifier_key(), "--json", "--allow-unsigned")
    assert code == 1
