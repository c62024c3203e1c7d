"""The audit gRPC API (authzledger.v1.Ledger) on its own listener: real grpcurl through reflection, every method,
gRPC status codes for malformed requests, Tail, slow clients, TLS and mutual TLS, loopback by default."""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_ledger._proto.authzledger.v1 import audit_pb2 as pb
from authz_ledger._proto.authzledger.v1 import audit_pb2_grpc as pb_grpc
from authz_ledger.config import AuditConfig
from authz_ledger.errors import ConfigError
from authz_ledger.ledger.writer import Durability, LedgerWriter
from authz_ledger.readside.audit import (
    HEALTH_SERVICE,
    LEDGER_SERVICE,
    AuditServer,
    server_credentials,
    start_audit_server,
)
from authz_ledger.tlog import receipt
from tests.conftest import make_writer, tool
from tests.support import rfc9162
from tests.support.pki import Pki, make_pki
from tests.support.readside import Ledger, build_ledger, open_ledger
from tests.support.waits import threads_running, wait_until

pytestmark = pytest.mark.timeout(120)

LOCAL = AuditConfig(addr="127.0.0.1:0")


@dataclass
class Served:
    ledger: Ledger
    server: AuditServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stub(self) -> Any:
        return pb_grpc.LedgerStub(grpc.insecure_channel(self.address))


def serve(ledger: Ledger, cfg: AuditConfig = LOCAL, **kwargs: Any) -> Served:
    ledger.writer.start()
    return Served(ledger, start_audit_server(cfg, ledger.store, ledger.writer, **kwargs))


def shutdown(s: Served) -> None:
    s.server.stop(0)
    s.ledger.writer.close()
    s.ledger.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = serve(build_ledger(tmp_path_factory.mktemp("audit") / "data", [50, 120]))
    yield s
    shutdown(s)


# --- grpcurl through reflection ---------------------------------------------------------------------------


def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("grpcurl"), *args], capture_output=True, text=True, timeout=timeout, check=False)


def call(served: Served, method: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """grpcurl -d JSON; every response message, decoded (grpcurl prints them one after another)."""
    proc = grpcurl("-plaintext", "-d", json.dumps(request), served.address, f"{LEDGER_SERVICE}/{method}")
    assert proc.returncode == 0, f"{method} {request}: {proc.stderr}"
    return messages(proc.stdout)


def messages(text: str) -> list[dict[str, Any]]:
    decoder, out, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        out.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def b64(s: str) -> bytes:
    return base64.b64decode(s)


METHODS = {
    "GetEntry": "rpc GetEntry ( .authzledger.v1.GetEntryRequest ) returns ( .authzledger.v1.Entry );",
    "ListEntries": "rpc ListEntries ( .authzledger.v1.ListEntriesRequest ) returns ( stream .authzledger.v1.Entry );",
    "Tail": "rpc Tail ( .authzledger.v1.TailRequest ) returns ( stream .authzledger.v1.Entry );",
    "GetCheckpoint": "rpc GetCheckpoint ( .authzledger.v1.GetCheckpointRequest ) "
    "returns ( .authzledger.v1.Checkpoint );",
    "GetInclusionProof": "rpc GetInclusionProof ( .authzledger.v1.GetInclusionProofRequest ) "
    "returns ( .authzledger.v1.InclusionProof );",
    "GetConsistencyProof": "rpc GetConsistencyProof ( .authzledger.v1.GetConsistencyProofRequest ) "
    "returns ( .authzledger.v1.ConsistencyProof );",
    "GetReceipt": "rpc GetReceipt ( .authzledger.v1.GetReceiptRequest ) returns ( .authzledger.v1.Receipt );",
}


def test_grpcurl_lists_the_ledger_health_and_reflection_services_and_every_method(served: Served) -> None:
    proc = grpcurl("-plaintext", served.address, "list")
    assert sorted(proc.stdout.split()) == sorted([LEDGER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME])
    proc = grpcurl("-plaintext", served.address, "list", LEDGER_SERVICE)
    assert sorted(proc.stdout.split()) == sorted(f"{LEDGER_SERVICE}.{m}" for m in METHODS)


@pytest.mark.parametrize(("method", "signature"), METHODS.items(), ids=[f"describe {m}" for m in METHODS])
def test_grpcurl_describes_each_method(served: Served, method: str, signature: str) -> None:
    proc = grpcurl("-plaintext", served.address, "describe", f"{LEDGER_SERVICE}.{method}")
    assert proc.returncode == 0, proc.stderr
    assert f"{LEDGER_SERVICE}.{method} is a method:" in proc.stdout
    assert signature in proc.stdout


def test_grpcurl_describes_the_entry_message_with_its_raw_bytes(served: Served) -> None:
    proc = grpcurl("-plaintext", served.address, "describe", "authzledger.v1.Entry")
    assert "bytes raw = 2;" in proc.stdout and ".authzledger.v1.LedgerEntry entry = 3;" in proc.stdout


def test_grpcurl_get_entry_by_index_and_by_decision_id(served: Served) -> None:
    raw = served.ledger.raw_entries()
    [by_index] = call(served, "GetEntry", {"index": 7})
    [by_id] = call(served, "GetEntry", {"decision_id": served.ledger.decision_ids[7]})
    assert by_index == by_id
    assert by_index["index"] == "7" and b64(by_index["raw"]) == raw[7]
    assert b64(by_index["leaf_hash"]) == rfc9162.leaf(raw[7])
    assert by_index["entry"]["path"] == "/svc1/item7" and by_index["entry"]["outcome"] == "OUTCOME_DENY"


def test_grpcurl_list_entries_with_a_range_and_a_filter(served: Served) -> None:
    assert [m["index"] for m in call(served, "ListEntries", {"start_index": 10, "end_index": 13})] == ["10", "11", "12"]
    got = call(served, "ListEntries", {"filter": {"outcome": "OUTCOME_DENY", "path_prefix": "/svc1/item1"}, "limit": 3})
    assert [m["index"] for m in got] == ["1", "10", "13"]


def following_tails() -> int:
    """Tail calls of the audit server in this process that wait for the writer's next commit."""
    return threads_running(LedgerWriter.wait_for_size, thread_prefix="audit")


def test_grpcurl_tail_receives_entries_committed_after_it_started(served: Served) -> None:
    tails = following_tails()
    proc = subprocess.Popen(
        [tool("grpcurl"), "-plaintext", "-max-time", "4", "-d", '{"from_end": true}', served.address,
         f"{LEDGER_SERVICE}/Tail"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # from_end starts at the end as the server sees it then: record only once grpcurl's Tail waits for more.
    wait_until(following_tails, lambda count: count > tails, message="grpcurl's Tail never reached the server")
    first = len(served.ledger.decision_ids)
    served.ledger.record(2)
    out, err = proc.communicate(timeout=20)
    assert "DeadlineExceeded" in err  # -max-time ends the stream; the entries came before
    assert [int(m["index"]) for m in messages(out)] == [first, first + 1]


def test_grpcurl_checkpoints(served: Served) -> None:
    [latest] = call(served, "GetCheckpoint", {})
    [at50] = call(served, "GetCheckpoint", {"tree_size": 50})
    assert int(latest["tree_size"]) >= 120
    assert at50["tree_size"] == "50" and at50["origin"] == served.ledger.signer.name
    raw = served.ledger.raw_entries()
    assert b64(at50["root_hash"]) == rfc9162.mth(raw[:50])
    assert b64(at50["note"]).startswith(f"{served.ledger.signer.name}\n50\n".encode())


def test_grpcurl_inclusion_proof_verifies_independently(served: Served) -> None:
    raw = served.ledger.raw_entries()
    [p] = call(served, "GetInclusionProof", {"index": 17, "tree_size": 50})
    proof = [b64(h) for h in p["hashes"]]
    assert b64(p["leaf_hash"]) == rfc9162.leaf(raw[17])
    assert rfc9162.verify_inclusion(17, 50, rfc9162.leaf(raw[17]), proof, rfc9162.mth(raw[:50]))
    assert b64(p["root_hash"]) == rfc9162.mth(raw[:50]) and "checkpoint" in p


def test_grpcurl_consistency_proof_verifies_independently(served: Served) -> None:
    raw = served.ledger.raw_entries()
    [p] = call(served, "GetConsistencyProof", {"size1": 50, "size2": 120})
    r1, r2 = rfc9162.mth(raw[:50]), rfc9162.mth(raw[:120])
    assert (b64(p["root1"]), b64(p["root2"])) == (r1, r2)
    assert rfc9162.verify_consistency(50, 120, r1, r2, [b64(h) for h in p["hashes"]])


def test_grpcurl_receipt_verifies_offline(served: Served) -> None:
    [r] = call(served, "GetReceipt", {"decision_id": served.ledger.decision_ids[33]})
    proof, entry = b64(r["proof"]), b64(r["entry"]["raw"])
    assert proof.startswith(b"c2sp.org/tlog-proof@v1\nindex 33\n")
    cp = receipt.verify_receipt(proof, entry, [served.ledger.signer.verifier()], served.ledger.signer.name)
    assert cp.size >= 120


def test_grpcurl_health_reports_the_ledger_service_serving(served: Served) -> None:
    proc = grpcurl(
        "-plaintext", "-d", json.dumps({"service": LEDGER_SERVICE}), served.address, f"{HEALTH_SERVICE}/Check"
    )
    assert '"status": "SERVING"' in proc.stdout


def test_grpcurl_shows_a_clear_error_for_a_malformed_request(served: Served) -> None:
    proc = grpcurl(
        "-plaintext", "-d", '{"size1": 9, "size2": 3}', served.address, f"{LEDGER_SERVICE}/GetConsistencyProof"
    )
    assert proc.returncode != 0
    assert "Code: InvalidArgument" in proc.stderr
    assert "ProofError: size1 9 is larger than size2 3: a log only grows" in proc.stderr


# --- status codes ------------------------------------------------------------------------------------------

UNKNOWN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
INVALID, NOT_FOUND, OUT_OF_RANGE = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
)
MALFORMED: dict[str, tuple[str, Any, grpc.StatusCode, str]] = {
    "GetEntry without a key": ("GetEntry", pb.GetEntryRequest(), INVALID, "give an index or a decision_id"),
    "GetEntry at a negative index": ("GetEntry", pb.GetEntryRequest(index=-1), INVALID, "index must be non-negative"),
    "GetEntry beyond the ledger": ("GetEntry", pb.GetEntryRequest(index=10**9), NOT_FOUND, "no entry 1000000000"),
    "GetEntry for an unknown decision": (
        "GetEntry",
        pb.GetEntryRequest(decision_id=UNKNOWN_ID),
        NOT_FOUND,
        f"no decision with id {UNKNOWN_ID}",
    ),
    "GetEntry for a decision id that is not a UUID": (
        "GetEntry",
        pb.GetEntryRequest(decision_id="42"),
        INVALID,
        "is not a UUID",
    ),
    "ListEntries from a negative index": (
        "ListEntries",
        pb.ListEntriesRequest(start_index=-5),
        INVALID,
        "start index must be non-negative",
    ),
    "ListEntries ending before it starts": (
        "ListEntries",
        pb.ListEntriesRequest(start_index=10, end_index=5),
        INVALID,
        "end index 5 is before start index 10",
    ),
    "ListEntries over a huge range": (
        "ListEntries",
        pb.ListEntriesRequest(end_index=2**62),
        OUT_OF_RANGE,
        f"end index {2**62} is beyond the ledger's",
    ),
    "ListEntries with a negative limit": ("ListEntries", pb.ListEntriesRequest(limit=-1), INVALID, "limit"),
    "ListEntries with an empty time range": (
        "ListEntries",
        pb.ListEntriesRequest(filter=pb.EntryFilter(since_unix_nano=9, until_unix_nano=3)),
        INVALID,
        "empty time range",
    ),
    "Tail from far beyond the end": ("Tail", pb.TailRequest(start_index=10**12), OUT_OF_RANGE, "is beyond the ledger"),
    "Tail from a negative index other than -1": ("Tail", pb.TailRequest(start_index=-2), INVALID, "non-negative"),
    "Tail with both a start and from_end": (
        "Tail",
        pb.TailRequest(start_index=5, from_end=True),
        INVALID,
        "not both",
    ),
    "GetCheckpoint at a size never published": (
        "GetCheckpoint",
        pb.GetCheckpointRequest(tree_size=7),
        NOT_FOUND,
        "no checkpoint was published at tree size 7",
    ),
    "GetCheckpoint at a negative size": (
        "GetCheckpoint",
        pb.GetCheckpointRequest(tree_size=-1),
        INVALID,
        "non-negative",
    ),
    "GetInclusionProof for a negative index": (
        "GetInclusionProof",
        pb.GetInclusionProofRequest(index=-1),
        INVALID,
        "leaf index must be non-negative",
    ),
    "GetInclusionProof for an index beyond the tree size": (
        "GetInclusionProof",
        pb.GetInclusionProofRequest(index=10, tree_size=5),
        INVALID,
        "leaf index 10 is not in a tree of 5 leaves",
    ),
    "GetInclusionProof at a size beyond the ledger": (
        "GetInclusionProof",
        pb.GetInclusionProofRequest(index=1, tree_size=10**15),
        OUT_OF_RANGE,
        "tree size 1000000000000000 is beyond the ledger",
    ),
    "GetInclusionProof for an entry beyond the latest checkpoint": (
        "GetInclusionProof",
        pb.GetInclusionProofRequest(index=10**6),
        OUT_OF_RANGE,
        "not covered by the latest checkpoint",
    ),
    "GetConsistencyProof with size1 > size2": (
        "GetConsistencyProof",
        pb.GetConsistencyProofRequest(size1=9, size2=3),
        INVALID,
        "size1 9 is larger than size2 3",
    ),
    "GetConsistencyProof from a negative size": (
        "GetConsistencyProof",
        pb.GetConsistencyProofRequest(size1=-4),
        INVALID,
        "non-negative",
    ),
    "GetConsistencyProof to a size beyond the ledger": (
        "GetConsistencyProof",
        pb.GetConsistencyProofRequest(size1=1, size2=2**62),
        OUT_OF_RANGE,
        "beyond the ledger",
    ),
    "GetReceipt without a key": ("GetReceipt", pb.GetReceiptRequest(), INVALID, "give a decision_id or an index"),
    "GetReceipt for an unknown decision": (
        "GetReceipt",
        pb.GetReceiptRequest(decision_id=UNKNOWN_ID),
        NOT_FOUND,
        "no decision with id",
    ),
    "GetReceipt beyond the ledger": ("GetReceipt", pb.GetReceiptRequest(index=10**9), NOT_FOUND, "no entry"),
}


@pytest.mark.parametrize(("method", "request_", "code", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_a_clear_status(
    served: Served, method: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    rpc = getattr(served.stub(), method)

    def invoke() -> Any:
        result = rpc(request_, timeout=10)
        return list(result) if method in ("ListEntries", "Tail") else result

    with pytest.raises(grpc.RpcError) as info:
        invoke()
    assert info.value.code() == code
    assert message in info.value.details()


# --- streaming ---------------------------------------------------------------------------------------------


def test_tail_receives_entries_committed_after_it_started(served: Served) -> None:
    start = len(served.ledger.decision_ids)
    stream = served.stub().Tail(pb.TailRequest(start_index=start - 1))
    got: list[int] = []

    def consume() -> None:
        for m in stream:
            got.append(m.index)
            if len(got) == 4:
                return

    t = threading.Thread(target=consume)
    t.start()
    # Started: it has sent the last entry committed before it began, so what follows is committed after.
    wait_until(lambda: list(got), lambda seen: seen == [start - 1], message="the Tail sent nothing")
    served.ledger.record(3)
    t.join(10)
    stream.cancel()
    assert got == [start - 1, start, start + 1, start + 2]


def test_a_cancelled_tail_frees_its_server_thread(tmp_path: Path) -> None:
    s = serve(build_ledger(tmp_path / "data", [5]), threads=1)
    try:
        stub = s.stub()
        stream = stub.Tail(pb.TailRequest(start_index=0))
        assert next(stream).index == 0
        with pytest.raises(grpc.RpcError) as info:
            stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "one RPC at a time: the Tail holds it"
        stream.cancel()
        checkpoint = wait_until(
            lambda: stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=5),
            timeout=5,
            interval=0.1,
            message="the cancelled Tail never ended",
            ignoring=grpc.RpcError,
        )
        assert checkpoint.tree_size == 5
    finally:
        shutdown(s)


def no_active_reader(served: Served) -> bool:
    lines = served.ledger.store.env.readers().splitlines()[1:]
    return all(line.split()[-1] == "-" for line in lines)


def test_clients_that_stop_reading_do_not_stall_the_writer(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "data")
    led.writer = make_writer(led.store, led.signer, durability=Durability.ASYNC, queue_size=50_000)
    led.append(20_000, batch=512)
    s = serve(led)
    try:
        stub = s.stub()
        listing = stub.ListEntries(pb.ListEntriesRequest())
        tail = stub.Tail(pb.TailRequest(start_index=0))
        assert next(listing).index == 0 and next(tail).index == 0
        # Both streams fill their flow-control windows, with nothing read, and then sit blocked; on a loaded
        # machine that can take longer than a fixed pause. While they fill, their short read transactions come
        # and go, so one sample proves nothing: no sample may see a reader for a whole half second.
        quiet_since = time.monotonic()

        def quiet_for() -> float:
            nonlocal quiet_since
            if not no_active_reader(s):
                quiet_since = time.monotonic()
            return time.monotonic() - quiet_since

        wait_until(
            quiet_for,
            lambda seconds: seconds >= 0.5,
            timeout=15,
            message="a stalled stream must not hold or retake a read transaction",
        )
        started = time.monotonic()
        led.record(20_000)
        while led.writer.head.size < 40_000 and time.monotonic() - started < 30:
            led.writer.wait_for_size(39_999, 1)
        assert led.writer.head.size == 40_000, "the writer kept committing while both clients were stalled"
        # The stalled clients then read everything they asked for.
        assert sum(1 for _ in listing) == 19_999
        got = 1
        for m in tail:
            got += 1
            if m.index == 39_999:
                break
        tail.cancel()
        assert got == 40_000
    finally:
        shutdown(s)


# --- TLS and mutual TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _checkpoint_over(channel: grpc.Channel) -> int:
    size: int = pb_grpc.LedgerStub(channel).GetCheckpoint(pb.GetCheckpointRequest(), timeout=5).tree_size
    return size


def test_mutual_tls_refuses_clients_without_a_valid_certificate(tmp_path: Path, pki: Pki) -> None:
    files = pki.write(tmp_path)
    cfg = AuditConfig(
        addr="127.0.0.1:0", tls_cert=files["server_cert"], tls_key=files["server_key"], client_ca=files["ca"]
    )
    s = serve(build_ledger(tmp_path / "data", [4]), cfg)
    try:
        addr = s.address
        good = grpc.ssl_channel_credentials(pki.ca, pki.client_key, pki.client_cert)
        assert _checkpoint_over(grpc.secure_channel(addr, good)) == 4
        refused = {
            "no client certificate": grpc.secure_channel(addr, grpc.ssl_channel_credentials(pki.ca)),
            "a certificate from another CA": grpc.secure_channel(
                addr, grpc.ssl_channel_credentials(pki.ca, pki.rogue_key, pki.rogue_cert)
            ),
            "plaintext": grpc.insecure_channel(addr),
        }
        for why, channel in refused.items():
            with pytest.raises(grpc.RpcError) as info:
                _checkpoint_over(channel)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, why
        # grpcurl too: with the client certificate it works, without it the handshake fails.
        ok = grpcurl("-cacert", files["ca"], "-cert", files["client_cert"], "-key", files["client_key"], addr, "list")
        assert LEDGER_SERVICE in ok.stdout, ok.stderr
        bad = grpcurl("-cacert", files["ca"], addr, "list")
        assert bad.returncode != 0
    finally:
        shutdown(s)


def test_tls_without_a_client_ca_serves_any_client_that_trusts_the_server(tmp_path: Path, pki: Pki) -> None:
    files = pki.write(tmp_path)
    cfg = AuditConfig(addr="127.0.0.1:0", tls_cert=files["server_cert"], tls_key=files["server_key"])
    s = serve(build_ledger(tmp_path / "data", [3]), cfg)
    try:
        assert _checkpoint_over(grpc.secure_channel(s.address, grpc.ssl_channel_credentials(pki.ca))) == 3
        with pytest.raises(grpc.RpcError):
            _checkpoint_over(grpc.insecure_channel(s.address))
    finally:
        shutdown(s)


TLS_CONFIG_ERRORS = {
    "a client CA without a server certificate": ({"client_ca": "ca"}, "mutual TLS needs TLS"),
    "a certificate without its key": ({"tls_cert": "server_cert"}, "must be set together"),
    "a key without its certificate": ({"tls_key": "server_key"}, "must be set together"),
    "a certificate file that does not exist": (
        {"tls_cert": "missing", "tls_key": "server_key"},
        "audit.tls_cert: cannot read",
    ),
}


@pytest.mark.parametrize(("fields", "message"), TLS_CONFIG_ERRORS.values(), ids=TLS_CONFIG_ERRORS.keys())
def test_half_configured_tls_is_refused_never_downgraded(
    tmp_path: Path, pki: Pki, fields: dict[str, str], message: str
) -> None:
    files = {**pki.write(tmp_path), "missing": str(tmp_path / "missing.pem")}
    cfg = AuditConfig(addr="127.0.0.1:0", **{k: files[v] for k, v in fields.items()})
    with pytest.raises(ConfigError, match=message):
        server_credentials(cfg)


# --- where it listens --------------------------------------------------------------------------------------


def _non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the outgoing interface
        addr = str(s.getsockname()[0])
    assert not ipaddress.ip_address(addr).is_loopback, "this test needs a non-loopback interface"
    return addr


def test_the_audit_listener_binds_loopback_by_default(tmp_path: Path) -> None:
    default = AuditConfig()
    host, _, port = default.addr.rpartition(":")
    assert ipaddress.ip_address(host).is_loopback and port
    # Same host as the default, on a free port: reachable on loopback, not from the machine's other address.
    s = serve(build_ledger(tmp_path / "data", [2]), AuditConfig(addr=f"{host}:0"))
    try:
        assert _checkpoint_over(grpc.insecure_channel(f"{host}:{s.server.port}")) == 2
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((_non_loopback_address(), s.server.port), 2),
        ):
            pass
    finally:
        shutdown(s)


def test_health_goes_not_serving_on_stop(tmp_path: Path) -> None:
    s = serve(build_ledger(tmp_path / "data", [2]))
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(s.address))
        reply = health.Check(health_pb2.HealthCheckRequest(service=LEDGER_SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        shutdown(s)
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(service=LEDGER_SERVICE), timeout=2)
