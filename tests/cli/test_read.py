"""The read-side CLI (show, list, tail, receipt, verify-receipt, proof) on a data directory and against a server.

The ``proof --json`` outputs are contracts: their exact keys are checked, and their proofs verified with the
RFC 9162 algorithms written independently in tests/rfc9162.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format

from authz_ledger.cli import main as cli
from authz_ledger.config import AuditConfig
from authz_ledger.ledger.writer import Durability
from authz_ledger.readside.audit import AuditServer, start_audit_server
from tests.conftest import ROOT, free_port, make_writer, serve_process, stop_process
from tests.readside.test_audit import Pki, make_pki
from tests.support import rfc9162
from tests.support.readside import Ledger, build_ledger, open_ledger, record
from tests.support.waits import wait_until

pytestmark = pytest.mark.timeout(300)

CLI = [sys.executable, "-m", "authz_ledger.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "server"), os.environ.get("PYTHONPATH", "")])}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def run_ok(*argv: str) -> str:
    code, out = run(*argv)
    assert code == 0, f"authz-ledger {' '.join(argv)} exited {code}"
    return out


def b64(s: str) -> bytes:
    return base64.b64decode(s)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Ledger, list[bytes]]:
    """A closed data dir (checkpoints at 10, 40, 77), read with --data-dir."""
    led = build_ledger(tmp_path_factory.mktemp("cli") / "data", [10, 40, 77])
    raw = led.raw_entries()
    led.close()
    return ["--data-dir", str(led.data_dir)], led, raw


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Ledger, list[bytes]]]:
    """A served ledger (checkpoints at 10, 40, 77; writer running), read with --server."""
    led = build_ledger(tmp_path_factory.mktemp("cli") / "data", [10, 40, 77])
    raw = led.raw_entries()
    led.writer.start()
    server = start_audit_server(AuditConfig(addr="127.0.0.1:0"), led.store, led.writer)
    yield ["--server", f"127.0.0.1:{server.port}"], led, raw
    server.stop(0)
    led.writer.close()
    led.close()


@pytest.fixture(params=["from a data dir", "from a server"])
def source(request: pytest.FixtureRequest) -> tuple[list[str], Ledger, list[bytes]]:
    return request.getfixturevalue("local" if request.param == "from a data dir" else "remote")  # type: ignore[no-any-return]


# --- proof contracts ---------------------------------------------------------------------------------------

INCLUSION = {
    "an explicit tree size": (["--index", "5", "--tree-size", "40"], 5, 40),
    "the last entry of a checkpoint": (["--index", "39", "--tree-size", "40"], 39, 40),
    "a size with no checkpoint": (["--index", "0", "--tree-size", "33"], 0, 33),
    "the latest checkpoint's size when none is given": (["--index", "60"], 60, 77),
}


@pytest.mark.parametrize(("args", "index", "size"), INCLUSION.values(), ids=INCLUSION.keys())
def test_proof_inclusion_json_is_the_contract_and_verifies(
    source: tuple[list[str], Ledger, list[bytes]], args: list[str], index: int, size: int
) -> None:
    where, _, raw = source
    doc = json.loads(run_ok("proof", "inclusion", *where, *args, "--json"))
    assert list(doc) == ["index", "tree_size", "leaf_b64", "root", "proof"]
    assert (doc["index"], doc["tree_size"], b64(doc["leaf_b64"])) == (index, size, raw[index])
    assert b64(doc["root"]) == rfc9162.mth(raw[:size])
    proof = [b64(h) for h in doc["proof"]]
    assert rfc9162.verify_inclusion(index, size, rfc9162.leaf(b64(doc["leaf_b64"])), proof, b64(doc["root"]))


CONSISTENCY = {
    "between two checkpoints": (["--from", "10", "--to", "40"], 10, 40),
    "from a size that is not a checkpoint": (["--from", "13", "--to", "77"], 13, 77),
    "to the latest checkpoint's size when none is given": (["--from", "40"], 40, 77),
    "between equal sizes": (["--from", "40", "--to", "40"], 40, 40),
    "from the empty tree": (["--from", "0", "--to", "10"], 0, 10),
}


@pytest.mark.parametrize(("args", "size1", "size2"), CONSISTENCY.values(), ids=CONSISTENCY.keys())
def test_proof_consistency_json_is_the_contract_and_verifies(
    source: tuple[list[str], Ledger, list[bytes]], args: list[str], size1: int, size2: int
) -> None:
    where, _, raw = source
    doc = json.loads(run_ok("proof", "consistency", *where, *args, "--json"))
    assert list(doc) == ["size1", "root1", "size2", "root2", "proof"]
    assert (doc["size1"], doc["size2"]) == (size1, size2)
    root1, root2 = b64(doc["root1"]), b64(doc["root2"])
    assert (root1, root2) == (rfc9162.mth(raw[:size1]), rfc9162.mth(raw[:size2]))
    proof = [b64(h) for h in doc["proof"]]
    if size1 == 0:
        assert proof == []  # C2SP tlog-witness: every tree extends the empty tree, with an empty proof
    else:
        assert rfc9162.verify_consistency(size1, size2, root1, root2, proof)


def test_a_data_dir_and_its_server_print_the_same_proofs(remote: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, led, _ = remote
    for args in (["inclusion", "--index", "7", "--tree-size", "40"], ["consistency", "--from", "3", "--to", "77"]):
        via_server = run_ok("proof", *args, *where, "--json")
        # The data dir is open for writing in this process; another process reads it (as while serving).
        proc = subprocess.run(
            [*CLI, "proof", *args, "--data-dir", str(led.data_dir), "--json"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == via_server


# --- show, list, tail --------------------------------------------------------------------------------------


def test_show_by_index_and_by_decision_id(source: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, led, raw = source
    by_index = json.loads(run_ok("show", *where, "--index", "12", "--json"))
    by_id = json.loads(run_ok("show", *where, "--decision-id", led.decision_ids[12], "--json"))
    assert by_index == by_id
    assert by_index["index"] == 12 and b64(by_index["entry_b64"]) == raw[12]
    assert by_index["decision_id"] == led.decision_ids[12] and by_index["path"] == "/svc0/item12"


def test_show_prints_aligned_key_value_lines_for_people(source: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, led, raw = source
    doc = json.loads(run_ok("show", *where, "--index", "12", "--json"))
    text = run_ok("show", *where, "--index", "12")
    head, _, rest = text.partition("\ninput:")
    fields = dict(line.split(":", 1) for line in head.splitlines())
    assert fields["index"].strip() == "12" and fields["decision id"].strip() == led.decision_ids[12]
    assert fields["path"].strip() == "/svc0/item12" and fields["entry"].strip() == f"{len(raw[12])} bytes"
    assert fields["time"].strip().endswith("Z") and len(fields["time"].strip()) == len("2023-11-14T22:13:20.123456789Z")
    assert fields["outcome"].strip() == doc["outcome"] and fields["method"].strip() == doc["method"]
    # Aligned: every value starts in the same column.
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in head.splitlines()}
    assert len(columns) == 1, head
    # The input and result follow as indented JSON, the same documents --json holds.
    input_text, _, result_text = rest.partition("\nresult:")
    assert json.loads(input_text) == doc["input"]
    assert result_text.strip() == "-" if doc["result"] is None else json.loads(result_text) == doc["result"]


def test_list_with_filters(source: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, led, _ = source
    out = run_ok("list", *where, "--outcome", "deny", "--path-prefix", "/svc1/item1", "--limit", "4", "--json")
    assert [json.loads(line)["index"] for line in out.splitlines()] == [1, 10, 13, 16]
    out = run_ok(
        "list", *where, "--from", "20", "--to", "30", "--since", "2023-11-14T22:13:45Z", "--principal",
        "spiffe://example/sa/client1",
    )  # fmt: skip
    # T0 is 2023-11-14T22:13:20Z and entries are a second apart: from entry 25 on, clients 1 are 25 and 29.
    header, *rows = out.splitlines()
    assert header.split() == [
        "INDEX",
        "TIME",
        "(UTC)",
        "OUTCOME",
        "HTTP",
        "METHOD",
        "HOST",
        "PRINCIPAL",
        "DECISION",
        "PATH",
    ]
    assert [int(line.split()[0]) for line in rows] == [25, 29]
    # Aligned: every column starts where its heading does; ISO 8601 time, short decision id, the path last.
    for row in rows:
        assert row[header.index("TIME")] == "2" and row[header.index("PRINCIPAL") :].startswith("spiffe://example/")
    cells = rows[0].split()
    assert cells[1] == "2023-11-14T22:13:45.000Z"  # ISO 8601, UTC
    assert cells[6] == "spiffe://example/sa/client1" and cells[8].startswith("/svc")
    assert cells[7] == "…" + led.decision_ids[25][-8:]  # the random tail of the UUIDv7, not its time prefix


def test_tail_prints_the_last_entries(source: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, led, _ = source
    out = run_ok("tail", *where, "-n", "3", "--json")
    size = len(led.decision_ids)
    assert [json.loads(line)["index"] for line in out.splitlines()] == [size - 3, size - 2, size - 1]


def _read_lines(stream: Any, n: int, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < n and time.monotonic() < deadline:
        line = stream.readline()
        if line:
            lines.append(line)
    return lines


def test_tail_follow_on_a_data_dir_prints_entries_committed_later(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "data", [5])
    try:
        proc = subprocess.Popen(
            [*CLI, "tail", "-f", "-n", "2", "--data-dir", str(led.data_dir), "--json"],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        try:
            assert [json.loads(x)["index"] for x in _read_lines(proc.stdout, 2, 30)] == [3, 4]
            led.append(3)
            assert [json.loads(x)["index"] for x in _read_lines(proc.stdout, 3, 30)] == [5, 6, 7]
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        led.close()


def test_tail_follow_against_a_server_prints_entries_committed_later(
    remote: tuple[list[str], Ledger, list[bytes]],
) -> None:
    where, led, _ = remote
    size = len(led.decision_ids)
    proc = subprocess.Popen(
        [*CLI, "tail", "-f", "-n", "1", *where, "--json"], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert [json.loads(x)["index"] for x in _read_lines(proc.stdout, 1, 30)] == [size - 1]
        led.record(2)
        assert [json.loads(x)["index"] for x in _read_lines(proc.stdout, 2, 30)] == [size, size + 1]
    finally:
        proc.terminate()
        proc.wait(10)


# --- receipts ----------------------------------------------------------------------------------------------


def test_a_receipt_and_its_entry_verify_offline_with_the_vkey(
    tmp_path: Path, source: tuple[list[str], Ledger, list[bytes]]
) -> None:
    where, led, raw = source
    rfile, efile = tmp_path / "d.tlog-proof", tmp_path / "d.entry"
    out = run_ok(
        "receipt", *where, "--decision-id", led.decision_ids[21], "--out", str(rfile), "--entry-out", str(efile)
    )
    assert "receipt for entry 21" in out
    assert efile.read_bytes() == raw[21]
    assert rfile.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\nindex 21\n")
    vkey = led.signer.verifier_key()
    out = run_ok("verify-receipt", "--receipt", str(rfile), "--entry", str(efile), "--vkey", vkey)
    decision = led.decision_ids[21]
    assert out.startswith(f"OK: {rfile}: entry 21 (decision {decision}) is in {led.signer.name} at tree size 77")
    doc = json.loads(run_ok("verify-receipt", "--receipt", str(rfile), "--entry", str(efile), "--vkey", vkey, "--json"))
    assert doc == {
        "ok": True,
        "index": 21,
        "origin": led.signer.name,
        "tree_size": 77,
        "root": base64.b64encode(rfc9162.mth(raw[:77])).decode(),
        "decision_id": decision,
    }


def test_receipt_prints_the_tlog_proof_when_no_file_is_given(local: tuple[list[str], Ledger, list[bytes]]) -> None:
    where, _, _ = local
    out = run_ok("receipt", *where, "--index", "3")
    assert out.startswith("c2sp.org/tlog-proof@v1\nindex 3\n") and out.endswith("\n")


def test_verify_receipt_fails_for_other_bytes_or_another_key(
    tmp_path: Path, local: tuple[list[str], Ledger, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    where, led, raw = local
    rfile, efile, other = tmp_path / "r", tmp_path / "e", tmp_path / "o"
    run_ok("receipt", *where, "--index", "8", "--out", str(rfile), "--entry-out", str(efile))
    other.write_bytes(raw[9])
    code, _ = run("verify-receipt", "--receipt", str(rfile), "--entry", str(other), "--vkey", led.signer.verifier_key())
    assert code == 1
    assert "ProofError: inclusion proof for leaf 8 of 77 does not lead to the given root" in capsys.readouterr().err
    stranger = "stranger.example+00000000+" + base64.b64encode(b"\x01" + bytes(32)).decode()
    code, _ = run("verify-receipt", "--receipt", str(rfile), "--entry", str(efile), "--vkey", stranger)
    assert code == 1
    assert "NoteError" in capsys.readouterr().err


# --- errors ------------------------------------------------------------------------------------------------

ERRORS = {
    "an entry beyond the ledger": (["show", "--index", "999"], 1, "NotFoundError: no entry 999: the ledger holds"),
    "an unknown decision id": (
        ["show", "--decision-id", "01890a5d-ac96-774b-bcce-b302099a8057"],
        1,
        "NotFoundError: no decision with id",
    ),
    "size1 > size2": (["proof", "consistency", "--from", "9", "--to", "3"], 1, "size1 9 is larger than size2 3"),
    "a tree size beyond the ledger": (
        ["proof", "inclusion", "--index", "0", "--tree-size", "1000000"],
        1,
        "tree size 1000000 is beyond the ledger's",
    ),
    "an index outside the tree": (
        ["proof", "inclusion", "--index", "50", "--tree-size", "40"],
        1,
        "leaf index 50 is not in a tree of 40 leaves",
    ),
    "a list range past the end": (["list", "--from", "0", "--to", "5000"], 1, "end index 5000 is beyond"),
}


@pytest.mark.parametrize(("argv", "code", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_reported_clearly(
    source: tuple[list[str], Ledger, list[bytes]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    where, _, _ = source
    at = 2 if argv[0] == "proof" else 1  # the source flags go after the (sub)command
    argv = [*argv[:at], *where, *argv[at:]]
    assert run(*argv)[0] == code
    assert message in capsys.readouterr().err


def test_exactly_one_source_must_be_given(local: tuple[list[str], Ledger, list[bytes]], capsys: Any) -> None:
    where, _, _ = local
    assert run("show", "--index", "1")[0] == 2
    assert run("show", *where, "--server", "127.0.0.1:1", "--index", "1")[0] == 2
    assert "give exactly one of --data-dir DIR" in capsys.readouterr().err


def test_an_unreachable_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("show", "--server", f"127.0.0.1:{free_port()}", "--index", "1")[0] == 1
    assert "answered UNAVAILABLE" in capsys.readouterr().err


def test_mutual_tls_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki: Pki = make_pki()
    f = pki.write(tmp_path)
    led = build_ledger(tmp_path / "data", [6])
    led.writer.start()
    cfg = AuditConfig(addr="127.0.0.1:0", tls_cert=f["server_cert"], tls_key=f["server_key"], client_ca=f["ca"])
    server: AuditServer = start_audit_server(cfg, led.store, led.writer)
    try:
        where = ["--server", f"127.0.0.1:{server.port}", "--ca", f["ca"]]
        out = run_ok("proof", "inclusion", *where, "--cert", f["client_cert"], "--key", f["client_key"], "--index", "2")
        assert out.startswith("entry 2 in the tree of size 6")
        assert run("proof", "inclusion", *where, "--index", "2")[0] == 1
        assert "UNAVAILABLE" in capsys.readouterr().err
        assert run("proof", "inclusion", *where, "--cert", f["client_cert"], "--index", "2")[0] == 2
    finally:
        server.stop(0)
        led.writer.close()
        led.close()


# --- next to a running server ------------------------------------------------------------------------------


def _published_size(data_dir: Path) -> int | None:
    """The tree size of the checkpoint ``serve`` last published in ``data_dir`` (its second line, C2SP
    tlog-checkpoint), or None before the first; the store holds it by then (it is stored first)."""
    try:
        return int((data_dir / "checkpoint").read_text().split("\n")[1])
    except FileNotFoundError:
        return None


def test_a_data_dir_is_read_safely_while_authz_ledger_serve_writes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = serve_process(data, port, "ledger.checkpoint_interval_ms=100")
    try:
        stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        for i in range(20):
            req = json_format.ParseDict(
                {"attributes": {"request": {"http": {"method": "GET", "path": f"/api/items/{i}"}}}},
                external_auth_pb2.CheckRequest(),
            )
            stub.Check(req, timeout=10)
            if i == 9:
                listed = run_ok("list", "--data-dir", str(data), "--json")
                assert [json.loads(x)["path"] for x in listed.splitlines()] == [f"/api/items/{j}" for j in range(10)]
        wait_until(
            lambda: _published_size(data), lambda size: size == 20, message="no checkpoint covered all 20 entries"
        )
        doc = json.loads(run_ok("proof", "inclusion", "--data-dir", str(data), "--index", "15", "--json"))
        assert doc["tree_size"] == 20
        assert rfc9162.verify_inclusion(
            15, 20, rfc9162.leaf(b64(doc["leaf_b64"])), [b64(h) for h in doc["proof"]], b64(doc["root"])
        )
    finally:
        assert stop_process(proc) == 0


# --- writer throughput under read load ---------------------------------------------------------------------

LISTER = """
import io, sys
from authz_ledger.cli import main as cli
passes, start = 0, 0
while True:
    cli.main(['list', '--data-dir', sys.argv[1], '--json', '--from', str(start), '--limit', '2000'], out=io.StringIO())
    passes += 1
    start = (start + 2000) % 18000
    print(passes, flush=True)
"""


BUSY_LOOP = "print('busy', flush=True)\nwhile True:\n    pass\n"
"""The control for the readers: the other CPUs as busy, with no LMDB at all."""


@dataclass
class Run:
    rate: float
    """Entries committed per second of wall-clock time."""
    cpu: float
    """CPU seconds this process spent per entry (the writer thread; the main thread only waits)."""
    pages: int
    """LMDB pages the run added to the file: what a pinned snapshot would inflate."""


def _writer_run(led: Ledger, n: int) -> Run:
    """A writer commits ``n`` entries that were all queued before it started (fsync'd LMDB, as served)."""
    writer = make_writer(led.store, led.signer, durability=Durability.ASYNC, queue_size=n + 16)
    first = len(led.decision_ids)
    for i in range(n):
        rec = record(first + i)
        led.decision_ids.append(rec.decision_id)
        writer.record(rec.encode(), bytes.fromhex(rec.decision_id.replace("-", "")))
    target = writer.head.size + n
    pages = led.store.env.info()["last_pgno"]
    cpu, wall = time.process_time(), time.perf_counter()
    writer.start()
    while writer.head.size < target:
        writer.wait_for_size(target - 1, 1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    writer.close()
    return Run(n / wall, cpu / n, led.store.env.info()["last_pgno"] - pages)


@dataclass
class Reader:
    """A process pinned to other CPUs, printing into a file (no thread of this process reads it: the writer
    measured here must share neither its CPU nor the interpreter lock with the readers' output)."""

    proc: subprocess.Popen[str]
    out: Path

    def lines(self) -> int:
        return self.out.read_text().count("\n")

    def wait_for_lines(self, count: int, timeout: float, message: str) -> None:
        """Until it has printed ``count`` lines; fail with ``message`` if it exits first or ``timeout`` passes."""
        wait_until(lambda: self.lines() >= count or self.proc.poll() is not None, timeout=timeout, message=message)
        assert self.lines() >= count, f"{message}: it exited with {self.proc.returncode}"


def _start(argvs: list[list[str]], cpus: str, out_dir: Path) -> list[Reader]:
    """Start processes pinned to ``cpus``; return once each has printed its first line (it is working)."""
    readers = []
    for i, argv in enumerate(argvs):
        out = out_dir / f"reader-{i}.out"
        with out.open("w") as f:
            readers.append(Reader(subprocess.Popen(["taskset", "-c", cpus, *argv], stdout=f, env=ENV), out))
    for argv, r in zip(argvs, readers, strict=True):
        r.wait_for_lines(1, 60, f"{argv} did not start")
    return readers


def _stop(readers: list[Reader]) -> None:
    for r in readers:
        r.proc.terminate()
        r.proc.wait(10)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a CPU for the writer and one for the readers")
def test_reading_and_tailing_in_other_processes_costs_the_writer_under_10_percent(tmp_path: Path) -> None:
    """The writer commits pre-queued entries (fsync'd LMDB) while other processes read the same data dir -- a
    ``list`` loop and ``tail -f`` -- pinned to the other CPUs, as an auditor's job would run.

    What the ledger controls is that readers take no lock the writer waits for (LMDB readers never do) and pin
    no snapshot that makes its commits write more. The second is measured exactly: the pages each run adds to
    the file must not grow by more than 10%. Time is measured too, but on a shared machine it mostly measures
    the neighbours: on the 2-vCPU VMs this suite runs on, a plain busy loop on the other vCPU (no LMDB at all)
    costs the writer 15-20% of wall-clock speed, other tenants' fsyncs swing it tenfold, and even CPU time per
    entry varies by 1.5x between identical runs. So time gets a coarse guard against gross interference (the
    median of paired CPU-time ratios) against a control run in which the other CPUs run a plain Python busy
    loop instead of the readers -- what sharing the vCPUs costs is then in both sides of the ratio -- and every
    number is in the failure message.
    """
    n, rounds = 20_000, 6
    cpus = sorted(os.sched_getaffinity(0))
    data = tmp_path / "data"
    readers = [
        [sys.executable, "-c", LISTER, str(data)],
        [*CLI, "tail", "-f", "-n", "1", "--data-dir", str(data), "--json"],  # its first line: it is following
    ]
    led = open_ledger(data, map_size=1 << 30)
    runs: dict[str, list[Run]] = {"alone": [], "read": []}
    try:
        led.append(20_000, batch=512)
        led.checkpoint()
        os.sched_setaffinity(0, {cpus[0]})
        for r in range(rounds):
            for mode in ("alone", "read") if r % 2 else ("read", "alone"):
                others = readers if mode == "read" else [[sys.executable, "-c", BUSY_LOOP]]
                running = _start(others, ",".join(map(str, cpus[1:])), tmp_path)
                try:
                    before = [r.lines() for r in running]
                    runs[mode].append(_writer_run(led, n))
                    if mode == "read":
                        # tail -f polls every 0.1 s and shares its CPU with the list loop: give it the time to
                        # show the new entries (flushed per entry) before it is stopped.
                        for reader, lines in zip(running, before, strict=True):
                            reader.wait_for_lines(lines + 1, 10, "the readers kept reading")
                finally:
                    _stop(running)
    finally:
        os.sched_setaffinity(0, cpus)
        led.close()
    alone, read = runs["alone"], runs["read"]
    report = (
        f"writer entries/s beside a busy loop {[round(x.rate) for x in alone]}, "
        f"with readers {[round(x.rate) for x in read]}; "
        f"CPU us/entry beside a busy loop {[round(x.cpu * 1e6, 1) for x in alone]}, "
        f"with readers {[round(x.cpu * 1e6, 1) for x in read]}; "
        f"pages added beside a busy loop {[x.pages for x in alone]}, with readers {[x.pages for x in read]}"
    )
    assert sum(x.pages for x in read) <= 1.1 * sum(x.pages for x in alone), report
    # Gross interference (a lock the writer waits on, a pinned snapshot) costs multiples; readers scanning the map
    # on the other vCPU also cost the writer some cache and memory bandwidth that no control loop reproduces, and
    # CPU time per entry already varies by 1.5x between identical runs here: 1.5 is the bound that means something.
    assert statistics.median(r.cpu / a.cpu for r, a in zip(read, alone, strict=True)) <= 1.5, report


SINCE_FORMS = {
    "a duration ago": ("1h", 10_000 * 10**9 - 3600 * 10**9),
    "a compound duration": ("1h30m", 10_000 * 10**9 - 5400 * 10**9),
    "fractional minutes": ("1.5m", 10_000 * 10**9 - 90 * 10**9),
    "Unix nanoseconds": ("1234", 1234),
    "an ISO time without zone is UTC": ("1970-01-01T00:00:10", 10 * 10**9),
    "an ISO time with a zone": ("1970-01-01T01:00:10+01:00", 10 * 10**9),
}


@pytest.mark.parametrize(("text", "want"), SINCE_FORMS.values(), ids=SINCE_FORMS.keys())
def test_since_accepts_durations_iso_times_and_nanoseconds(text: str, want: int) -> None:
    from authz_ledger.cli.filters import parse_time

    assert parse_time(text, "--since", now_ns=10_000 * 10**9) == want


@pytest.mark.parametrize("text", ["1x", "h", "1h garbage", "yesterday"])
def test_since_refuses_what_it_cannot_read_naming_the_flag(text: str) -> None:
    from authz_ledger.cli.filters import parse_time
    from authz_ledger.errors import ConfigError

    with pytest.raises(ConfigError, match="--since"):
        parse_time(text, "--since", now_ns=10**15)
