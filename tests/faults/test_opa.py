"""OPA failures through the whole service (``policy.engine: opa``, a REAL OPA server).

One scenario per ``policy.on_error`` setting, on one service: OPA answering normally, OPA returning evaluation
errors (a strict builtin error), OPA too slow (an expensive loop in the policy), OPA paused (SIGSTOP), OPA killed,
something else answering garbage on OPA's port, and OPA back again (SIGCONT / restarted on the same port).
For every Check of a failure:

* the configured failure behaviour: ``grpc_error`` -> the RPC fails (Envoy then applies its
  ``failure_mode_allow``); ``deny`` -> a denied CheckResponse with ``policy.error_http_status``;
* the answer comes within ``policy.timeout_ms`` plus slack (a paused OPA cannot hold a Check);
* the decision is in the ledger (found by its ``x-request-id``) as an error outcome naming the error class;

and the service recovers on its own as soon as OPA is back (no restart of authz-ledger).
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger import server
from authz_ledger.record import entry
from tests.conftest import StartService, free_port, opa_binary, pause_process, wait_for_opa

TIMEOUT_MS = 300
SLACK_S = 0.7  # scheduling on a loaded 2-core machine, plus the sync commit of the entry
POLICY = """package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_path[0] == "ok"

# about 4 million iterations: seconds of work, far beyond policy.timeout_ms
allow if {
	input.parsed_path[0] == "slow"
	some i in numbers.range(1, 2000)
	some j in numbers.range(1, 2000)
	i * j == -1
}

# a builtin error: with strict-builtin-errors (always on in the opa engine) OPA answers 500 eval_builtin_error
allow if {
	input.parsed_path[0] == "error"
	time.parse_rfc3339_ns(input.parsed_path[1]) > 0
}
"""


class OpaProcess:
    """``opa run --server`` on a fixed port, so it can be killed and started again at the same address."""

    def __init__(self, policy: Path, port: int, log: Path) -> None:
        self.policy, self.port, self.log = policy, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{self.port}", str(self.policy)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_opa(self.proc, f"http://127.0.0.1:{self.port}", self.log)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


class Garbage(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"<html>502 Bad Gateway</html>"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def opa(tmp_path: Path) -> Iterator[OpaProcess]:
    policy = tmp_path / "opa-policy"
    policy.mkdir()
    (policy / "policy.rego").write_text(POLICY)
    server_ = OpaProcess(policy, free_port(), tmp_path / "opa.log")
    server_.start()
    yield server_
    server_.kill()


class Client:
    def __init__(self, running: server.Running) -> None:
        self.running = running
        self.stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
        self.sent: dict[str, str] = {}
        """request id -> the error class its entry must name ('' for a normal decision)."""
        self.slowest = 0.0

    def check(self, path: str, expect_error: str) -> external_auth_pb2.CheckResponse | grpc.RpcError:
        request_id = str(uuid.uuid4())
        req = external_auth_pb2.CheckRequest()
        http = req.attributes.request.http
        http.method, http.path = "GET", path
        http.headers["x-request-id"] = request_id
        self.sent[request_id] = expect_error
        started = time.monotonic()
        try:
            answer: external_auth_pb2.CheckResponse | grpc.RpcError = self.stub.Check(req, timeout=10)
        except grpc.RpcError as e:
            answer = e
        elapsed = time.monotonic() - started
        if expect_error:
            self.slowest = max(self.slowest, elapsed)
            assert elapsed < TIMEOUT_MS / 1000 + SLACK_S, f"{path}: answered after {elapsed:.2f} s ({expect_error})"
        return answer


def _assert_failure_behaviour(answer: object, on_error: str, what: str) -> None:
    if on_error == "grpc_error":
        assert isinstance(answer, grpc.RpcError), f"{what}: expected a failed RPC, got {answer}"
        assert answer.code() != grpc.StatusCode.OK
    else:
        assert isinstance(answer, external_auth_pb2.CheckResponse), f"{what}: expected a deny, got {answer}"
        assert answer.status.code != 0 and answer.denied_response.status.code == 403, what


def _assert_allowed(answer: object, what: str) -> None:
    assert isinstance(answer, external_auth_pb2.CheckResponse), f"{what}: {answer}"
    assert answer.status.code == 0, what


@pytest.mark.parametrize("on_error", ["grpc_error", "deny"])
def test_opa_failures_get_the_configured_behaviour_in_time_are_recorded_and_the_service_recovers(
    authz_service: StartService, opa: OpaProcess, on_error: str
) -> None:
    running = authz_service(
        "policy.engine=opa",
        f"policy.opa.url=http://127.0.0.1:{opa.port}",
        f"policy.timeout_ms={TIMEOUT_MS}",
        f"policy.on_error={on_error}",
    )
    c = Client(running)
    _assert_allowed(c.check("/ok", ""), "OPA up")

    for _ in range(3):
        _assert_failure_behaviour(c.check("/error/not-a-time", "PolicyEvaluationError"), on_error, "OPA error")
    _assert_allowed(c.check("/ok", ""), "after errors")

    for _ in range(2):
        _assert_failure_behaviour(c.check("/slow", "PolicyTimeoutError"), on_error, "slow policy")
    _assert_allowed(c.check("/ok", ""), "after slow")

    assert opa.proc is not None
    pause_process(opa.proc.pid)
    try:
        for _ in range(3):  # the pooled connection, then new ones
            _assert_failure_behaviour(c.check("/ok", "PolicyTimeoutError"), on_error, "OPA paused")
    finally:
        opa.signal(signal.SIGCONT)
    _assert_allowed(c.check("/ok", ""), "after SIGCONT")

    opa.kill()
    for _ in range(3):
        _assert_failure_behaviour(c.check("/ok", "PolicyUnavailableError"), on_error, "OPA killed")

    garbage = http.server.ThreadingHTTPServer(("127.0.0.1", opa.port), Garbage)
    thread = threading.Thread(target=garbage.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            _assert_failure_behaviour(c.check("/ok", "PolicyEvaluationError"), on_error, "garbage on OPA's port")
    finally:
        garbage.shutdown()
        garbage.server_close()

    opa.start()
    deadline = time.monotonic() + 5
    while True:  # the first Check may still meet a pooled connection of the garbage server
        answer = c.check("/ok", "")
        if isinstance(answer, external_auth_pb2.CheckResponse) and answer.status.code == 0:
            break
        c.sent.popitem()  # that Check is recorded as an error; not counted as a normal one
        assert time.monotonic() < deadline, f"the service did not recover after OPA came back: {answer}"
    _assert_allowed(c.check("/ok", ""), "OPA restarted")

    # The slow policy and the paused OPA really ran into the timeout (the bound above is not vacuous).
    assert c.slowest >= TIMEOUT_MS / 1000 * 0.9, c.slowest

    # Every Check of the scenario is in the ledger with what happened to it.
    assert running.ledger is not None
    by_request = {}
    for _, raw in running.ledger.store.iter_entries():
        e = entry.decode(raw)
        by_request[e.request_id] = e
    for request_id, error_class in c.sent.items():
        e = by_request.get(request_id)
        assert e is not None, f"Check {request_id} ({error_class or 'normal'}) is not in the ledger"
        if error_class:
            assert e.outcome == entry.OUTCOME_ERROR, (request_id, e.outcome, e.error)
            assert e.error.startswith(error_class), (error_class, e.error)
            assert e.engine == "opa"
        else:
            assert e.outcome == entry.OUTCOME_ALLOW, (request_id, e.error)
    assert len(by_request) >= len(c.sent)
