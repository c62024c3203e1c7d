"""``authz-ledger serve`` as its own process, for the benchmarks and fault campaigns: free ports, start, stop,
and Check load from client threads (``_workload``'s request: alice, whom the example policy allows).

A campaign drives the server from outside, as Envoy would: over gRPC, with signals.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
from _workload import check_request
from envoy.service.auth.v3 import external_auth_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
SERVE_ENV = dict(os.environ, PYTHONPATH=str(REPO / "server"))
SERVE_DEFAULTS = (
    "server.drain_seconds=0",  # a campaign stops many servers: no drain, a short grace
    "server.grace_seconds=1",
    "policy.embedded.workers=1",
    "metrics.addr=127.0.0.1:0",  # side listeners on free ports, so servers never collide
    "audit.addr=127.0.0.1:0",
)
SERVING = "serving ext_authz v3"
"""What ``serve`` prints on stdout once it answers Checks."""
CLIENTS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_serve(data: Path, port: int, *sets: str, keys: Sequence[Path] = (), log: Path) -> subprocess.Popen[str]:
    """``authz-ledger serve`` on ``data`` with SERVE_DEFAULTS and ``sets`` (``key=value``); stderr appended to
    ``log`` (a pipe nobody reads could fill and stall it). Returns at once: read SERVING from its stdout."""
    argv = [sys.executable, "-m", "authz_ledger.cli", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data)]
    for key in keys:
        argv += ["--key", str(key)]
    for item in (*SERVE_DEFAULTS, *sets):
        argv += ["--set", item]
    with log.open("a") as err:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=SERVE_ENV)


def start_serve(data: Path, port: int, *sets: str, keys: Sequence[Path] = (), log: Path) -> subprocess.Popen[str]:
    """spawn_serve, returned once it is serving; RuntimeError (with its log) if it never gets there."""
    proc = spawn_serve(data, port, *sets, keys=keys, log=log)
    line = proc.stdout.readline() if proc.stdout else ""
    if SERVING not in line:
        stop_process(proc, signal.SIGKILL, timeout=10)
        raise RuntimeError(f"authz-ledger serve did not start: {line!r}\n{log.read_text()[-3000:]}")
    return proc


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Send ``sig`` and wait; the exit code, or None (after a SIGKILL) if it did not exit in time."""
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        code = None
    if proc.stdout:
        proc.stdout.close()
    return code


def check_allowed(port: int) -> bool:
    """One Check by alice (an admin to the example policy): was it allowed?"""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return bool(
            external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request(), timeout=10).status.code == 0
        )


def _load(port: int, stop: threading.Event, answered: list[str], lock: threading.Lock) -> None:
    """Checks one after another until ``stop`` or the server dies; each answer's decision id into ``answered``."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        req = check_request()
        while not stop.is_set():
            try:
                resp = stub.Check(req, timeout=2)
            except grpc.RpcError:
                return  # the server died: nothing more gets answered
            with lock:
                answered.append(resp.dynamic_metadata["decision_id"])


def drive_load(port: int, answered: list[str], lock: threading.Lock, stop: threading.Event) -> list[threading.Thread]:
    """CLIENTS threads of sync Check load on ``port``, started; join them after setting ``stop``."""
    clients = [threading.Thread(target=_load, args=(port, stop, answered, lock)) for _ in range(CLIENTS)]
    for c in clients:
        c.start()
    return clients
