"""Crash safety: ``kill -9`` of a real server under load in ``sync`` mode loses no answered decision.

Each trial starts the service as its own process, drives Checks from several client threads, kills the process
with SIGKILL at a random moment, then checks that every Check whose answer reached a client is in the ledger
(by decision id), that the whole ledger verifies offline, and that the service restarts on the same directory
(its start-up re-verification passes) and goes on appending.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import verify_store
from authz_ledger.tlog import note
from tests.conftest import free_port, serve_process, stop_process

TRIALS = 12
CLIENTS = 6


def _request() -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method = "GET"
    http.path = "/api/items"
    http.headers["x-user"] = "alice"
    return req


def _start(data: Path, port: int) -> subprocess.Popen[str]:
    return serve_process(
        data, port, "ledger.durability=sync", "policy.embedded.workers=1", "ledger.checkpoint_interval_ms=200"
    )


def _load(port: int, stop: threading.Event, answered: list[str], lock: threading.Lock) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    req = _request()
    while not stop.is_set():
        try:
            resp = stub.Check(req, timeout=2)
        except grpc.RpcError:
            return  # the server died: nothing more gets answered
        with lock:
            answered.append(resp.dynamic_metadata["decision_id"])
    channel.close()


def test_kill_9_under_sync_load_loses_no_answered_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(6962)
    total_answered = 0
    for trial in range(TRIALS):
        port = free_port()
        proc = _start(data, port)
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        clients = [threading.Thread(target=_load, args=(port, stop, answered, lock)) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.2, 1.2))
        with lock:
            answered_before_kill = list(answered)
        stop_process(proc, signal.SIGKILL, timeout=10)
        stop.set()
        for c in clients:
            c.join(10)
        # Everything answered before the kill was observed -- and everything answered at all -- is in the ledger.
        assert answered_before_kill, f"trial {trial}: no Check was answered before the kill"
        paths = LedgerPaths(data)
        store = Store(paths.store, readonly=True)
        try:
            missing = [d for d in answered if store.seq_of_decision(uuid.UUID(d).bytes) is None]
            assert not missing, f"trial {trial}: {len(missing)} answered decisions are not in the ledger"
            signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
            report = verify_store(store, [signer.verifier()])
            assert report.size >= total_answered + len(answered)
        finally:
            store.close()
        total_answered += len(answered)
    # The last restart: start-up re-verification passes and the ledger goes on growing.
    port = free_port()
    proc = _start(data, port)
    try:
        stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        assert stub.Check(_request(), timeout=5).status.code == 0
    finally:
        assert stop_process(proc) == 0
    assert total_answered > TRIALS * 10
