"""The opa engine against a real OPA (tests/tools/build-opa.sh), plus a fake server for garbage replies."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.check.input import build_input
from authz_ledger.errors import (
    PolicyEvaluationError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    PolicyUndefinedError,
)
from authz_ledger.policy.opa import OpaEngine, version_from_provenance
from authz_ledger.record import gojson
from tests.check.input.support import http_request, request_from_json
from tests.check.input.test_golden import NUMBER_CASES, with_number_text, without_number_text
from tests.conftest import free_port, opa_binary, pause_process, wait_for_opa
from tests.record.gojson.test_read import documents

from .conftest import EXAMPLE_POLICY, decision_cases, encode, request_input, write_policy

RECORDED_INPUTS = [case for case in NUMBER_CASES if "input" in case]

EXTRA_POLICY = """package envoy.errors
import rego.v1
conflict := 1 if input.x
conflict := 2 if input.x
deny if time.parse_rfc3339_ns(input.t) > 0
allow_unless_denied if not deny
"""


# What the golden-numbers recording used: the input document as OPA's json.marshal writes it.
ECHO_POLICY = """package envoy.echo
import rego.v1
document := json.marshal(input)
"""


class Opa:
    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        self.socket = tmp / "opa.sock"
        self.url = f"http://127.0.0.1:{self.port}"
        self.unix_url = f"unix://{self.socket}"
        cmd = [
            opa_binary(),
            "run",
            "--server",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--addr",
            self.unix_url,
            *args,
        ]
        self.log = (tmp / "opa.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_opa(self.proc, self.url, tmp / "opa.log", timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def opa(tmp_path_factory) -> Iterator[Opa]:
    tmp = tmp_path_factory.mktemp("opa")
    extra = write_policy(tmp / "extra", EXTRA_POLICY, name="errors.rego")
    write_policy(tmp / "extra", ECHO_POLICY, name="echo.rego")
    server = Opa([str(EXAMPLE_POLICY), str(extra)], tmp)
    yield server
    server.stop()


@pytest.fixture
def own_opa(tmp_path) -> Iterator[Opa]:
    """An OPA this test may pause or kill."""
    server = Opa([str(EXAMPLE_POLICY)], tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize(("method", "path", "user", "want"), decision_cases())
def test_example_policy_decisions_match_the_embedded_table(opa, method, path, user, want):
    with OpaEngine(opa.url, timeout=5.0) as engine:
        evaluation = engine.evaluate(encode(request_input(method, path, user)))
    assert evaluation.result == want
    assert evaluation.policy_version == "opa/1.4.2"


def test_unix_socket(opa):
    with OpaEngine(opa.unix_url, timeout=5.0) as engine:
        result = engine.evaluate(encode(request_input("GET", "/health", None))).result
    assert result["allowed"] is True


def test_undefined_decision(opa):
    with (
        OpaEngine(opa.url, "envoy/authz/nothing", timeout=5.0) as engine,
        pytest.raises(PolicyUndefinedError),
    ):
        engine.evaluate(b"{}")


@pytest.mark.parametrize(
    ("path", "document", "message"),
    [
        pytest.param("envoy/errors/conflict", {"x": True}, "conflict", id="a conflicting rule is an evaluation error"),
        pytest.param(
            "envoy/errors/allow_unless_denied",
            {"t": "garbage"},
            "eval_builtin_error",
            id="a builtin error fails closed even under allow-unless-denied",
        ),
    ],
)
def test_evaluation_errors(opa, path, document, message):
    with OpaEngine(opa.url, path, timeout=5.0) as engine, pytest.raises(PolicyEvaluationError, match=message):
        engine.evaluate(encode(document))


def test_input_that_is_not_json_is_rejected_by_opa(opa):
    with OpaEngine(opa.url, timeout=5.0) as engine, pytest.raises(PolicyUnavailableError, match="400"):
        engine.evaluate(b"not json")


def test_connection_refused_is_unavailable_and_fast():
    with OpaEngine(f"http://127.0.0.1:{free_port()}", timeout=2.0) as engine:
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError):
            engine.evaluate(b"{}")
        assert time.monotonic() - started < 0.5


def test_missing_unix_socket_is_unavailable(tmp_path):
    with (
        OpaEngine(f"unix://{tmp_path}/none.sock", timeout=2.0) as engine,
        pytest.raises(PolicyUnavailableError),
    ):
        engine.evaluate(b"{}")


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_paused_opa_times_out_within_the_deadline(own_opa, transport):
    url = own_opa.url if transport == "tcp" else own_opa.unix_url
    with OpaEngine(url, timeout=0.5) as engine:
        engine.evaluate(b"{}")  # a pooled keep-alive connection exists
        pause_process(own_opa.proc.pid)
        try:
            for _ in range(2):  # on the pooled connection, then on a new one
                started = time.monotonic()
                with pytest.raises(PolicyTimeoutError):
                    engine.evaluate(b"{}")
                assert 0.45 <= time.monotonic() - started < 0.8
        finally:
            os.kill(own_opa.proc.pid, signal.SIGCONT)
        assert engine.evaluate(encode(request_input("GET", "/health", None))).result["allowed"] is True


def test_too_many_decisions_in_flight(opa):
    with OpaEngine(opa.url, timeout=0.2, max_in_flight=1) as engine:
        assert engine._slots.acquire(timeout=1)  # another decision holds the only slot
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError, match="too many decisions in flight"):
            engine.evaluate(b"{}")
        assert time.monotonic() - started < 0.5


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(self.status)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        pytest.param(200, b"<html>hi</html>", PolicyEvaluationError, "not JSON", id="a 200 that is not JSON"),
        pytest.param(200, b"[1, 2]", PolicyEvaluationError, "not a JSON object", id="a 200 with a JSON list"),
        pytest.param(200, b"{}", PolicyUndefinedError, "undefined", id="a 200 without result is undefined"),
        pytest.param(500, b"<html>oops</html>", PolicyUnavailableError, "HTTP 500", id="a 500 that is not OPA's"),
        pytest.param(
            500,
            b'{"code": "internal_error", "message": "eval_conflict_error"}',
            PolicyEvaluationError,
            "eval_conflict_error",
            id="a 500 with OPA's error body is an evaluation error",
        ),
        pytest.param(503, b"", PolicyUnavailableError, "HTTP 503", id="a 503 from a proxy"),
    ],
)
def test_garbage_replies(status, body, error, message):
    handler = type("Handler", (_FakeHandler,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with OpaEngine(url, timeout=2.0) as engine, pytest.raises(error, match=message):
            engine.evaluate(b"{}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "number",
    [123456789012345678901234567890, 18446744073709551616, -9223372036854775809, 18446744073709551615],
    ids=["far beyond 64 bits", "just beyond unsigned 64 bits", "just below signed 64 bits", "the largest u64"],
)
def test_integers_of_any_size_in_an_answer_are_kept_exact(number):
    body = b'{"result": {"allowed": true, "n": %d}}' % number
    handler = type("Handler", (_FakeHandler,), {"status": 200, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with OpaEngine(f"http://127.0.0.1:{server.server_address[1]}", timeout=2.0) as engine:
            value = engine.evaluate(b"{}").result["n"]
        assert type(value) is int and value == number
    finally:
        server.shutdown()
        server.server_close()


def test_bundle_revision_is_the_policy_version(tmp_path):
    bundle = tmp_path / "bundle"
    for name in ("policy.rego", "data.json"):
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes((EXAMPLE_POLICY / name).read_bytes())
    (bundle / ".manifest").write_text(json.dumps({"revision": "rbac-2026.11.26"}))
    server = Opa(["--bundle", str(bundle)], tmp_path)
    try:
        with OpaEngine(server.url, timeout=5.0) as engine:
            assert engine.policy_version() == "opa/unknown"
            evaluation = engine.evaluate(encode(request_input("GET", "/health", None)))
            assert evaluation.policy_version == "rbac-2026.11.26"
            assert engine.reload() == "rbac-2026.11.26"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("provenance", "want"),
    [
        pytest.param({"version": "1.4.2", "build_commit": ""}, "opa/1.4.2", id="no bundle: the OPA version"),
        pytest.param({"version": "1.4.2", "build_commit": "abc123"}, "opa/1.4.2+abc123", id="with a build commit"),
        pytest.param({"version": "1.4.2", "bundles": {"b": {"revision": "r7"}}}, "r7", id="one bundle: its revision"),
        pytest.param(
            {"version": "1.4.2", "bundles": {"z": {"revision": "2"}, "a": {"revision": "1"}}},
            "a=1,z=2",
            id="several bundles: sorted name=revision pairs",
        ),
        pytest.param({"version": "1.4.2", "revision": "legacy"}, "legacy", id="the legacy single revision"),
        pytest.param({}, "opa/unknown", id="nothing known"),
    ],
)
def test_version_from_provenance(provenance, want):
    assert version_from_provenance(provenance) == want


def test_tcp_and_unix_socket_answer_every_decision_alike_on_reused_connections(opa):
    """Hundreds of decisions over each transport's connection pool: every answer is the policy's, none lost or
    crossed between callers (speed is bench/'s job)."""
    requests = [(user, encode(request_input("POST", "/people/42", user))) for user in ("carol", "bob", None)]
    for url in (opa.url, opa.unix_url):
        with OpaEngine(url, timeout=5.0) as engine:
            for i in range(300):
                user, body = requests[i % len(requests)]
                result = engine.evaluate(body).result
                assert result["allowed"] is (user == "carol"), (url, i, user, result)


@pytest.mark.parametrize("case", RECORDED_INPUTS, ids=[f"{c['kind']}: {c['name']}" for c in RECORDED_INPUTS])
def test_a_real_opa_sees_the_recorded_input_document_number_text_and_all(opa, case):
    """Differential, end to end: our input document, sent to a real OPA, is what the plugin gave its policy."""
    document = build_input(request_from_json(without_number_text(case["check_request"])))
    with OpaEngine(opa.url, "envoy/echo/document", timeout=5.0) as engine:
        echoed = engine.evaluate(gojson.compact(document)).result
    assert with_number_text(echoed) == case["input"]


@settings(max_examples=150, deadline=None)
@given(body=documents, raw=st.booleans())
def test_any_json_body_go_accepts_is_decided_by_a_real_opa_with_its_number_text(opa, body, raw):
    """Property: whatever JSON body a client sends, OPA reads the input document and the policy decides."""
    fields = {"raw_body": body.text.encode()} if raw else {"body": body.text}
    document = build_input(http_request("/", headers={"content-type": "application/json"}, **fields))
    with OpaEngine(opa.url, "envoy/echo/document", timeout=5.0) as engine:
        echoed = engine.evaluate(gojson.compact(document)).result
    assert with_number_text(echoed)["parsed_body"] == with_number_text(body.compact)
