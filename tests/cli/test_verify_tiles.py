"""``authz-ledger verify-tiles``: exit codes, the ``--json`` contract, keys from files, and the state file."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz_ledger.cli import main as cli
from authz_ledger.ledger.store import Store
from authz_ledger.tlog import note
from authz_ledger.tlog.cosignature import Cosigner
from tests.conftest import ORIGIN
from tests.support.exports import append
from tests.support.published import Published, flip_byte, other_history, serve_directory

SUCCESS_FIELDS = {
    "ok", "location", "origin", "tree_size", "root", "entries_checked", "tiles_checked", "bundles_checked",
    "bytes_fetched", "witnesses", "state", "trusted_size", "seconds", "error", "code",
}  # fmt: skip


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["verify-tiles", *argv], out=out)
    return code, out.getvalue()


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, text = run(*argv, "--json")
    assert text.count("\n") == 1, text
    return code, json.loads(text)


@pytest.fixture
def log(store: Store, signer: note.Signer) -> Published:
    append(store, signer, 600)
    return Published(store, signer, [Cosigner.generate("witness.test/w1"), Cosigner.generate("witness.test/w2")])


@pytest.fixture
def keys(log: Published, tmp_path: Path) -> list[str]:
    """``--vkey`` and ``--witness-vkey`` flags naming files: the log key, and both witness keys in one file."""
    (tmp_path / "log.vkey").write_text(log.vkey + "\n")
    (tmp_path / "witnesses.vkeys").write_text("\n".join(log.witness_vkeys) + "\n\n")
    return ["--vkey", str(tmp_path / "log.vkey"), "--witness-vkey", str(tmp_path / "witnesses.vkeys")]


def test_the_state_file_is_created_then_advanced_then_left_alone(log: Published, tmp_path: Path) -> None:
    pub, state = tmp_path / "pub", tmp_path / "trusted-checkpoint"
    log.export(pub, 300)
    flags = ["--vkey", log.vkey, *(f for v in log.witness_vkeys for f in ("--witness-vkey", v)), "--state", str(state)]
    code, doc = run_json(str(pub), *flags)
    assert code == 0
    assert set(doc) == SUCCESS_FIELDS
    assert doc["ok"] is True and doc["error"] is None and doc["code"] is None
    assert (doc["origin"], doc["tree_size"], doc["state"], doc["trusted_size"]) == (ORIGIN, 300, "created", None)
    assert (doc["entries_checked"], doc["bundles_checked"], doc["tiles_checked"]) == (300, 2, 3)
    assert doc["witnesses"] == ["witness.test/w1", "witness.test/w2"]
    assert state.read_bytes() == (pub / "checkpoint").read_bytes()

    log.export(pub, 600)
    code, doc = run_json(str(pub), *flags)
    assert (code, doc["tree_size"], doc["state"], doc["trusted_size"]) == (0, 600, "advanced", 300)
    assert state.read_bytes() == (pub / "checkpoint").read_bytes()

    before = state.stat()
    code, doc = run_json(str(pub), *flags)
    assert (code, doc["state"], doc["trusted_size"]) == (0, "unchanged", 600)
    assert (state.stat().st_ino, state.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_people_read_one_line_per_fact(log: Published, tmp_path: Path, keys: list[str]) -> None:
    log.export(tmp_path / "pub", 600)
    code, text = run(str(tmp_path / "pub"), *keys, "--state", str(tmp_path / "state"))
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"OK: {tmp_path / 'pub'}: {ORIGIN} at tree size 600, root ")
    assert "600 entries in 3 bundles and 4 hash tiles verified in" in lines[0]
    assert lines[1:] == [
        "cosigned by witness.test/w1, witness.test/w2",
        f"state {tmp_path / 'state'} created at tree size 600",
    ]


def test_a_log_served_over_http_verifies(log: Published, tmp_path: Path, keys: list[str]) -> None:
    log.export(tmp_path, 600)
    with serve_directory(tmp_path) as served:
        code, doc = run_json(served.url, *keys)
    assert (code, doc["ok"], doc["tree_size"], doc["location"], doc["state"]) == (0, True, 600, served.url, None)


Setup = Callable[[Path, Published], Any]
FAILURES: dict[str, tuple[Setup, list[str], str, str]] = {
    "a flipped byte in an entry bundle": (
        lambda tmp, log: flip_byte(tmp / "pub/tile/entries/000", 77),
        [],
        "tiles_invalid",
        "does not hash to its leaf hash in tile tile/0/000",
    ),
    "a rollback against the state file": (
        lambda tmp, log: (tmp / "state").write_bytes(log.signed(600)),
        [],
        "tiles_rollback",
        "rollback: the location publishes tree size 300, smaller than the trusted tree size 600",
    ),
    "a fork against the state file": (
        lambda tmp, log: (tmp / "state").write_bytes(other_history(tmp, log.signer, 100)),
        [],
        "tiles_fork",
        "fork: the trusted checkpoint has root",
    ),
    "a checkpoint signed by another key": (
        lambda tmp, log: None,
        ["--vkey", note.generate_signer(ORIGIN).verifier_key()],
        "note",
        "no verifiable signature by a known key",
    ),
    "a witness that did not cosign": (
        lambda tmp, log: None,
        ["--witness-vkey", Cosigner.generate("witness.test/w3").vkey()],
        "note",
        "no cosignature by witness witness.test/w3+",
    ),
}


@pytest.mark.parametrize(
    ("setup", "flags", "code", "message"), FAILURES.values(), ids=[f"{k} exits 1" for k in FAILURES]
)
def test_a_log_that_does_not_verify_exits_1_and_leaves_the_state_alone(
    log: Published, tmp_path: Path, setup: Setup, flags: list[str], code: str, message: str
) -> None:
    log.export(tmp_path / "pub", 300)
    setup(tmp_path, log)
    state_before = (tmp_path / "state").read_bytes() if (tmp_path / "state").exists() else None
    key_flags = ["--vkey", log.vkey] if "--vkey" not in flags else []
    argv = [str(tmp_path / "pub"), *key_flags, *flags, "--state", str(tmp_path / "state")]
    exit_code, doc = run_json(*argv)
    assert exit_code == 1
    assert (doc["ok"], doc["code"], doc["location"]) == (False, code, str(tmp_path / "pub"))
    assert message in doc["error"]
    exit_code, text = run(*argv)
    assert exit_code == 1 and text.startswith(f"FAIL: {tmp_path / 'pub'}: ") and message in text
    after = (tmp_path / "state").read_bytes() if (tmp_path / "state").exists() else None
    assert after == state_before


USAGE: dict[str, tuple[Callable[[Path, Published], list[str]], str, str]] = {
    "a location that does not exist": (
        lambda tmp, log: [str(tmp / "nowhere"), "--vkey", log.vkey],
        "tiles_unreadable",
        "is not a directory",
    ),
    "a directory that holds no checkpoint": (
        lambda tmp, log: [str(tmp), "--vkey", log.vkey],
        "tiles_unreadable",
        "no checkpoint is served",
    ),
    "a malformed --vkey": (lambda tmp, log: [str(tmp / "pub"), "--vkey", "not-a-key"], "config", "--vkey: "),
    "a log key given as a witness key": (
        lambda tmp, log: [str(tmp / "pub"), "--vkey", log.vkey, "--witness-vkey", log.vkey],
        "config",
        "is not 0x04",
    ),
    "a state file that cannot be read": (
        lambda tmp, log: [str(tmp / "pub"), "--vkey", log.vkey, "--state", str(tmp)],
        "config",
        "cannot read the state file",
    ),
    "a URL scheme other than http(s)": (
        lambda tmp, log: ["ftp://example.test/log", "--vkey", log.vkey],
        "config",
        "only directories and http:// or https:// prefixes",
    ),
}


@pytest.mark.parametrize(("argv", "code", "message"), USAGE.values(), ids=[f"{k} exits 2" for k in USAGE])
def test_a_verification_that_cannot_be_done_exits_2(
    log: Published,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: Callable[[Path, Published], list[str]],
    code: str,
    message: str,
) -> None:
    log.export(tmp_path / "pub", 300)
    args = argv(tmp_path, log)
    exit_code, doc = run_json(*args)
    assert (exit_code, doc["ok"], doc["code"]) == (2, False, code)
    assert message in doc["error"]
    exit_code, text = run(*args)
    assert (exit_code, text) == (2, "")
    assert message in capsys.readouterr().err
