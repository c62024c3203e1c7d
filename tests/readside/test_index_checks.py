"""The decision-id index is a lookup aid, never evidence: every answer by decision id is checked against the entry.

A row redirected to another entry (by someone with disk access) makes ``show --decision-id`` and ``receipt``
fail with a clear error, locally and through the audit API; ``verify-receipt --decision-id`` checks the decision
the user asked about against the entry the receipt proves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_ledger.config import AuditConfig
from authz_ledger.ledger.store import Store, u64
from authz_ledger.readside.audit import start_audit_server
from tests.conftest import ROOT
from tests.support.readside import Ledger, build_ledger, open_ledger

CLI = [sys.executable, "-m", "authz_ledger.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), os.environ.get("PYTHONPATH", "")])}


def run(*argv: str) -> tuple[int, str, str]:
    """Its own process: the audit server of this module holds the LMDB environment open in this one."""
    proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=ENV, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _redirect(store: Store, decision_id: str, to: int) -> None:
    with store.env.begin(write=True) as txn:
        txn.put(uuid.UUID(decision_id).bytes, u64(to), db=store.ids)


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """30 entries; the index row of entry 12's decision points at entry 20."""
    led = build_ledger(tmp_path_factory.mktemp("ids") / "data", [30])
    _redirect(led.store, led.decision_ids[12], 20)
    led.close()
    return led


@pytest.fixture(scope="module")
def served(tampered: Ledger) -> Iterator[list[str]]:
    led = open_ledger(tampered.data_dir)
    server = start_audit_server(AuditConfig(addr="127.0.0.1:0"), led.store, led.writer)
    yield ["--server", f"127.0.0.1:{server.port}"]
    server.stop(0)
    led.close()


@pytest.fixture(params=["from a data dir", "from a server"])
def where(request: pytest.FixtureRequest, tampered: Ledger) -> list[str]:
    if request.param == "from a data dir":
        return ["--data-dir", str(tampered.data_dir)]
    return list(request.getfixturevalue("served"))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["show", "--json"], id="show by a redirected decision id is an error, not another decision"),
        pytest.param(["receipt"], id="receipt by a redirected decision id is an error, not another's receipt"),
    ],
)
def test_a_redirected_index_row_is_an_error(tampered: Ledger, where: list[str], command: list[str]) -> None:
    code, out, err = run(*command, *where, "--decision-id", tampered.decision_ids[12])
    assert (code, out) == (1, "")
    assert f"leads decision {tampered.decision_ids[12]} to entry 20" in err and "index was altered" in err


def test_untouched_rows_still_answer(tampered: Ledger, where: list[str]) -> None:
    code, out, _ = run("show", *where, "--decision-id", tampered.decision_ids[13], "--json")
    assert code == 0 and json.loads(out)["index"] == 13


def test_verify_receipt_checks_the_decision_it_was_given(tmp_path: Path, tampered: Ledger) -> None:
    where = ["--data-dir", str(tampered.data_dir)]
    receipt, entry = tmp_path / "r.txt", tmp_path / "e.bin"
    code, _, _ = run("receipt", *where, "--index", "5", "--out", str(receipt), "--entry-out", str(entry))
    assert code == 0
    vkey = tampered.signer.verifier_key()
    common = ["verify-receipt", "--receipt", str(receipt), "--entry", str(entry), "--vkey", vkey, "--json"]
    code, out, _ = run(*common, "--decision-id", tampered.decision_ids[5])
    assert code == 0 and json.loads(out)["decision_id"] == tampered.decision_ids[5]
    code, out, err = run(*common, "--decision-id", tampered.decision_ids[6])
    assert (code, out) == (1, "")
    assert f"records decision {tampered.decision_ids[5]}, not {tampered.decision_ids[6]}" in err
