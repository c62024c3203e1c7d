"""The running service over real gRPC: Check, health, reflection, ledger entries, shutdown, recovery."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_ledger import config, server
from authz_ledger.errors import LedgerCorruptError, LedgerError, RollbackError
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store, u64
from authz_ledger.ledger.verify import verify_store
from authz_ledger.record import entry
from authz_ledger.tlog import note
from tests.conftest import TEST_DEFAULTS, free_port, serve_process, stop_process
from tests.support.waits import wait_until

RBAC_ALICE = {"method": "GET", "path": "/api/items", "headers": {"x-user": "alice"}}


def check_request(http: dict[str, Any], **attrs: Any) -> external_auth_pb2.CheckRequest:
    doc = {"attributes": {"request": {"http": http}, **attrs}}
    return json_format.ParseDict(doc, external_auth_pb2.CheckRequest())


def serve_cfg(tmp_path: Path, *sets: str, policy: Path | None = None) -> config.Config:
    overrides: dict[str, Any] = {
        "server.addr": f"127.0.0.1:{free_port()}",
        "ledger.data_dir": str(tmp_path / "data"),
    }
    if policy is not None:
        overrides["policy.source"] = str(policy)
    return config.load(
        sets=[*TEST_DEFAULTS, *sets],
        environ={},
        overrides=overrides,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[server.Running]:
    r = server.start(serve_cfg(tmp_path))
    yield r
    r.stop()


def stub(r: server.Running) -> Any:
    channel = grpc.insecure_channel(f"127.0.0.1:{r.port}")
    return external_auth_pb2_grpc.AuthorizationStub(channel)


def entries(r: server.Running) -> list[Any]:
    assert r.ledger is not None
    return [entry.decode(b, seq) for seq, b in r.ledger.store.iter_entries()]


def test_allowed_check_is_answered_and_recorded_with_the_same_decision_id(running: server.Running) -> None:
    resp = stub(running).Check(check_request(RBAC_ALICE, source={"principal": "spiffe://c/ns/a/sa/b"}))
    assert resp.status.code == 0
    decision_id = resp.dynamic_metadata["decision_id"]
    [e] = entries(running)
    assert e.decision_id == decision_id
    assert e.sequence == 0
    assert (e.method, e.path, e.allowed, e.http_status) == ("GET", "/api/items", True, 200)
    assert e.outcome == entry.OUTCOME_ALLOW
    assert e.source.principal == "spiffe://c/ns/a/sa/b"
    assert e.engine == "embedded" and e.decision_path == "envoy/authz/allow" and e.policy_version
    assert json.loads(e.input_json)["parsed_path"] == ["api", "items"]
    assert json.loads(e.result_json)["allowed"] is True


def test_denied_check_carries_the_policy_status_and_is_recorded(running: server.Running) -> None:
    resp = stub(running).Check(check_request({"method": "GET", "path": "/api/items", "headers": {"x-user": "mallory"}}))
    assert resp.status.code == 7
    assert resp.denied_response.status.code == 403
    [e] = entries(running)
    assert (e.allowed, e.http_status, e.outcome) == (False, 403, entry.OUTCOME_DENY)


def test_request_parse_error_is_a_400_deny_and_recorded(running: server.Running) -> None:
    http = {
        "method": "POST",
        "path": "/api/items",
        "headers": {"content-type": "application/json"},
        "body": "{bad",
    }
    resp = stub(running).Check(check_request(http))
    assert resp.status.code == 7
    assert resp.denied_response.status.code == 400
    assert resp.denied_response.body.startswith("request_parse_error:")
    [e] = entries(running)
    assert e.outcome == entry.OUTCOME_DENY and e.error.startswith("request_parse_error")


def test_a_check_without_http_attributes_still_gets_exactly_one_entry(running: server.Running) -> None:
    resp = stub(running).Check(external_auth_pb2.CheckRequest())
    assert resp.status.code == 7  # the example policy denies an anonymous request to no route
    [e] = entries(running)
    assert e.outcome == entry.OUTCOME_DENY


def test_secrets_never_reach_the_ledger(running: server.Running) -> None:
    http = {
        "method": "POST",
        "path": "/api/items?access_token=tok-in-query",
        "body": '{"password":"body-secret"}',
        "headers": {
            "x-user": "alice",
            "authorization": "Bearer tok-in-header",
            "cookie": "sid=cookie-secret",
            "content-type": "application/json",
        },
    }
    stub(running).Check(check_request(http))
    running.stop()
    assert running.ledger is not None
    blob = b"".join(p.read_bytes() for p in running.ledger.paths.store.glob("*.mdb"))
    for secret in (b"tok-in-query", b"body-secret", b"tok-in-header", b"cookie-secret"):
        assert secret not in blob


def test_policy_errors_fail_the_rpc_and_are_recorded(tmp_path: Path) -> None:
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.rego").write_text('package envoy.authz\nimport rego.v1\nallow := {"no_allowed_key": true}\n')
    r = server.start(serve_cfg(tmp_path, policy=pol))
    try:
        with pytest.raises(grpc.RpcError) as exc:
            stub(r).Check(check_request(RBAC_ALICE))
        assert exc.value.code() == grpc.StatusCode.UNKNOWN
        [e] = entries(r)
        assert e.outcome == entry.OUTCOME_ERROR and "PolicyResultError" in e.error
    finally:
        r.stop()


def test_on_error_deny_answers_a_deny_without_relying_on_envoy(tmp_path: Path) -> None:
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.rego").write_text("package envoy.authz\nimport rego.v1\nallow := 42\n")
    r = server.start(serve_cfg(tmp_path, "policy.on_error=deny", "policy.error_http_status=503", policy=pol))
    try:
        resp = stub(r).Check(check_request(RBAC_ALICE))
        assert resp.status.code != 0 and resp.denied_response.status.code == 503
        [e] = entries(r)
        assert e.outcome == entry.OUTCOME_ERROR
    finally:
        r.stop()


def test_dry_run_allows_but_records_the_real_decision(tmp_path: Path) -> None:
    r = server.start(serve_cfg(tmp_path, "policy.dry_run=true"))
    try:
        resp = stub(r).Check(check_request({"method": "DELETE", "path": "/x", "headers": {"x-user": "mallory"}}))
        assert resp.status.code == 0
        [e] = entries(r)
        assert e.allowed is False and e.dry_run is True and e.outcome == entry.OUTCOME_DENY
    finally:
        r.stop()


def test_health_reports_serving_then_not_serving_on_shutdown(tmp_path: Path) -> None:
    r = server.start(serve_cfg(tmp_path))
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{r.port}"))
    for name in ("", server.AUTHORIZATION_SERVICE):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name)).status == health_pb2.HealthCheckResponse.SERVING
        )
    r.health.enter_graceful_shutdown()
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    r.stop()


def test_unix_socket_address(tmp_path: Path) -> None:
    sock = tmp_path / "authz.sock"
    cfg = serve_cfg(tmp_path)
    cfg.server.addr = f"unix://{sock}"
    r = server.start(cfg)
    try:
        s = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"unix://{sock}"))
        assert s.Check(check_request(RBAC_ALICE)).status.code == 0
    finally:
        r.stop()


def test_restart_continues_the_ledger_and_verifies(tmp_path: Path) -> None:
    cfg = serve_cfg(tmp_path)
    r = server.start(cfg)
    for _ in range(5):
        stub(r).Check(check_request(RBAC_ALICE))
    r.stop()
    r = server.start(cfg)
    try:
        for _ in range(3):
            stub(r).Check(check_request(RBAC_ALICE))
        assert [e.sequence for e in entries(r)] == list(range(8))
    finally:
        r.stop()
    paths = LedgerPaths(tmp_path / "data")
    s = Store(paths.store, readonly=True)
    signer = note.Signer.from_private_key_string(paths.signing_key.read_text().strip())
    assert verify_store(s, [signer.verifier()]).size == 8
    s.close()


def test_a_tampered_ledger_refuses_to_start_and_names_the_entry(tmp_path: Path) -> None:
    cfg = serve_cfg(tmp_path, "ledger.checkpoint_interval_ms=3600000")
    r = server.start(cfg)
    stub(r).Check(check_request(RBAC_ALICE))
    r.stop()  # final checkpoint at size 1
    r = server.start(cfg)
    for _ in range(3):
        stub(r).Check(check_request(RBAC_ALICE))
    assert r.ledger is not None
    r.ledger.writer._checkpoint_size = 4  # simulate a crash: no final checkpoint for the tail
    r.stop()
    s = Store(LedgerPaths(tmp_path / "data").store)
    with s.env.begin(write=True) as txn:
        txn.put(u64(2), (s.entry(2) or b"") + b"\x00", db=s.entries)
    s.close()
    with pytest.raises(LedgerCorruptError) as exc:
        server.start(cfg)
    assert exc.value.seq == 2


def test_restoring_an_older_copy_of_the_ledger_is_refused(tmp_path: Path) -> None:
    cfg = serve_cfg(tmp_path)
    paths = LedgerPaths(tmp_path / "data")
    r = server.start(cfg)
    stub(r).Check(check_request(RBAC_ALICE))
    r.stop()
    backup = (paths.store / "data.mdb").read_bytes()
    r = server.start(cfg)
    stub(r).Check(check_request(RBAC_ALICE))
    r.stop()
    (paths.store / "data.mdb").write_bytes(backup)
    with pytest.raises(RollbackError, match="older copy"):
        server.start(cfg)


def test_sigterm_drains_commits_signs_a_final_checkpoint_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = serve_process(data, port, "server.drain_seconds=0.2", "ledger.checkpoint_interval_ms=3600000")
    try:
        s = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        for _ in range(10):
            s.Check(check_request(RBAC_ALICE))
    finally:
        assert stop_process(proc) == 0
    store = Store(LedgerPaths(data).store, readonly=True)
    latest = store.checkpoint()
    assert latest is not None
    assert latest[0] == 10
    store.close()


def test_sighup_reloads_the_policy_and_a_broken_one_keeps_the_old_serving(tmp_path: Path) -> None:
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.rego").write_text("package envoy.authz\nimport rego.v1\nallow := true\n")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve_process(tmp_path / "data", port, "policy.embedded.watch=false", policy=pol, log=log)
    try:
        s = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        assert s.Check(check_request(RBAC_ALICE)).status.code == 0
        (pol / "p.rego").write_text("package envoy.authz\nimport rego.v1\nallow := false\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: s.Check(check_request(RBAC_ALICE)).status.code,
            lambda code: code != 0,
            timeout=20,
            interval=0.1,
            message="SIGHUP did not reload the policy",
        )
        (pol / "p.rego").write_text("package envoy.authz\nimport rego.v1\nallow := {{{ broken\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "policy reload failed, the previous policy keeps serving" in log.read_text(),
            timeout=20,
            interval=0.1,
            message="the broken policy was not reported",
        )
        assert s.Check(check_request(RBAC_ALICE)).status.code == 7  # the previous policy still serves
    finally:
        assert stop_process(proc) == 0


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    cfg = serve_cfg(tmp_path)
    r = server.start(cfg)
    try:
        other = serve_cfg(tmp_path)
        other.ledger.data_dir = cfg.ledger.data_dir
        with pytest.raises(LedgerError, match="already served by another authz-ledger process"):
            server.start(other)
    finally:
        r.stop()
    server.start(cfg).stop()  # released on stop


def test_the_serving_process_exempts_its_start_up_heap_from_full_garbage_collections(tmp_path: Path) -> None:
    # serve() in this process, stopped by the SIGTERM its own handler turns into a drain (server.freeze_startup_heap).
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level  # serve() sets up the process's logging
    returned = threading.Event()

    def terminate_once_serving() -> None:
        # Only ever into serve()'s own handler: if serve() failed before installing it, no signal is sent.
        while not returned.wait(0.01):
            if signal.getsignal(signal.SIGTERM) != handlers[signal.SIGTERM]:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    frozen_before = gc.get_freeze_count()
    threading.Thread(target=terminate_once_serving, daemon=True).start()
    try:
        assert server.serve(serve_cfg(tmp_path), out=io.StringIO()) == 0
        assert gc.get_freeze_count() > frozen_before
    finally:
        returned.set()
        gc.unfreeze()
        for s, handler in handlers.items():
            signal.signal(s, handler)
        root.handlers[:] = root_handlers
        root.setLevel(root_level)


def test_the_serving_process_hands_the_interpreter_lock_over_every_half_millisecond(
    running: server.Running,
) -> None:
    # The ledger writer and the sync Checks waiting for it need the lock back quickly (server.SWITCH_INTERVAL_S).
    assert sys.getswitchinterval() == pytest.approx(server.SWITCH_INTERVAL_S)
