"""Disk full and map full: Checks fail closed, nothing is corrupted, and the service recovers by itself."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_ledger import server
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import verify_store
from authz_ledger.tlog import note
from tests.conftest import StartService
from tests.support.waits import wait_until

UNAVAILABLE = 14


def _request(path: str = "/api/items") -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method = "GET"
    http.path = path
    http.headers["x-user"] = "alice"
    http.headers["x-padding"] = "p" * 2000  # ~2 KB entries fill a small filesystem quickly
    return req


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs), so writes hit a genuine ENOSPC."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test (needs root): {proc.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    return filler


def _health(running: server.Running) -> int:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    return int(stub.Check(health_pb2.HealthCheckRequest(service=server.AUTHORIZATION_SERVICE)).status)


def test_disk_full_fails_closed_without_corruption_and_recovers(small_fs: Path, authz_service: StartService) -> None:
    data = small_fs / "data"
    running = authz_service("ledger.map_size_mb=64", data_dir=data)
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    recorded = 0
    for _ in range(20):
        assert stub.Check(_request()).status.code == 0
        recorded += 1
    filler = _fill(small_fs)
    refused = 0
    for _ in range(400):
        resp = stub.Check(_request())
        if resp.status.code == UNAVAILABLE:
            refused += 1
            assert resp.denied_response.status.code == 503  # fail closed: a deny, never an allow
        else:
            assert resp.status.code == 0
            recorded += 1
        if refused >= 5:
            break
    assert refused >= 5, "the full disk never made the ledger refuse a Check"
    wait_until(
        lambda: _health(running),
        lambda status: status == health_pb2.HealthCheckResponse.NOT_SERVING,
        interval=0.1,
        message="the health check did not report the full disk",
    )
    filler.unlink()
    wait_until(
        lambda: stub.Check(_request()).status.code,
        lambda code: code == 0,
        interval=0.1,
        message="the ledger did not recover after space came back",
    )
    recorded += 1
    for _ in range(10):
        assert stub.Check(_request()).status.code == 0
        recorded += 1
    wait_until(
        lambda: _health(running),
        lambda status: status == health_pb2.HealthCheckResponse.SERVING,
        interval=0.1,
        message="the health check did not report the recovery",
    )
    running.stop()
    paths = LedgerPaths(data)
    store = Store(paths.store, readonly=True)
    signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
    assert verify_store(store, [signer.verifier()]).size == recorded  # every answered Check, no refused one
    store.close()


def test_a_full_map_grows_by_itself(authz_service: StartService) -> None:
    running = authz_service("ledger.map_size_mb=1", "ledger.map_max_size_mb=64")
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    for _ in range(700):  # ~1.4 MB of entries through a 1 MiB map
        assert stub.Check(_request()).status.code == 0
    assert running.ledger is not None
    assert running.ledger.store.map_size() > 1 << 20


def test_a_map_at_its_maximum_fails_closed_and_says_what_to_do(authz_service: StartService) -> None:
    running = authz_service("ledger.map_size_mb=1", "ledger.map_max_size_mb=1")
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    codes = [stub.Check(_request()).status.code for _ in range(700)]
    assert UNAVAILABLE in codes
    assert running.ledger is not None
    assert "ledger.map_max_size_mb" in (running.ledger.writer.failure or "")
