"""``authz-ledger evidence`` and ``verify-evidence`` as a user runs them: real ledger, real files, the --json
contracts, exit codes, and a pack checked by a separate process with only the public key."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from authz_ledger.cli import main as cli
from authz_ledger.evidence import pack
from authz_ledger.readside.values import iso_time
from tests.conftest import ROOT
from tests.support.readside import T0, Ledger, build_ledger

S = 1_000_000_000
EVIDENCE_KEYS = {
    "out", "bytes", "sha256", "origin", "entries", "complete", "first_index", "end_index", "checkpoint_size",
    "latest_size",
}  # fmt: skip
VERIFY_KEYS = {
    "ok", "origin", "entries", "complete", "first_index", "end_index", "checkpoint_size", "latest_size",
    "cosigned_by", "findings",
}  # fmt: skip


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    led = build_ledger(tmp_path_factory.mktemp("cli-evidence") / "data", [100, 200])
    led.close()
    return led


def since_until(first: int, end: int) -> list[str]:
    return ["--since", iso_time(T0 + first * S), "--until", iso_time(T0 + end * S)]


def test_evidence_writes_a_pack_that_verify_evidence_accepts(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / f"q1{pack.FILE_EXTENSION}"
    code, text = run("evidence", "--data-dir", str(ledger.data_dir), *since_until(10, 60), "--out", str(out), "--json")
    assert code == 0
    doc = json.loads(text)
    assert set(doc) == EVIDENCE_KEYS
    assert (doc["entries"], doc["first_index"], doc["end_index"], doc["complete"]) == (50, 10, 60, True)
    assert (doc["checkpoint_size"], doc["latest_size"]) == (100, 200)
    assert doc["bytes"] == out.stat().st_size and doc["sha256"] == pack.sha256_hex(out.read_bytes())
    vkey = ledger.signer.verifier_key()
    code, text = run("verify-evidence", str(out), "--vkey", vkey)
    assert code == 0 and text.startswith(
        f"OK: {out}: 50 decisions of authz-ledger.test/log, every entry of indexes 10..59"
    )
    code, text = run("verify-evidence", str(out), "--vkey", vkey, "--json")
    verdict = json.loads(text)
    assert code == 0 and set(verdict) == VERIFY_KEYS and verdict["ok"] and verdict["findings"] == []


def test_a_filtered_pack_from_the_command_line(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "denied.zip"
    code, text = run(
        "evidence", "--data-dir", str(ledger.data_dir), *since_until(0, 200), "--filter", "outcome:deny",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0 and "matching 'outcome:deny'" in text and "proofs checked" in text
    code, text = run("verify-evidence", str(out), "--vkey", ledger.signer.verifier_key(), "--json")
    assert code == 0 and json.loads(text)["complete"] is False


def test_verify_evidence_names_a_changed_entry_and_exits_1(ledger: Ledger, tmp_path: Path) -> None:
    out = tmp_path / "p.zip"
    assert run("evidence", "--data-dir", str(ledger.data_dir), *since_until(0, 30), "--out", str(out))[0] == 0
    with zipfile.ZipFile(out) as z:
        m = {name: z.read(name) for name in pack.MEMBERS}
    m[pack.ENTRIES] = m[pack.ENTRIES].replace(b'"outcome": "OUTCOME_DENY"', b'"outcome": "OUTCOME_ALLOW"', 1)
    m[pack.ENTRIES] = m[pack.ENTRIES].replace(b'"outcome": "deny"', b'"outcome": "allow"', 1)
    changed = tmp_path / "changed.zip"
    changed.write_bytes(pack.write_zip(m))
    code, text = run("verify-evidence", str(changed), "--vkey", ledger.signer.verifier_key())
    assert code == 1
    assert text.startswith(f"FAIL: {changed}: 1 problem(s)")
    assert "entries.jsonl line 2 (index 1): does not match its own entry bytes" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"],
            "--since must be before",
            id="a window that ends before it starts is refused",
        ),
        pytest.param(["--since", "yesterday"], "bad time", id="a time that does not parse is refused"),
        pytest.param(
            ["--since", "1000w", "--filter", "frobnicate:1"], "frobnicate", id="a filter that does not parse is refused"
        ),
        pytest.param(
            ["--since", "1000w", "--filter", "outcome:deny since:1h"],
            "must not hold since:",
            id="a relative time in the filter is refused: a pack's window is absolute",
        ),
    ],
)
def test_bad_arguments_are_usage_errors(
    ledger: Ledger, tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("evidence", "--data-dir", str(ledger.data_dir), *argv, "--out", str(tmp_path / "x.zip"))
    assert code in (1, 2) and message in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_a_pack_checks_in_another_process_with_nothing_but_the_public_key(ledger: Ledger, tmp_path: Path) -> None:
    """What an auditor does: a copy of the pack, a key string, the installed command; no data directory."""
    out = tmp_path / "copy.zip"
    assert run("evidence", "--data-dir", str(ledger.data_dir), *since_until(5, 15), "--out", str(out))[0] == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    proc = subprocess.run(
        [sys.executable, "-m", "authz_ledger.cli", "verify-evidence", str(out), "--vkey", ledger.signer.verifier_key()],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"OK: {out}: 10 decisions")


@pytest.mark.parametrize("flag", ["--vkey", "--witness-vkey"], ids=["a log key", "a witness key"])
def test_a_verifier_key_that_does_not_parse_is_a_usage_error_not_a_failed_pack(
    ledger: Ledger, tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.evidence.zip"
    assert run("evidence", "--data-dir", str(ledger.data_dir), *since_until(10, 20), "--out", str(out))[0] == 0
    good = ["--vkey", ledger.signer.verifier_key()]
    argv = [*good, flag, "not-a-key"] if flag == "--witness-vkey" else [flag, "not-a-key"]
    code, _ = run("verify-evidence", str(out), *argv)
    assert code == 2 and "not a verifier key" in capsys.readouterr().err


def test_witness_keys_may_be_given_in_a_file(ledger: Ledger, tmp_path: Path) -> None:
    out, keys_file = tmp_path / "p.evidence.zip", tmp_path / "witnesses.vkeys"
    assert run("evidence", "--data-dir", str(ledger.data_dir), *since_until(10, 20), "--out", str(out))[0] == 0
    keys_file.write_text(ledger.signer.verifier_key() + "\n\n")
    code, text = run(
        "verify-evidence", str(out), "--vkey", ledger.signer.verifier_key(), "--witness-vkey", str(keys_file)
    )
    assert code == 0 and text.startswith("OK: ")
