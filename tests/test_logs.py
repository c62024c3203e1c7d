"""Logs: JSON lines carry the decision id, Envoy's request id and trace context, and never a secret."""

from __future__ import annotations

import json
import logging

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.logs import JsonFormatter
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
