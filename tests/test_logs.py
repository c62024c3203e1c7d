"""Logs: JSON lines carry the decision id, Envoy's request id and trace context, and never a secret."""

from __future__ import annotations

import json
import logging
import sys

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.logs import JsonFormatter, PlainFormatter
from authz_ledger.record import entry
from tests.conftest import StartService, write_policy


@pytest.mark.parametrize("ledger", ["true", "false"], ids=["with the ledger", "with the ledger off"])
def test_a_failed_decision_is_logged_with_its_ids_and_trace_and_no_secret(
    authz_service: StartService, tmp_path, caplog: pytest.LogCaptureFixture, ledger: str
) -> None:
    running = authz_service(f"ledger.enabled={ledger}", policy=write_policy(tmp_path / "pol", "allow := 42\n"))
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.path = "/x?access_token=query-secret"
    http.headers["x-request-id"] = "req-123"
    http.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    http.headers["authorization"] = "Bearer header-secret"
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as exc:
        stub.Check(req)
    decision_lines = [r for r in caplog.records if getattr(r, "decision_id", None)]
    assert decision_lines
    doc = json.loads(JsonFormatter().format(decision_lines[0]))
    assert doc["request_id"] == "req-123"
    assert doc["traceparent"].startswith("00-4bf92f35")
    assert exc.value.code() == grpc.StatusCode.UNKNOWN
    if running.ledger is not None:
        [(_, raw)] = list(running.ledger.store.iter_entries())
        assert doc["decision_id"] == entry.decode(raw).decision_id  # the log line names the ledger entry
        assert b"4bf92f3577b34da6a3ce929d0e0e4736" in raw  # the trace context is in the ledger entry too
    text = caplog.text + "".join(JsonFormatter().format(r) for r in caplog.records)
    assert "query-secret" not in text
    assert "header-secret" not in text


FORGED = "\n2026-12-05 00:00:00,000 INFO authz_ledger: forged line\r\x1b[2K\u2028\x85"


def test_a_request_id_with_control_characters_cannot_forge_a_log_line(
    authz_service: StartService, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the real service: the request id is the attacker's; each format keeps one line per record."""
    running = authz_service(policy=write_policy(tmp_path / "pol", "allow := 42\n"))
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    req = external_auth_pb2.CheckRequest()
    req.attributes.request.http.path = "/x"
    req.attributes.request.http.headers["x-request-id"] = "req" + FORGED
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError):
        stub.Check(req)
    [record] = [r for r in caplog.records if getattr(r, "decision_id", None)]
    plain = PlainFormatter().format(record)
    assert "\n" not in plain and "\r" not in plain and "\x1b" not in plain and "\u2028" not in plain
    doc = json.loads(JsonFormatter().format(record))
    assert doc["request_id"] == "req" + FORGED  # JSON keeps the exact value, escaped
    assert "\n" not in JsonFormatter().format(record)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("line\nbreak", id="a newline"),
        pytest.param("carriage\rreturn", id="a carriage return"),
        pytest.param("\x1b[31mred", id="a terminal escape"),
        pytest.param("sep\u2028arator", id="a Unicode line separator"),
        pytest.param("lone \udcff surrogate", id="a lone surrogate from undecodable bytes"),
        pytest.param("nul\x00byte", id="a NUL"),
    ],
)
def test_any_message_is_one_line_in_plain_text_and_valid_json(text: str) -> None:
    record = logging.LogRecord("authz_ledger.check", logging.WARNING, __file__, 1, "decision failed: %s", (text,), None)
    plain = PlainFormatter().format(record)
    assert len(plain.splitlines()) == 1 and plain.isprintable()
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["msg"] == f"decision failed: {text}"


def test_a_traceback_cannot_pass_for_a_record_of_its_own() -> None:
    try:
        raise ValueError("bad" + FORGED)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    first, *rest = PlainFormatter().format(record).split("\n")
    assert first.endswith("failed") and rest
    assert all(line.startswith("  ") and line.isprintable() for line in rest)
