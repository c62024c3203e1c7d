"""Prometheus /metrics: scraped over HTTP during load, the counters add up to the requests sent."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartService, write_policy


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_add_up_to_the_checks_sent(authz_service: StartService, tmp_path) -> None:
    rego = 'default allow := false\nallow if input.attributes.request.http.path == "/ok"\n'
    pol = write_policy(tmp_path / "pol", rego)
    running = authz_service(policy=pol)
    assert running.metrics_server is not None
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))

    def check(i: int) -> int:
        req = external_auth_pb2.CheckRequest()
        req.attributes.request.http.path = "/ok" if i % 3 else "/no"
        return int(stub.Check(req).status.code)

    with ThreadPoolExecutor(4) as pool:
        mid = None
        futures = [pool.submit(check, i) for i in range(300)]
        mid = scrape(running.metrics_server.port)  # a scrape during the load works
        codes = [f.result() for f in futures]
    assert mid
    allowed, denied = codes.count(0), codes.count(7)
    m = scrape(running.metrics_server.port)
    assert m[("authz_decisions_total", (("engine", "embedded"), ("outcome", "allow")))] == allowed
    assert m[("authz_decisions_total", (("engine", "embedded"), ("outcome", "deny")))] == denied
    assert m[("grpc_server_handled_total", (("grpc_code", "OK"), ("grpc_method", "Check")))] == 300
    assert m[("grpc_server_handling_seconds_count", (("grpc_method", "Check"),))] == 300
    assert m[("authz_policy_evaluation_seconds_count", (("engine", "embedded"),))] == 300
    assert m[("authz_ledger_tree_size", ())] == 300
    assert m[("authz_ledger_entries_total", ())] == 300
    assert m[("authz_ledger_up", ())] == 1
    assert ("authz_ledger_build_info", (("version", "0.1.0"),)) in m


def test_policy_errors_are_counted_by_class(authz_service: StartService, tmp_path) -> None:
    pol = write_policy(tmp_path / "pol", "allow := 42\n")
    running = authz_service(policy=pol)
    assert running.metrics_server is not None
    stub = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as exc:
            stub.Check(external_auth_pb2.CheckRequest())
        assert exc.value.code() == grpc.StatusCode.UNKNOWN
    m = scrape(running.metrics_server.port)
    assert m[("authz_policy_errors_total", (("engine", "embedded"), ("error", "PolicyResultError")))] == 3
    assert m[("grpc_server_handled_total", (("grpc_code", "UNKNOWN"), ("grpc_method", "Check")))] == 3
    assert m[("authz_decisions_total", (("engine", "embedded"), ("outcome", "error")))] == 3


def test_metrics_listen_on_loopback_by_default() -> None:
    from authz_ledger import config

    assert config.load(environ={}).metrics.addr.startswith("127.0.0.1:")


def test_per_thread_tallies_add_up_across_threads_into_cumulative_buckets() -> None:
    from authz_ledger.metrics import Metrics

    metrics = Metrics()

    def observe(n: int) -> None:
        for _ in range(n):
            metrics.observe_check("OK", 0.0003, "allow", "opa", 0.0002, "")
        metrics.observe_check("UNKNOWN", 3.0, "error", "opa", 0.0, "PolicyTimeoutError")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(observe, [1000] * 8))
    value = metrics.registry.get_sample_value
    assert value("grpc_server_handled_total", {"grpc_method": "Check", "grpc_code": "OK"}) == 8000
    assert value("grpc_server_handled_total", {"grpc_method": "Check", "grpc_code": "UNKNOWN"}) == 8
    latency = {"grpc_method": "Check"}
    assert value("grpc_server_handling_seconds_bucket", {**latency, "le": "0.00025"}) == 0
    assert value("grpc_server_handling_seconds_bucket", {**latency, "le": "0.0005"}) == 8000  # 0.3 ms <= 0.5 ms
    assert value("grpc_server_handling_seconds_bucket", {**latency, "le": "2.5"}) == 8000
    assert value("grpc_server_handling_seconds_bucket", {**latency, "le": "+Inf"}) == 8008
    assert value("grpc_server_handling_seconds_count", latency) == 8008
    assert value("grpc_server_handling_seconds_sum", latency) == pytest.approx(8000 * 0.0003 + 8 * 3.0)
    assert value("authz_decisions_total", {"outcome": "allow", "engine": "opa"}) == 8000
    assert value("authz_policy_evaluation_seconds_count", {"engine": "opa"}) == 8000  # no time: not observed
    assert value("authz_policy_errors_total", {"engine": "opa", "error": "PolicyTimeoutError"}) == 8
