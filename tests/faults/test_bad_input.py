"""Hostile and malformed CheckRequests against the real service: a clear deny or error each, one entry each."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from authz_ledger import server
from authz_ledger.record import entry
from tests.conftest import StartService

CHECK = "/envoy.service.auth.v3.Authorization/Check"


def _serialize(http: dict[str, Any] | None, **attrs: Any) -> bytes:
    doc: dict[str, Any] = {"attributes": dict(attrs)}
    if http is not None:
        doc["attributes"]["request"] = {"http": http}
    return json_format.ParseDict(doc, external_auth_pb2.CheckRequest()).SerializeToString()


def _invalid_utf8() -> bytes:
    data = _serialize({"method": "GET", "path": "/", "headers": {"x-user": "AAAA"}})
    return data.replace(b"AAAA", b"A\xff\xfeA")


def _json(body: str, **headers: str) -> bytes:
    return _serialize(
        {
            "method": "POST",
            "path": "/api/items",
            "body": body,
            "headers": {"content-type": "application/json", **headers},
        }
    )


CASES = [
    pytest.param(b"", "deny", id="an empty CheckRequest is denied by the policy"),
    pytest.param(_serialize(None, source={"principal": "x"}), "deny", id="a request without http attributes"),
    pytest.param(_invalid_utf8(), "parse_error", id="invalid UTF-8 in a header value is a 400 parse error"),
    pytest.param(b"\x0a\xff\xff\xff\xff\x0f", "parse_error", id="truncated protobuf bytes are a 400 parse error"),
    pytest.param(b"\xff" * 64, "parse_error", id="garbage bytes are a 400 parse error"),
    pytest.param(_json(json.dumps({"a": "x" * (1 << 20)})), "deny", id="a 1 MiB JSON body is parsed and decided"),
    pytest.param(_json("[" * 200_000), "parse_error", id="a JSON body nested 200000 deep is a parse error"),
    pytest.param(_json("{bad"), "parse_error", id="broken JSON is a 400 parse error"),
    pytest.param(_json("{}", **{"content-length": "banana"}), "parse_error", id="a non-numeric content-length"),
    pytest.param(
        _serialize(
            {
                "method": "POST",
                "path": "/",
                "body": "x" * (1 << 20),
                "headers": {"content-type": "application/x-bogus; ;;=\x01"},
            }
        ),
        "deny",
        id="a 1 MiB body with a bogus content type is not parsed",
    ),
    pytest.param(
        _serialize(
            {
                "method": "POST",
                "path": "/",
                "body": "--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            }
        ),
        "parse_error",
        id="broken multipart is a 400 parse error",
    ),
    pytest.param(
        _serialize(
            {"method": "POST", "path": "/svc.S/M", "rawBody": "AAAA", "headers": {"content-type": "application/grpc"}}
        ),
        "deny",
        id="a gRPC body without a descriptor set is not parsed",
    ),
    pytest.param(
        _serialize({"method": "GET", "path": "/", "headers": {f"x-h-{i}": "v" * 20 for i in range(5000)}}),
        "deny",
        id="five thousand headers",
    ),
    pytest.param(_serialize({"method": "GET", "path": "/" + "a/" * 30_000}), "deny", id="a 60 KB path"),
    pytest.param(_serialize({"method": "GET", "path": "/%zz?%zz=1"}), "parse_error", id="bad percent escapes"),
    pytest.param(_serialize({"method": "GET", "path": "/a\x00b?q=\x00"}), "deny", id="NUL bytes in the path"),
    pytest.param(_serialize({"method": "GET", "path": "//admin/../..//x"}), "deny", id="an absurd relative path"),
]


@pytest.mark.parametrize(("raw", "expect"), CASES)
def test_each_hostile_request_gets_a_clear_answer_and_exactly_one_entry(
    authz_service: StartService, raw: bytes, expect: str
) -> None:
    running: server.Running = authz_service()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 8 << 20)])
    call = channel.unary_unary(
        CHECK, request_serializer=None, response_deserializer=external_auth_pb2.CheckResponse.FromString
    )
    response = call(raw, timeout=20)
    assert response.status.code == 7  # every case here is a deny (policy) or a request_parse_error deny
    if expect == "parse_error":
        assert response.denied_response.status.code == 400
        assert response.denied_response.body.startswith("request_parse_error:")
    else:
        assert response.denied_response.status.code in (401, 403)
    assert running.ledger is not None
    entries = [entry.decode(b, seq) for seq, b in running.ledger.store.iter_entries()]
    assert len(entries) == 1
    assert entries[0].decision_id == response.dynamic_metadata["decision_id"]
    assert entries[0].outcome == entry.OUTCOME_DENY
    channel.close()


def test_a_huge_request_still_makes_an_entry_small_enough_for_tlog_tiles(authz_service: StartService) -> None:
    running: server.Running = authz_service()
    headers = {f"x-h-{i}": "v" * 100 for i in range(2000)}  # ~230 KB of headers
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 8 << 20)])
    call = channel.unary_unary(
        CHECK, request_serializer=None, response_deserializer=external_auth_pb2.CheckResponse.FromString
    )
    response = call(_serialize({"method": "GET", "path": "/x", "headers": headers}), timeout=20)
    assert running.ledger is not None
    [(_, raw)] = list(running.ledger.store.iter_entries())
    assert len(raw) <= entry.MAX_ENTRY_BYTES
    e = entry.decode(raw)
    assert e.decision_id == response.dynamic_metadata["decision_id"]
    assert json.loads(e.input_json)["too_large_to_record"]["bytes"] > 200_000
    channel.close()


def test_huge_ids_and_trace_headers_still_fit_one_tlog_tiles_entry() -> None:
    from authz_ledger.record.entry import DecisionRecord

    record = DecisionRecord(
        time_unix_nano=1,
        decision_id="d",
        request_id="r" * 40_000,
        tracestate="t" * 30_000,
        source_principal="p" * 20_000,
        input_json=b"{}" * 20_000,
    )
    assert len(record.encode()) + 11 <= entry.MAX_ENTRY_BYTES
