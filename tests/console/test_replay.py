"""Impact analysis: decisions a real ``serve`` recorded, replayed with the policy that made them (nothing changes)
and with a candidate (exactly the decisions it decides differently are reported)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz_ledger.cli.main import main
from authz_ledger.config import EXAMPLE_POLICY
from tests.conftest import StartService, write_policy

CHECKS = [  # (user, method, path) -> the example policy's answer
    ("alice", "GET", "/orders/1"),  # allow (admin)
    ("bob", "GET", "/orders/2"),  # allow (reader)
    ("bob", "DELETE", "/people/7"),  # deny
    ("carol", "POST", "/people"),  # allow (writer)
    ("mallory", "GET", "/orders/3"),  # deny (unknown)
]
ONLY_ALICE = """
default allow := false

allow if input.attributes.request.http.headers["x-user"] == "alice"
"""


@pytest.fixture
def recorded(authz_service: StartService, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    running = authz_service(data_dir=data)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for user, method, path in CHECKS:
            req = external_auth_pb2.CheckRequest()
            http = req.attributes.request.http
            http.method, http.path, http.host = method, path, "shop.example"
            http.headers["x-user"] = user
            http.headers["authorization"] = "Bearer abcdefghijklmnopqrstuvwxyz0123456789ABCD"
            stub.Check(req, timeout=10)
    running.stop()
    return data


def run(*argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = io.StringIO()
    code = main(["replay", *argv, "--json", "--workers", "1"], out)
    return code, json.loads(out.getvalue())


def test_replaying_with_the_policy_that_decided_changes_nothing(recorded: Path) -> None:
    code, report = run("--data-dir", str(recorded), "--policy", str(EXAMPLE_POLICY))
    assert code == 0
    assert report["replayed"] == len(CHECKS)
    assert report["changed"] == 0
    assert report["unchanged"] == len(CHECKS)
    assert report["redacted_inputs"] == len(CHECKS)  # the bearer token is a digest in every recorded input


def test_a_candidate_policy_reports_exactly_the_decisions_it_would_change(recorded: Path, tmp_path: Path) -> None:
    candidate = write_policy(tmp_path / "candidate", ONLY_ALICE)
    code, report = run("--data-dir", str(recorded), "--policy", str(candidate))
    assert code == 1
    changed = {(c["principal"], c["method"], c["path"]): (c["was"], c["now"]) for c in report["changes"]}
    assert changed == {
        ("bob", "GET", "/orders/2"): ("allow 200", "deny 403"),
        ("carol", "POST", "/people"): ("allow 200", "deny 403"),
    }
    assert report["by_path"] == {"/orders/* allow 200 -> deny 403": 1, "/people allow 200 -> deny 403": 1}
    assert report["by_principal"] == {"bob allow 200 -> deny 403": 1, "carol allow 200 -> deny 403": 1}


def test_a_filter_limits_the_replay_and_a_failing_candidate_is_reported_as_errors(
    recorded: Path, tmp_path: Path
) -> None:
    broken = write_policy(tmp_path / "broken", 'allow := x if { x := to_number("not a number") }\n')
    code, report = run("--data-dir", str(recorded), "--policy", str(broken), "--filter", "user:bob")
    assert code == 1
    assert report["replayed"] == 2
    assert {c["now"] for c in report["changes"]} == {"error"}
    assert all("to_number" in c["error"] for c in report["changes"])
