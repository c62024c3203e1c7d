"""A Check larger than ``server.max_recv_msg_size`` leaves a trace: denied with 413, recorded without its body,
counted, logged with the caller's address -- through the real gRPC server, whose transport would otherwise refuse
it before any of our code runs."""

from __future__ import annotations

import logging

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.check.arrival import TRANSPORT_HEADROOM, OversizeCheckRequest, parse_check_request
from authz_ledger.record import entry
from authz_ledger.server import Running
from tests.conftest import StartService

LIMIT = 64 * 1024


def _check(path: str, body_bytes: int) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.host = "POST", path, "api.example"
    http.headers["x-user"] = "alice"
    http.body = "b" * body_bytes
    req.attributes.source.address.socket_address.address = "10.1.2.3"
    return req


@pytest.fixture
def stub(authz_service: StartService) -> tuple[external_auth_pb2_grpc.AuthorizationStub, Running]:
    running = authz_service(f"server.max_recv_msg_size={LIMIT}")
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 8 * LIMIT)])
    return external_auth_pb2_grpc.AuthorizationStub(channel), running


def test_a_check_over_the_limit_is_denied_with_413_and_recorded_without_its_body(
    stub: tuple[external_auth_pb2_grpc.AuthorizationStub, Running], caplog: pytest.LogCaptureFixture
) -> None:
    client, running = stub
    with caplog.at_level(logging.WARNING):
        response = client.Check(_check("/upload", 2 * LIMIT))
    assert response.status.code == 7  # PERMISSION_DENIED: a deny for Envoy, whatever its failure_mode_allow
    assert response.denied_response.status.code == 413
    assert "over server.max_recv_msg_size (65536)" in response.denied_response.body
    assert running.ledger is not None
    [(_, raw)] = list(running.ledger.store.iter_entries())
    e = entry.decode(raw)
    assert (e.outcome, e.http_status, e.method, e.path, e.source.address) == (
        entry.OUTCOME_DENY, 413, "POST", "/upload", "10.1.2.3",
    )  # fmt: skip
    assert e.error.startswith("request_too_large: the CheckRequest is ")
    assert b"bbbbbbbb" not in raw  # the body is not kept
    assert e.decision_id == response.dynamic_metadata.fields["decision_id"].string_value
    assert running.metrics.registry.get_sample_value("authz_ledger_oversize_checks_total") == 1
    [line] = [r.getMessage() for r in caplog.records if "request_too_large" in r.getMessage()]
    assert "from ipv4:127.0.0.1:" in line


def test_a_check_within_the_limit_is_decided_as_usual(
    stub: tuple[external_auth_pb2_grpc.AuthorizationStub, Running],
) -> None:
    client, running = stub
    response = client.Check(_check("/upload", LIMIT // 2))
    assert response.denied_response.status.code != 413
    assert running.ledger is not None
    [(_, raw)] = list(running.ledger.store.iter_entries())
    assert "request_too_large" not in entry.decode(raw).error


def test_beyond_the_transport_headroom_grpc_refuses_the_call(
    stub: tuple[external_auth_pb2_grpc.AuthorizationStub, Running],
) -> None:
    """What README documents: past TRANSPORT_HEADROOM times the limit, gRPC itself refuses (and Envoy's
    status_on_error applies); nothing reaches the handler."""
    client, running = stub
    with pytest.raises(grpc.RpcError) as exc:
        client.Check(_check("/huge", TRANSPORT_HEADROOM * LIMIT + 1024))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.ledger is not None
    assert list(running.ledger.store.iter_entries()) == []


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        pytest.param(_check("/p", 100).SerializeToString(), True, id="a request that parses keeps all but its body"),
        pytest.param(b"\xff" * 200, False, id="bytes that do not parse are still an oversize request"),
    ],
)
def test_the_deserializer_marks_oversize_requests(data: bytes, parsed: bool) -> None:
    found = parse_check_request(data, limit=50)
    assert isinstance(found, OversizeCheckRequest) and found.size == len(data) and found.limit == 50
    assert (found.request is not None) == parsed
    if found.request is not None:
        assert found.request.attributes.request.http.path == "/p"
        assert found.request.attributes.request.http.body == ""


def test_a_request_within_the_limit_is_parsed_as_usual() -> None:
    found = parse_check_request(_check("/p", 10).SerializeToString(), limit=LIMIT)
    assert isinstance(found, external_auth_pb2.CheckRequest) and found.attributes.request.http.body == "b" * 10
