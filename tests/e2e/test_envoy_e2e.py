"""Real HTTP through a real Envoy running envoy/envoy.yaml, authorised by authz-ledger over ext_authz v3.

Every test starts authz-ledger (in-process, or as ``authz-ledger serve`` in a subprocess) and Envoy with the
repository's envoy/envoy.yaml, only its ports rewritten to free ones. Envoy counts as up once its admin
``/ready`` says LIVE and its gRPC health check has marked the authz cluster healthy. What the upstream saw
comes back in the response headers the route adds (``x-upstream-saw-*``); what Envoy got in dynamic metadata
comes back as ``x-decision-id`` on routed responses and in the JSON access log Envoy prints on stdout (the only
place a denied response shows it: a deny is a local reply, which the route's headers never reach). Starting
Envoy is shared with other tests: tests/envoy_harness.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from authz_ledger import config, server
from authz_ledger.record import entry

# The *_pb2 imports above also register every typed_config message envoy.yaml names, so its Any fields resolve.
from tests.conftest import StartService, free_port, serve_process, stop_process, tool, write_policy
from tests.support.envoy_harness import AUTHZ_CLUSTER, ENVOY_YAML, Envoy, Reply, start_envoy

pytestmark = pytest.mark.timeout(60)


@dataclass
class Stack:
    authz: server.Running
    envoy: Envoy

    def entries(self) -> list[Any]:
        assert self.authz.ledger is not None
        return [entry.decode(data, seq) for seq, data in self.authz.ledger.store.iter_entries()]


@pytest.fixture
def stack(tmp_path: Path, authz_service: StartService) -> Iterator[Callable[..., Stack]]:
    """``stack(policy_rego=None)``: authz-ledger in-process (bundled example policy by default) behind Envoy."""
    with ExitStack() as stop:

        def start(policy_rego: str | None = None) -> Stack:
            policy = write_policy(tmp_path / "policy", policy_rego) if policy_rego is not None else None
            authz = authz_service(policy=policy)
            envoy = stop.enter_context(start_envoy(tmp_path / "envoy", authz.port))
            return Stack(authz, envoy)

        yield start


# --- the example policy through Envoy ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    headers: dict[str, str]
    status: int
    body: bytes
    response_headers: dict[str, str]  # expected exactly; "" = absent
    outcome: int
    request_body: bytes | None = None


EXAMPLE_CASES = {
    "alice (admin) may GET anything and the upstream learns her name": Case(
        "GET", "/api/items", {"x-user": "alice"}, 200, b"ok\n",
        {"x-upstream-saw-authz-user": "alice", "www-authenticate": ""}, entry.OUTCOME_ALLOW,
    ),
    "an anonymous GET of the public health route is allowed as anonymous": Case(
        "GET", "/health", {}, 200, b"ok\n", {"x-upstream-saw-authz-user": "anonymous"}, entry.OUTCOME_ALLOW,
    ),
    "a caller's own x-authz-user header is replaced by the policy's": Case(
        "GET", "/people", {"x-user": "bob", "x-authz-user": "alice"}, 200, b"ok\n",
        {"x-upstream-saw-authz-user": "bob"}, entry.OUTCOME_ALLOW,
    ),
    "an unknown user is denied with the policy's 403 and body": Case(
        "GET", "/api/items", {"x-user": "mallory"}, 403, b"unknown user: mallory",
        {"x-upstream-saw-authz-user": "", "x-decision-id": ""}, entry.OUTCOME_DENY,
    ),
    "a reader may not POST: 403 naming the roles": Case(
        "POST", "/people", {"x-user": "bob"}, 403, b"user bob (roles: reader) may not POST /people",
        {"x-upstream-saw-authz-user": ""}, entry.OUTCOME_DENY,
    ),
    "no x-user on a private route: 401 with the policy's www-authenticate header": Case(
        "GET", "/orders", {}, 401, b"authentication required: send an x-user header",
        {"www-authenticate": "x-user", "x-upstream-saw-authz-user": ""}, entry.OUTCOME_DENY,
    ),
    "a malformed JSON body is the plugin's 400 request_parse_error, still recorded": Case(
        "POST", "/people", {"x-user": "carol", "content-type": "application/json"}, 400,
        b"request_parse_error: ", {"x-upstream-saw-authz-user": ""}, entry.OUTCOME_DENY, request_body=b"{bad",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", EXAMPLE_CASES.values(), ids=EXAMPLE_CASES.keys())
def test_the_example_policy_through_envoy(stack: Callable[..., Stack], case: Case) -> None:
    s = stack()
    reply = s.envoy.request(case.method, case.path, case.headers, case.request_body)
    assert reply.status == case.status
    assert reply.body.startswith(case.body) if case.status == 400 else reply.body == case.body
    for name, value in case.response_headers.items():
        assert reply.header(name) == value, name
    [log_line] = s.envoy.access_log(1)
    [e] = s.entries()
    assert (e.method, e.path, e.http_status, e.outcome) == (case.method, case.path, case.status, case.outcome)
    # Envoy's dynamic metadata names the ledger entry, for allowed and denied requests alike.
    assert log_line["decision_id"] == e.decision_id
    if case.status == 200:
        assert reply.header("x-decision-id") == e.decision_id


HEADER_POLICY = """
default allow := false

# /strip: the upstream must not see the caller's credentials.
allow := {"allowed": true, "request_headers_to_remove": ["authorization"], "headers": {"x-authz-user": "someone"}} if {
	input.parsed_path == ["strip"]
}

# /keep: the same answer without the removal (shows the echo header works).
allow := {"allowed": true, "headers": {"x-authz-user": "someone"}} if input.parsed_path == ["keep"]
"""


@pytest.mark.parametrize(
    ("path", "upstream_saw_authorization"),
    [("/keep", "Bearer"), ("/strip", "")],
    ids=["without removal the upstream sees authorization", "request_headers_to_remove hides it from upstream"],
)
def test_policy_header_removal_reaches_envoy(
    stack: Callable[..., Stack], path: str, upstream_saw_authorization: str
) -> None:
    s = stack(HEADER_POLICY)
    reply = s.envoy.request("GET", path, {"authorization": "Bearer secret-token"})
    assert reply.status == 200
    assert reply.header("x-upstream-saw-authz-user") == "someone"
    assert reply.header("x-upstream-saw-authorization-scheme") == upstream_saw_authorization
    assert "secret-token" not in str(reply.headers)  # the demo route never echoes a credential
    [e] = s.entries()
    assert e.outcome == entry.OUTCOME_ALLOW
    assert b"secret-token" not in e.input_json  # digested by the default redaction


def test_a_policy_error_gives_envoys_status_on_error_and_is_recorded(stack: Callable[..., Stack]) -> None:
    s = stack('allow := {"no_allowed_key": true}\n')
    reply = s.envoy.request("GET", "/api/items", {"x-user": "alice"})
    assert reply.status == 503  # envoy.yaml: status_on_error ServiceUnavailable, failure_mode_allow false
    assert reply.header("x-upstream-saw-authz-user") == ""
    [e] = s.entries()
    assert e.outcome == entry.OUTCOME_ERROR and not e.allowed
    assert "PolicyResultError" in e.error and '"allowed" key' in e.error
    assert e.grpc_code == 2  # UNKNOWN, as opa-envoy-plugin fails the RPC
    # A failed RPC carries no dynamic metadata: join the access log and the ledger on Envoy's x-request-id.
    [log_line] = s.envoy.access_log(1)
    assert log_line["status"] == 503 and log_line["decision_id"] is None  # JSON logs: null
    recorded_headers = json.loads(e.input_json)["attributes"]["request"]["http"]["headers"]
    assert recorded_headers["x-request-id"] == log_line["request_id"]


BODY_POLICY = """
default allow := false

allow := {"allowed": true, "headers": {"x-authz-user": sprintf("x=%v", [input.parsed_body.x])}} if {
	input.parsed_body.x == 1
}
"""


@pytest.mark.parametrize(
    ("body", "status", "upstream_saw"),
    [(b'{"x": 1}', 200, "x=1"), (b'{"x": 2}', 403, ""), (b"{}", 403, "")],
    ids=["x is 1: allowed", "x is 2: denied", "no x: denied"],
)
def test_a_json_body_sent_with_with_request_body_is_the_policys_parsed_body(
    stack: Callable[..., Stack], body: bytes, status: int, upstream_saw: str
) -> None:
    s = stack(BODY_POLICY)
    reply = s.envoy.request("POST", "/items", {"content-type": "application/json"}, body)
    assert reply.status == status
    assert reply.header("x-upstream-saw-authz-user") == upstream_saw
    [e] = s.entries()
    assert e.outcome == (entry.OUTCOME_ALLOW if status == 200 else entry.OUTCOME_DENY)


# --- many requests, the server as a subprocess ---------------------------------------------------------------


def test_n_requests_make_exactly_n_entries_named_by_envoys_decision_ids(tmp_path: Path) -> None:
    n, threads = 200, 4
    data_dir, port = tmp_path / "data", free_port()
    proc = serve_process(data_dir, port, "policy.embedded.workers=2", log=tmp_path / "authz.stderr")
    try:
        with start_envoy(tmp_path / "envoy", port) as envoy:
            users = ["alice", "mallory", "bob", ""]  # allow, deny 403, allow, deny 401

            def one(i: int) -> Reply:
                user = users[i % len(users)]
                return envoy.request("GET", f"/people/{i}", {"x-user": user} if user else {})

            with ThreadPoolExecutor(threads) as pool:
                replies = list(pool.map(one, range(n)))
            assert [r.status for r in replies] == [[200, 403, 200, 401][i % 4] for i in range(n)]
            access = envoy.access_log(n)
        log = subprocess.run(
            [sys.executable, "-m", "authz_ledger.cli", "log", "--data-dir", str(data_dir), "--json"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    finally:
        exit_code = stop_process(proc)
    assert exit_code == 0, (tmp_path / "authz.stderr").read_text()[-3000:]
    recorded = [json.loads(line) for line in log.stdout.splitlines()]
    assert [r["index"] for r in recorded] == list(range(n))
    by_id = {r["decision_id"]: r for r in recorded}
    assert len(by_id) == n
    # Every decision Envoy acted on is in the ledger under the id Envoy got, and vice versa.
    assert {a["decision_id"] for a in access} == set(by_id)
    for a in access:
        r = by_id[a["decision_id"]]
        assert (r["path"], r["http_status"]) == (a["path"], a["status"])
    assert {r.header("x-decision-id") for r in replies if r.status == 200} == {
        r["decision_id"] for r in recorded if r["allowed"]
    }


# --- the configuration itself ----------------------------------------------------------------------------------


def test_envoy_validate_mode_accepts_envoy_yaml() -> None:
    proc = subprocess.run(
        [tool("envoy"), "--mode", "validate", "-c", str(ENVOY_YAML), "--disable-hot-restart", "-l", "warning"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"configuration '{ENVOY_YAML}' OK" in proc.stdout + proc.stderr


def test_envoy_yaml_parses_into_envoys_bootstrap_proto_and_matches_the_service() -> None:
    doc = yaml.safe_load(ENVOY_YAML.read_text())
    bootstrap = json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())
    [listener] = bootstrap.static_resources.listeners
    [hcm_filter] = listener.filter_chains[0].filters
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    assert hcm_filter.typed_config.Unpack(hcm)
    [access_log] = hcm.access_log
    stdout_log = stream_pb2.StdoutAccessLog()
    assert access_log.typed_config.Unpack(stdout_log)
    assert "decision_id" in stdout_log.log_format.json_format.fields
    filters = {f.name: f for f in hcm.http_filters}
    assert list(filters) == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    assert filters["envoy.filters.http.router"].typed_config.Unpack(router_pb2.Router())
    authz = ext_authz_pb2.ExtAuthz()
    assert filters["envoy.filters.http.ext_authz"].typed_config.Unpack(authz)
    assert authz.grpc_service.envoy_grpc.cluster_name == AUTHZ_CLUSTER
    assert not authz.failure_mode_allow and authz.status_on_error.code == 503
    # The service must accept the largest Check Envoy will send (body plus headers).
    assert authz.with_request_body.max_request_bytes + 64 * 1024 <= config.Config().server.max_recv_msg_size
    [cluster] = [c for c in bootstrap.static_resources.clusters if c.name == AUTHZ_CLUSTER]
    options = http_protocol_options_pb2.HttpProtocolOptions()
    protocol_options = cluster.typed_extension_protocol_options[options.DESCRIPTOR.full_name]
    assert protocol_options.Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")  # gRPC needs HTTP/2
    [hc] = cluster.health_checks
    assert hc.grpc_health_check.service_name == server.AUTHORIZATION_SERVICE


def test_envoys_access_log_and_replies_carry_no_credential(stack: Callable[..., Stack]) -> None:
    """The shipped envoy.yaml logs the path without its query (tokens travel there) and echoes no credential."""
    s = stack()
    reply = s.envoy.request(
        "GET",
        "/api/items?access_token=query-secret-1&page=2",
        {"x-user": "alice", "authorization": "Bearer header-secret-2"},
    )
    assert reply.status == 200
    [log_line] = s.envoy.access_log(1)
    assert log_line["path"] == "/api/items"
    text = s.envoy.stdout.read_text() + str(reply.headers) + reply.body.decode()
    assert "query-secret-1" not in text and "header-secret-2" not in text
