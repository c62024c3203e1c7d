"""Overload, bounded version (the 30 s, 3x-the-maximum run is bench/faults_overload.py).

A tiny writer queue (``ledger.queue_size=2``, ``ledger.enqueue_timeout_ms=1``) under 24 concurrent clients in
``sync`` mode: backpressure must deny the excess with the configured status (an UNAVAILABLE CheckResponse with
``ledger.overload_http_status``, never an allow and never a failed RPC), every denied Check must be counted in
the ledger's summary entries (exactly as many as the clients saw, and as /metrics counts), every other answered
Check must be in the ledger under its decision id, and normal Checks must succeed right after, without a restart.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import verify_store
from authz_ledger.record import entry
from authz_ledger.tlog import note
from tests.conftest import StartService, free_port

CLIENTS = 24
SECONDS = 3.0
OVERLOAD_STATUS = 429  # not the default 503: the configured status must be the one used


def _request() -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path = "GET", "/api/items"
    http.headers["x-user"] = "alice"
    return req


def test_backpressure_denies_the_excess_records_the_denials_and_recovers(
    authz_service: StartService, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    metrics_port = free_port()
    running = authz_service(
        "ledger.durability=sync",
        "ledger.queue_size=2",
        "ledger.enqueue_timeout_ms=1",
        f"ledger.overload_http_status={OVERLOAD_STATUS}",
        "server.threads=32",
        # This test is about the ledger's backpressure: a generous engine timeout keeps 32 threads queued on one
        # evaluator process (policy timeouts are tested in tests/policy) from failing an RPC on a slow host.
        "policy.timeout_ms=5000",
        f"metrics.addr=127.0.0.1:{metrics_port}",
        data_dir=data,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    allowed: list[str] = []
    denied: list[str] = []
    other: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client() -> None:
        req = _request()
        while time.monotonic() < deadline:
            resp = stub.Check(req, timeout=10)  # a failed RPC fails the test: overload is a deny, not an error
            decision_id = resp.dynamic_metadata["decision_id"]
            with lock:
                if resp.status.code == 0:
                    allowed.append(decision_id)
                elif resp.status.code == 14 and resp.denied_response.status.code == OVERLOAD_STATUS:
                    denied.append(decision_id)
                else:
                    other.append(str(resp))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not other, other[:3]
    assert denied, f"no Check was denied by backpressure ({len(allowed)} allowed)"
    assert allowed, "no Check got through at all"

    # Recovery without restart: normal Checks succeed right away.
    started = time.monotonic()
    for _ in range(20):
        assert stub.Check(_request(), timeout=5).status.code == 0
    recovery = time.monotonic() - started
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    metric = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('authz_ledger_refused_checks_total{reason="BackpressureError"}')
    )
    channel.close()
    running.stop()

    paths = LedgerPaths(data)
    store = Store(paths.store, readonly=True)
    try:
        signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
        size = verify_store(store, [signer.verifier()]).size
        summarised = 0
        summaries = 0
        for seq, raw in store.iter_entries():
            e = entry.decode(raw, seq)
            if e.error.startswith("BackpressureError:"):
                summaries += 1
                summarised += json.loads(e.result_json)["refused"]
                assert e.http_status == OVERLOAD_STATUS and e.outcome == entry.OUTCOME_ERROR
        missing = [d for d in allowed if store.seq_of_decision(uuid.UUID(d).bytes) is None]
        unexpected = [d for d in denied if store.seq_of_decision(uuid.UUID(d).bytes) is not None]
    finally:
        store.close()
    assert not missing, f"{len(missing)} allowed Checks are not in the ledger"
    assert not unexpected, "a Check denied by backpressure has an entry of its own"
    assert summarised == len(denied) == metric, (summarised, len(denied), metric, summaries)
    assert size == len(allowed) + 20 + summaries
    assert recovery < 10
