"""Key rotation end to end: keygen, an overlap where both keys sign, retirement, and verification with the right vkeys.

The flow an operator follows (README "Key rotation"):

1. ``authz-ledger keygen --origin O --out new.key`` -- the new key is named after the same origin;
2. ``authz-ledger serve --key old.key --key new.key`` -- every checkpoint carries both signatures;
3. ``authz-ledger serve --key new.key --verifier-key OLD`` -- the old key is retired; its vkey stays trusted, for
   the checkpoints it alone signed (start-up verifies every one of them);
4. ``authz-ledger verify --vkey OLD --vkey NEW`` verifies every checkpoint; one key alone does not.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger import config, server
from authz_ledger.cli import main as cli
from authz_ledger.cli.main import main as cli_main
from authz_ledger.errors import LedgerCorruptError, LedgerError
from authz_ledger.ledger.opening import LedgerPaths, open_for_serving
from authz_ledger.ledger.store import Store
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, TEST_DEFAULTS, free_port, serve_process, stop_process

ONE_CHECKPOINT_PER_SESSION = ("ledger.checkpoint_interval_ms=3600000",)
"""Only the final checkpoint at shutdown, so each session's checkpoint sizes are known exactly."""


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def keygen(path: Path) -> str:
    code, out = run_cli("keygen", "--origin", ORIGIN, "--out", str(path))
    assert code == 0
    return out.strip()


def check(port: int, n: int) -> None:
    stub: Any = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    for _ in range(n):
        stub.Check(external_auth_pb2.CheckRequest())


def serve_in_process(data_dir: Path, *key_files: Path, checks: int, verifier_keys: tuple[str, ...] = ()) -> None:
    """``serve --key ...`` in this process (cmd_serve's overrides), ``checks`` Checks, then the SIGTERM sequence."""
    cfg = config.load(
        sets=[*TEST_DEFAULTS, *ONE_CHECKPOINT_PER_SESSION],
        environ={},
        overrides={
            "server.addr": f"127.0.0.1:{free_port()}",
            "ledger.data_dir": str(data_dir),
            "ledger.origin": ORIGIN,
            "ledger.signing_keys": [str(k) for k in key_files],
            "ledger.verifier_keys": list(verifier_keys),
        },
    )
    running = server.start(cfg)
    try:
        check(running.port, checks)
    finally:
        running.stop()


def serve_with_key_flags(data_dir: Path, *key_files: Path, checks: int, log: Path) -> None:
    """The real command line: ``authz-ledger serve --key A --key B``, as its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "authz_ledger.cli", "serve", "--addr", f"127.0.0.1:{port}"]
    argv += ["--data-dir", str(data_dir)]
    for k in key_files:
        argv += ["--key", str(k)]
    for item in (*TEST_DEFAULTS, *ONE_CHECKPOINT_PER_SESSION, f"ledger.origin={ORIGIN}"):
        argv += ["--set", item]
    with log.open("a") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "serving ext_authz v3" in line, log.read_text()[-3000:]
        check(port, checks)
    finally:
        assert stop_process(proc, signal.SIGTERM) == 0


def signers_by_size(data_dir: Path, old_vkey: str, new_vkey: str) -> dict[int, set[str]]:
    """For each stored checkpoint, which of the two keys signed it ("old", "new")."""
    names = {note.Verifier.from_vkey(old_vkey).key_id: "old", note.Verifier.from_vkey(new_vkey).key_id: "new"}
    verifiers = [note.Verifier.from_vkey(old_vkey), note.Verifier.from_vkey(new_vkey)]
    store = Store(LedgerPaths(data_dir).store, readonly=True)
    try:
        return {
            size: {names[s.key_id] for s in note.open_note(signed, verifiers).verified}
            for size, signed in store.iter_checkpoints()
        }
    finally:
        store.close()


def copy_of(rotated: tuple[Path, str, str], tmp_path: Path) -> tuple[Path, str, str]:
    """A private copy of the rotated ledger and its key files, for a test that starts it again."""
    data, old_vkey, new_vkey = rotated
    shutil.copytree(data.parent, tmp_path / "copy", ignore=shutil.ignore_patterns("*.log"))
    return tmp_path / "copy" / "data", old_vkey, new_vkey


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A ledger taken through a whole rotation: old key (twice), old + new (real --key flags), new key only.

    Shared by the tests of this module, which only read it (or copy it first).
    """
    tmp_path = tmp_path_factory.mktemp("rotation")
    data = tmp_path / "data"
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_vkey, new_vkey = keygen(old_key), keygen(new_key)
    serve_in_process(data, old_key, checks=1)
    serve_in_process(data, old_key, checks=1)
    serve_with_key_flags(data, old_key, new_key, checks=3, log=tmp_path / "overlap.log")
    serve_in_process(data, new_key, checks=4, verifier_keys=(old_vkey,))  # the old key retired, its vkey trusted
    return data, old_vkey, new_vkey


def test_two_keys_for_one_origin_have_different_key_ids_and_both_sign_during_the_overlap(
    rotated: tuple[Path, str, str],
) -> None:
    data, old_vkey, new_vkey = rotated
    assert old_vkey.split("+")[0] == new_vkey.split("+")[0] == ORIGIN
    assert old_vkey.split("+")[1] != new_vkey.split("+")[1]
    # Each session signs one final checkpoint (the interval is longer than the test).
    assert signers_by_size(data, old_vkey, new_vkey) == {1: {"old"}, 2: {"old", "new"}, 5: {"old", "new"}, 9: {"new"}}


def test_verify_with_both_vkeys_accepts_every_checkpoint_of_a_rotated_ledger(rotated: tuple[Path, str, str]) -> None:
    data, old_vkey, new_vkey = rotated
    code, out = run_cli("verify", "--data-dir", str(data), "--vkey", old_vkey, "--vkey", new_vkey, "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["size"], report["checkpoints"]) == (0, True, 9, 4)


def test_verify_accepts_a_file_holding_both_vkeys(tmp_path: Path, rotated: tuple[Path, str, str]) -> None:
    data, old_vkey, new_vkey = rotated
    trusted = tmp_path / "trusted.vkeys"
    trusted.write_text(f"{old_vkey}\n{new_vkey}\n")
    assert run_cli("verify", "--data-dir", str(data), "--vkey", str(trusted))[0] == 0


@pytest.mark.parametrize(
    ("case", "which", "first_bad_seq"),
    [
        ("with only the new vkey the checkpoints signed by the old key alone fail", "new", 0),
        ("with only the old vkey the checkpoints signed by the new key alone fail", "old", 8),
    ],
)
def test_verify_with_one_vkey_fails_on_the_checkpoints_that_key_did_not_sign(
    rotated: tuple[Path, str, str], case: str, which: str, first_bad_seq: int
) -> None:
    data, old_vkey, new_vkey = rotated
    vkey = new_vkey if which == "new" else old_vkey
    code, out = run_cli("verify", "--data-dir", str(data), "--vkey", vkey, "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["first_bad_seq"]) == (1, False, first_bad_seq)
    assert "does not verify" in report["error"]


def test_after_retirement_the_ledger_keeps_restarting_on_the_new_key_alone(
    tmp_path: Path, rotated: tuple[Path, str, str]
) -> None:
    data, old_vkey, new_vkey = copy_of(rotated, tmp_path)
    serve_in_process(data, data.parent / "new.key", checks=1, verifier_keys=(old_vkey,))
    assert signers_by_size(data, old_vkey, new_vkey)[10] == {"new"}


def test_a_retired_key_whose_vkey_is_not_trusted_any_more_refuses_the_start(
    tmp_path: Path, rotated: tuple[Path, str, str]
) -> None:
    # Start-up verifies every checkpoint: the one the old key alone signed needs its vkey, and the refusal says so.
    data, _, _ = copy_of(rotated, tmp_path)
    with pytest.raises(LedgerCorruptError, match=r"checkpoint for size 1 does not verify.*--verifier-key"):
        serve_in_process(data, data.parent / "new.key", checks=0)


def test_the_old_key_alone_can_no_longer_serve_after_retirement(tmp_path: Path, rotated: tuple[Path, str, str]) -> None:
    # The latest checkpoint is signed by the new key only: starting on the old key alone would verify nothing
    # since that checkpoint, and the ledger refuses rather than sign on top of an unverified state.
    data, _, _ = copy_of(rotated, tmp_path)
    with pytest.raises(LedgerCorruptError, match="checkpoint for size 9 does not verify"):
        serve_in_process(data, data.parent / "old.key", checks=0)


def test_retiring_the_old_key_after_an_overlap_without_new_entries_still_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_vkey = keygen(old_key)
    keygen(new_key)
    serve_in_process(data, old_key, checks=2)
    serve_in_process(data, old_key, new_key, checks=0)  # overlap with no traffic: nothing new is signed
    # The latest checkpoint got the new key's signature at the overlap's start; the older ones keep the old key's.
    serve_in_process(data, new_key, checks=1, verifier_keys=(old_vkey,))


def test_serve_with_a_key_alone_takes_the_log_origin_from_the_key(tmp_path: Path) -> None:
    # The newcomer's path: keygen with an origin, then serve --key, nothing else.
    key = tmp_path / "k"
    assert cli_main(["keygen", "--origin", "example.org/authz", "--out", str(key)], out=io.StringIO()) == 0
    data = tmp_path / "data"
    port = free_port()
    proc = serve_process(data, port, "ledger.checkpoint_interval_ms=50", keys=[key])
    try:
        check = ["check", "--addr", f"127.0.0.1:{port}", "--audit-addr", "", "--path", "/health"]
        assert cli_main(check, out=io.StringIO()) == 0  # one decision, so that a checkpoint is signed
    finally:
        assert stop_process(proc) == 0
    out = io.StringIO()
    assert cli_main(["checkpoint", "--data-dir", str(data)], out=out) == 0
    assert out.getvalue().splitlines()[0] == "example.org/authz"


def test_an_explicit_origin_that_no_key_is_named_after_is_still_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    cli_main(["keygen", "--origin", "example.org/authz", "--out", str(key)], out=io.StringIO())
    cfg = config.load(sets=["ledger.origin=example.org/other"], overrides={"ledger.signing_keys": [str(key)]})
    cfg.ledger.data_dir = str(tmp_path / "data")
    with pytest.raises(LedgerError, match=r"no signing key is named after the origin 'example\.org/other'"):
        open_for_serving(cfg.ledger)


def test_without_keys_or_origin_the_default_origin_applies() -> None:
    assert config.load(environ={}).ledger.origin == config.DEFAULT_ORIGIN
