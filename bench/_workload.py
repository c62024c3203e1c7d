"""The request both benchmarks use: a CheckRequest shaped like the ones Envoy's ext_authz filter sends."""

from __future__ import annotations

import struct
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2

from authz_ledger.policy import Evaluation

CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"

HEADERS = {
    ":authority": "api.example.com",
    ":method": "GET",
    ":path": "/api/items?page=2&sort=name",
    ":scheme": "https",
    "x-user": "alice",
    "x-request-id": "4f1c2a8e-9b3d-4e7a-8c21-6d5f0e3b9a17",
    "x-forwarded-proto": "https",
    "x-forwarded-for": "10.1.2.3",
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "accept": "application/json",
    "accept-encoding": "gzip, deflate, br",
    "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}


def check_request() -> external_auth_pb2.CheckRequest:
    """Source/destination sockets, request time, method, path, host, scheme, protocol and 13 headers."""
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = "10.1.2.3"
    attrs.source.address.socket_address.port_value = 53124
    attrs.destination.address.socket_address.address = "10.1.0.7"
    attrs.destination.address.socket_address.port_value = 8080
    attrs.request.time.seconds = 1_767_225_600
    attrs.request.time.nanos = 123_456_000
    http = attrs.request.http
    http.id = "11785487469357046416"
    http.method = "GET"
    http.path = HEADERS[":path"]
    http.host = HEADERS[":authority"]
    http.scheme = "https"
    http.protocol = "HTTP/1.1"
    http.headers.update(HEADERS)
    return req


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


EXAMPLE_RESULT = {
    "allowed": True,
    "headers": {"x-authz-user": "alice"},
    "request_headers_to_remove": ["x-user"],
    "dynamic_metadata": {"user": "alice", "roles": ["admin"]},
}
"""What the example policy answers for this request (alice is an admin)."""


class StubEngine:
    """A zero-cost PolicyEngine: the example policy's answer for alice, at once, with no process or socket."""

    name = "stub"
    decision_path = "envoy/authz/allow"

    def evaluate(self, input_json: bytes) -> Evaluation:
        return Evaluation(EXAMPLE_RESULT, "stub", 0)

    def policy_version(self) -> str:
        return "stub"

    def reload(self) -> str:
        return "stub"

    def close(self) -> None:
        pass


def loadavg() -> str:
    """Load average plus CPU and I/O pressure (PSI "some" avg10), the noise other processes add."""
    out = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    for kind in ("cpu", "io"):
        try:
            some = Path(f"/proc/pressure/{kind}").read_text().split()[1]
            out += f", {kind} pressure {some.split('=')[1]}%"
        except (OSError, IndexError):
            pass
    return out
