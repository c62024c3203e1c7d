"""Impact analysis: decisions a real ``serve`` recorded, replayed with the policy that made them (nothing changes)
and with a candidate (exactly the decisions it decides differently are reported)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
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
ENGINES = ("in-process", "processes")
"""Where ``replay --engine`` evaluates: this process (the default) or evaluator processes."""
RUNAWAY = """
default allow := false

# Bob's decisions compute for about 20 s (9M iterations): far past any re-evaluation's timeout.
allow if {
    input.attributes.request.http.headers["x-user"] == "bob"
    every i in numbers.range(1, 3000) {
        every j in numbers.range(1, 3000) {
            i + j > 0
        }
    }
}
"""


def send_checks(port: int) -> None:
    """The Checks of CHECKS, as Envoy sends them (a bearer token too: the recorded input holds its digest)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for user, method, path in CHECKS:
            req = external_auth_pb2.CheckRequest()
            http = req.attributes.request.http
            http.method, http.path, http.host = method, path, "shop.example"
            http.headers.update({"x-user": user, "authorization": "Bearer abcdefghijklmnopqrstuvwxyz0123456789ABCD"})
            stub.Check(req, timeout=10)


@pytest.fixture
def recorded(authz_service: StartService, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    running = authz_service(data_dir=data)
    send_checks(running.port)
    running.stop()
    return data


def run(*argv: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = io.StringIO()
    code = main(["replay", *argv, "--json", "--workers", "1"], out)
    return code, json.loads(out.getvalue())


def run_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process: the in-process engine's overrun ends the process it runs in."""
    command = [sys.executable, "-m", "authz_ledger.cli", "replay", *argv, "--json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


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


def test_evaluating_in_this_process_or_in_evaluator_processes_gives_the_same_report(
    recorded: Path, tmp_path: Path
) -> None:
    candidate = write_policy(tmp_path / "candidate", ONLY_ALICE)
    reports = [run("--data-dir", str(recorded), "--policy", str(candidate), "--engine", e) for e in ENGINES]
    assert reports[0] == reports[1]
    assert reports[0][1]["changed"] == 2


def test_a_candidate_that_does_not_compile_is_an_error_not_a_change(recorded: Path, tmp_path: Path) -> None:
    broken = write_policy(tmp_path / "broken", "allow if {")
    done = run_process("--data-dir", str(recorded), "--policy", str(broken))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("authz-ledger replay: ")


@pytest.mark.parametrize(
    ("engine", "code"),
    [("in-process", 2), ("processes", 1)],
    ids=["in this process it ends the replay", "in evaluator processes its decisions are errors"],
)
def test_a_candidate_that_computes_without_end_is_bounded_by_the_timeout(
    recorded: Path, tmp_path: Path, engine: str, code: int
) -> None:
    runaway = write_policy(tmp_path / "runaway", RUNAWAY)
    started = time.monotonic()
    done = run_process(
        *("--data-dir", str(recorded), "--policy", str(runaway), "--filter", "user:bob"),
        *("--engine", engine, "--timeout-ms", "500", "--workers", "1"),
    )
    assert time.monotonic() - started < 15  # a decision takes ~20 s: the bound, not the policy, ended it
    assert done.returncode == code, done.stderr
    if engine == "in-process":
        assert done.stdout == ""
        assert "PolicyTimeoutError: an evaluation has run for" in done.stderr
        assert "past its 0.5 s timeout" in done.stderr
        assert "with --engine processes such a decision is reported as an error" in done.stderr
    else:
        report = json.loads(done.stdout)
        assert [(c["principal"], c["now"]) for c in report["changes"]] == [("bob", "error"), ("bob", "error")]
